// Schemas of the depthwise 3×3 convolution's kernels and the registration of their CPU and CUDA
// implementations (the public op and its autograd are in mcmri_fast/ops/depthwise_conv.py).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/depthwise_conv.h"
#ifdef MCMRI_FAST_WITH_CUDA
#include "cuda/depthwise_conv_binding.h"
#endif

TORCH_LIBRARY_FRAGMENT(mcmri_fast, m) {
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

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("depthwise_conv3x3_fwd", &mcmri_fast::cpu::depthwise_conv3x3_fwd);
  m.impl("depthwise_conv3x3_bwd", &mcmri_fast::cpu::depthwise_conv3x3_bwd);
}

#ifdef MCMRI_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("depthwise_conv3x3_fwd", &mcmri_fast::cuda::depthwise_conv3x3_fwd);
  m.impl("depthwise_conv3x3_bwd", &mcmri_fast::cuda::depthwise_conv3x3_bwd);
}
#endif
