// Checks and sizes of the gated_fusion_ ops, shared by the CPU and the CUDA bindings. The Python API
// validates what users pass and promotes the dtypes; these checks keep a kernel from reading out of
// bounds whatever it is called with.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace mcmri_fast {

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
