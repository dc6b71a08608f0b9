// Schemas of the gated-fusion kernels and the registration of their CPU and CUDA implementations
// (the public op and its autograd are in mcmri_fast/ops/gated_fusion.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/gated_fusion.h"
#ifdef MCMRI_FAST_WITH_CUDA
#include "cuda/gated_fusion_binding.h"
#endif

TORCH_LIBRARY_FRAGMENT(mcmri_fast, m) {
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

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("gated_fusion_fwd", &mcmri_fast::cpu::gated_fusion_fwd);
  m.impl("gated_fusion_bwd", &mcmri_fast::cpu::gated_fusion_bwd);
}

#ifdef MCMRI_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("gated_fusion_fwd", &mcmri_fast::cuda::gated_fusion_fwd);
  m.impl("gated_fusion_bwd", &mcmri_fast::cuda::gated_fusion_bwd);
}
#endif
