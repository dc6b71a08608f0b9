// The contract of PReLU's C++ ops (the public op and its autograd: mcmri_fast/ops/prelu.py): schemas
// and the checks every backend runs (csrc/cpu/prelu.cpp, csrc/cuda/prelu.cu; the Triton twins in
// kernels/prelu.py are only called by the op, which has checked its arguments). The checks keep a
// kernel from reading out of bounds whatever it is called with.
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(prelu) {
  // out = x > 0 ? x : w * x; x [B, C, *spatial] (float32, float64, float16, bfloat16; the last two computed
  // in float32), any strides; weight [1] (one slope) or [C] of x's dtype. The output is contiguous.
  m.def("prelu_fwd(Tensor x, Tensor weight) -> Tensor");
  // Its backward: (grad_x = x > 0 ? grad : w * grad, weight_rows [B, C] = per row (b, c) the sum of
  // x * grad where x <= 0, in float32 (float64 for float64 x)); an empty tensor for each one not asked for.
  m.def("prelu_bwd(Tensor grad, Tensor x, Tensor weight, bool need_x, bool need_weight) -> (Tensor, Tensor)");
}

// x [B, C, N] once made contiguous, with N the product of the spatial sizes; `shared`: one slope for
// all channels (weight [1]), else one per channel (weight [C]).
struct PreluSizes {
  int64_t B, C, N;
  bool shared;
};

inline PreluSizes check_prelu_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                   const at::Tensor* grad = nullptr) {
  TORCH_CHECK(x.dim() >= 2, op, ": x must be [B, C, *spatial], got ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": x must be float32, float64, float16 or bfloat16, got ", dtype);
  const int64_t B = x.size(0), C = x.size(1);
  TORCH_CHECK(weight.dim() == 1 && (weight.size(0) == 1 || weight.size(0) == C) && weight.scalar_type() == dtype, op,
              ": weight must be [1] or [C] = [", C, "] of x's dtype, got ", weight.sizes(), " ", weight.scalar_type());
  if (grad != nullptr) {
    TORCH_CHECK(grad->sizes() == x.sizes() && grad->scalar_type() == dtype, op, ": grad must match x (", x.sizes(),
                " ", dtype, "), got ", grad->sizes(), " ", grad->scalar_type());
  }
  for (const at::Tensor* t : {&weight, grad}) {
    if (t != nullptr) {
      TORCH_CHECK(t->device() == x.device(), op, ": all tensors must be on ", x.device(), ", got ", t->device());
    }
  }
  return {B, C, B * C == 0 ? 0 : x.numel() / (B * C), weight.size(0) == 1};
}

}  // namespace mcmri_fast
