// Schemas of the PReLU kernels and the registration of their CPU and CUDA implementations (the public
// op and its autograd are in mcmri_fast/ops/prelu.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/prelu.h"
#ifdef MCMRI_FAST_WITH_CUDA
#include "cuda/prelu_binding.h"
#endif

TORCH_LIBRARY_FRAGMENT(mcmri_fast, m) {
  // out = x > 0 ? x : w * x; x [B, C, *spatial] (float32, float64, float16, bfloat16; the last two computed
  // in float32), any strides; weight [1] (one slope) or [C] of x's dtype. The output is contiguous.
  m.def("prelu_fwd(Tensor x, Tensor weight) -> Tensor");
  // Its backward: (grad_x = x > 0 ? grad : w * grad, weight_rows [B, C] = per row (b, c) the sum of
  // x * grad where x <= 0, in float32 (float64 for float64 x)); an empty tensor for each one not asked for.
  m.def("prelu_bwd(Tensor grad, Tensor x, Tensor weight, bool need_x, bool need_weight) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("prelu_fwd", &mcmri_fast::cpu::prelu_fwd);
  m.impl("prelu_bwd", &mcmri_fast::cpu::prelu_bwd);
}

#ifdef MCMRI_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("prelu_fwd", &mcmri_fast::cuda::prelu_fwd);
  m.impl("prelu_bwd", &mcmri_fast::cuda::prelu_bwd);
}
#endif
