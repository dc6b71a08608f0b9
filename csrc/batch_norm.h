// The contract of the batch norm + ReLU C++ ops (the public op and its autograd: mcmri_fast/ops/batch_norm.py):
// schemas and the checks every backend runs (csrc/cpu/batch_norm.cpp, csrc/cuda/batch_norm.cu; the Triton
// twins in kernels/batch_norm.py are only called by the op, which has checked its arguments). The checks keep
// a kernel from reading out of bounds whatever it is called with.
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(batch_norm) {
  // Training-mode batch norm of t = x + residual (residual optional) then ReLU, per channel c of
  // x [B, C, *spatial] over the M = B · N elements of the channel (N the product of the spatial sizes):
  //   μ_c, σ²_c (biased), rstd_c = 1 / sqrt(σ²_c + eps),  y = max(γ_c · (t − μ_c) · rstd_c + β_c, 0).
  // x (and residual, of x's shape and dtype) float32, float64, float16 or bfloat16 (the last two computed
  // in float32), any strides; weight γ and bias β [C] in the accumulation dtype (float32, float64 for
  // float64 x). Returns (y: contiguous, x's dtype; t: contiguous, the sum, empty without a residual;
  // mean μ [C], rstd [C] in the accumulation dtype).
  m.def("batch_norm_relu_fwd(Tensor x, Tensor? residual, Tensor weight, Tensor bias, float eps) -> (Tensor, Tensor, "
        "Tensor, Tensor)");
  // Its backward from t (x without a residual): with x̂ = (t − μ) rstd, g' = grad where γ x̂ + β > 0 (y > 0;
  // computed as the forward does), else 0, and per channel A = Σ g', S = Σ g' · x̂:
  //   grad_t = γ rstd (g' − A / M − x̂ S / M),  grad_weight = S,  grad_bias = A.
  // grad of t's shape and dtype, any strides. Returns (grad_t contiguous, grad_weight [C], grad_bias [C]).
  m.def("batch_norm_relu_bwd(Tensor grad, Tensor t, Tensor mean, Tensor rstd, Tensor weight, Tensor bias) -> (Tensor, "
        "Tensor, Tensor)");
}

// x [B, C, N] once made contiguous.
struct BatchNormSizes {
  int64_t B, C, N;
};

inline at::ScalarType batch_norm_accumulate(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Checks x (and, where given, `same` tensors of its shape and dtype) and the per-channel `vectors` [C] of
// the accumulation dtype, all on x's device.
inline BatchNormSizes check_batch_norm_args(const char* op, const at::Tensor& x,
                                            std::initializer_list<std::pair<const char*, const at::Tensor*>> same,
                                            std::initializer_list<std::pair<const char*, const at::Tensor*>> vectors) {
  TORCH_CHECK(x.dim() >= 2, op, ": x must be [B, C, *spatial], got ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": x must be float32, float64, float16 or bfloat16, got ", dtype);
  const int64_t B = x.size(0), C = x.size(1);
  const int64_t N = B * C == 0 ? 0 : x.numel() / (B * C);
  TORCH_CHECK(C > 0 && B * N > 1, op, ": x needs a channel and more than one value per channel, got ", x.sizes());
  for (const auto& [name, t] : same) {
    TORCH_CHECK(t->sizes() == x.sizes() && t->scalar_type() == dtype, op, ": ", name, " must match x (", x.sizes(), " ",
                dtype, "), got ", t->sizes(), " ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ", t->device());
  }
  const auto accumulate = batch_norm_accumulate(dtype);
  for (const auto& [name, t] : vectors) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == C && t->scalar_type() == accumulate, op, ": ", name, " must be [", C,
                "] of ", accumulate, ", got ", t->sizes(), " ", t->scalar_type());
    TORCH_CHECK(t->device() == x.device(), op, ": ", name, " must be on ", x.device(), ", got ", t->device());
  }
  return {B, C, N};
}

// The forward's checks: x, the optional residual of its shape and dtype, weight and bias [C].
inline BatchNormSizes check_batch_norm_fwd_args(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                                const at::Tensor& weight, const at::Tensor& bias) {
  constexpr const char* op = "batch_norm_relu_fwd";
  return residual.has_value() ? check_batch_norm_args(op, x, {{"residual", &*residual}}, {{"weight", &weight}, {"bias", &bias}})
                              : check_batch_norm_args(op, x, {}, {{"weight", &weight}, {"bias", &bias}});
}

}  // namespace mcmri_fast
