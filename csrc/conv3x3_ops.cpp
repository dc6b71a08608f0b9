// Schemas of the dense 3×3 convolution's kernels and the registration of their CPU implementation (the
// public op and its autograd are in mcmri_fast/ops/conv3x3.py; CUDA tensors take cuDNN's convolution).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/conv3x3.h"

TORCH_LIBRARY_FRAGMENT(mcmri_fast, m) {
  // out = conv2d(x, weight, bias, padding 1): x [B, C, H, W], weight [Co, C, 3, 3], bias [Co] or None, one
  // dtype, any strides. The output is contiguous.
  m.def("conv3x3_fwd(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // Its backward: (grad_x, grad_weight, grad_bias); each one not asked for is an empty tensor.
  m.def(
      "conv3x3_bwd(Tensor grad, Tensor x, Tensor weight, bool need_x, bool need_weight, bool need_bias) "
      "-> (Tensor, Tensor, Tensor)");
  // Whether conv3x3_fwd takes the Winograd kernel for these arguments (float32, AVX-512, Co a multiple of
  // 8, C ≥ 8, H and W ≥ 8); else it is torch's convolution.
  m.def("conv3x3_winograd_applies(Tensor x, Tensor weight) -> bool");
}

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("conv3x3_fwd", &mcmri_fast::cpu::conv3x3_fwd);
  m.impl("conv3x3_bwd", &mcmri_fast::cpu::conv3x3_bwd);
  m.impl("conv3x3_winograd_applies", &mcmri_fast::cpu::conv3x3_winograd_applies);
}
