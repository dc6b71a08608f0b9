// The contract of the instance norm + LeakyReLU C++ ops (the public op and its autograd:
// mcmri_fast/ops/instance_norm.py): schemas and the checks every backend runs (csrc/cpu/instance_norm.cpp,
// csrc/cuda/instance_norm.cu; the Triton twins in kernels/instance_norm.py are only called by the op,
// which has checked its arguments). The checks keep a kernel from reading out of bounds whatever it is
// called with.
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(instance_norm) {
  // Per row r = (b, c) of x [B, C, *spatial] (N = the product of the spatial sizes, N >= 1): the mean μ_r
  // and the biased variance σ²_r over the row, rstd_r = 1 / sqrt(σ²_r + eps), and
  //   y = leaky_relu((x − μ_r) · rstd_r, negative_slope)   (x̂ > 0 ? x̂ : negative_slope · x̂).
  // x float32, float64, float16 or bfloat16 (the last two computed in float32), any strides. Returns
  // (y: contiguous, x's dtype; rstd [B, C]: float32, float64 for float64 x).
  m.def("instance_norm_leaky_relu_fwd(Tensor x, float negative_slope, float eps) -> (Tensor, Tensor)");
  // Its backward from the forward's output (negative_slope > 0, so x̂ = y > 0 ? y : y / negative_slope):
  // with g' = y > 0 ? grad : negative_slope · grad and, per row, a_r = mean(g'), b_r = mean(grad · y)
  // (= mean(g' · x̂)),
  //   grad_x = rstd_r · (g' − a_r − x̂ · b_r);
  // grad of y's shape and dtype, any strides; rstd as the forward returned it. grad_x contiguous.
  m.def("instance_norm_leaky_relu_bwd(Tensor grad, Tensor y, Tensor rstd, float negative_slope) -> Tensor");
}

// x [B, C, N] once made contiguous, N the product of the spatial sizes.
struct InstanceNormSizes {
  int64_t B, C, N;
};

inline InstanceNormSizes check_instance_norm_args(const char* op, const at::Tensor& x, double negative_slope,
                                                  const at::Tensor* rstd = nullptr, const at::Tensor* grad = nullptr) {
  TORCH_CHECK(x.dim() >= 3, op, ": x must be [B, C, *spatial], got ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": x must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(negative_slope > 0 && negative_slope < INFINITY, op, ": negative_slope must be positive and finite, got ",
              negative_slope);
  const int64_t B = x.size(0), C = x.size(1);
  if (rstd != nullptr) {
    const auto accumulate = dtype == at::kDouble ? at::kDouble : at::kFloat;
    TORCH_CHECK(rstd->dim() == 2 && rstd->size(0) == B && rstd->size(1) == C && rstd->scalar_type() == accumulate, op,
                ": rstd must be [B, C] = [", B, ", ", C, "] of ", accumulate, ", got ", rstd->sizes(), " ",
                rstd->scalar_type());
  }
  if (grad != nullptr) {
    TORCH_CHECK(grad->sizes() == x.sizes() && grad->scalar_type() == dtype, op, ": grad must match y (", x.sizes(),
                " ", dtype, "), got ", grad->sizes(), " ", grad->scalar_type());
  }
  for (const at::Tensor* t : {rstd, grad}) {
    if (t != nullptr) {
      TORCH_CHECK(t->device() == x.device(), op, ": all tensors must be on ", x.device(), ", got ", t->device());
    }
  }
  return {B, C, B * C == 0 ? 0 : x.numel() / (B * C)};
}

}  // namespace mcmri_fast
