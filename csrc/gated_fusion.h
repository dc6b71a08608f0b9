// The contract of the sigmoid-gated fusion's C++ ops (the public op and its autograd:
// mcmri_fast/ops/gated_fusion.py): schemas and the checks every backend runs (csrc/cpu/gated_fusion.cpp,
// csrc/cuda/gated_fusion.cu; the Triton twins in kernels/gated_fusion.py are only called by the op, which
// has checked its arguments). The checks keep a kernel from reading out of bounds whatever it is called with.
#pragma once
#include <ATen/ATen.h>

#include <vector>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(gated_fusion) {
  // out = a * sigmoid(gate[:, :C]) + b * sigmoid(gate[:, C:]); a, b [B, C, *spatial], gate [B, 2C, *spatial],
  // one dtype (float32, float64, float16, bfloat16; the last two computed in float32), any strides. With
  // nonfinite given, nan and +-inf results are replaced by it. The output is contiguous.
  m.def("gated_fusion_fwd(Tensor a, Tensor b, Tensor gate, float? nonfinite) -> Tensor");
  // Its backward: (grad_a, grad_b, grad_gate), contiguous. With nonfinite given, the gradient is zero where
  // the value before the replacement was not finite (recomputed, not saved).
  m.def(
      "gated_fusion_bwd(Tensor grad, Tensor a, Tensor b, Tensor gate, float? nonfinite) -> "
      "(Tensor, Tensor, Tensor)");
}

// a, b [B, C, N] and gate [B, 2C, N] once made contiguous, with N the product of the spatial sizes.
struct GatedFusionSizes {
  int64_t B, C, N;
};

inline GatedFusionSizes check_gated_fusion_args(const char* op, const at::Tensor& a, const at::Tensor& b,
                                                const at::Tensor& gate, const at::Tensor* grad = nullptr) {
  TORCH_CHECK(a.dim() >= 2, op, ": a must be [B, C, *spatial], got ", a.sizes());
  const auto dtype = a.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": a must be float32, float64, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(b.sizes() == a.sizes() && b.scalar_type() == dtype, op, ": b must match a (", a.sizes(), " ", dtype,
              "), got ", b.sizes(), " ", b.scalar_type());
  std::vector<int64_t> gate_shape = a.sizes().vec();
  gate_shape[1] *= 2;
  TORCH_CHECK(gate.sizes() == c10::IntArrayRef(gate_shape) && gate.scalar_type() == dtype, op,
              ": gate must be [B, 2C, *spatial] = ", c10::IntArrayRef(gate_shape), " of a's dtype, got ", gate.sizes(),
              " ", gate.scalar_type());
  if (grad != nullptr) {
    TORCH_CHECK(grad->sizes() == a.sizes() && grad->scalar_type() == dtype, op, ": grad must match a (", a.sizes(),
                " ", dtype, "), got ", grad->sizes(), " ", grad->scalar_type());
  }
  for (const at::Tensor* t : {&b, &gate, grad}) {
    if (t != nullptr) {
      TORCH_CHECK(t->device() == a.device(), op, ": all tensors must be on ", a.device(), ", got ", t->device());
    }
  }
  const int64_t B = a.size(0), C = a.size(1);
  return {B, C, B * C == 0 ? 0 : a.numel() / (B * C)};
}

}  // namespace mcmri_fast
