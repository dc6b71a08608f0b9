// The contract of the depthwise 3×3 convolution's C++ ops (the public op and its autograd:
// mcmri_fast/ops/depthwise_conv.py): schemas and the checks every backend runs (csrc/cpu/depthwise_conv.cpp,
// csrc/cuda/depthwise_conv.cu; the Triton twins in kernels/depthwise_conv.py are only called by the op,
// which has checked its arguments). The checks keep a kernel from reading out of bounds whatever it is
// called with.
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(depthwise_conv3x3) {
  // out[b, c] = bias[c] + Σ_{i,j} weight[c, i, j] x[b, c, y + i − 1, x + j − 1], zero padding 1: x
  // [B, C, H, W], weight [C, 1, 3, 3] or [C, 3, 3], bias [C] or None, one dtype (float32, float64, float16,
  // bfloat16; the last two computed in float32), any strides. The output is contiguous.
  m.def("depthwise_conv3x3_fwd(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // Its backward: (grad_x, grad_weight, grad_bias), contiguous, in x's shape, weight's shape and [C]; each
  // one not asked for (need_x, need_weight, need_bias) is an empty tensor. Deterministic: the tap sums
  // are reduced in a fixed order, without atomics.
  m.def(
      "depthwise_conv3x3_bwd(Tensor grad, Tensor x, Tensor weight, bool need_x, bool need_weight, bool need_bias) "
      "-> (Tensor, Tensor, Tensor)");
}

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
