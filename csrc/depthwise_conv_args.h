// Checks and sizes of the depthwise_conv3x3_ ops, shared by the CPU and the CUDA bindings. The Python API
// validates what users pass and promotes the dtypes; these checks keep a kernel from reading out of
// bounds whatever it is called with.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace mcmri_fast {

// x [B, C, H, W]; weight holds C·9 taps ([C, 1, 3, 3] or [C, 3, 3]).
struct DepthwiseConvSizes {
  int64_t B, C, H, W;
};

inline DepthwiseConvSizes check_depthwise_conv_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                                    const at::Tensor* bias = nullptr,
                                                    const at::Tensor* grad = nullptr) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be [B, C, H, W], got ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": x must be float32, float64, float16 or bfloat16, got ", dtype);
  const int64_t C = x.size(1);
  const bool weight_shape_ok = (weight.dim() == 4 && weight.sizes() == c10::IntArrayRef({C, 1, 3, 3})) ||
                               (weight.dim() == 3 && weight.sizes() == c10::IntArrayRef({C, 3, 3}));
  TORCH_CHECK(weight_shape_ok && weight.scalar_type() == dtype, op, ": weight must be [C, 1, 3, 3] or [C, 3, 3] with C = ",
              C, " of x's dtype ", dtype, ", got ", weight.sizes(), " ", weight.scalar_type());
  if (bias != nullptr) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C && bias->scalar_type() == dtype, op, ": bias must be [", C,
                "] of x's dtype ", dtype, ", got ", bias->sizes(), " ", bias->scalar_type());
  }
  if (grad != nullptr) {
    TORCH_CHECK(grad->sizes() == x.sizes() && grad->scalar_type() == dtype, op, ": grad must match x (", x.sizes(),
                " ", dtype, "), got ", grad->sizes(), " ", grad->scalar_type());
  }
  for (const at::Tensor* t : {&weight, bias, grad}) {
    if (t != nullptr) {
      TORCH_CHECK(t->device() == x.device(), op, ": all tensors must be on ", x.device(), ", got ", t->device());
    }
  }
  return {x.size(0), C, x.size(2), x.size(3)};
}

}  // namespace mcmri_fast
