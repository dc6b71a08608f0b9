// The contract of the dense 3×3 convolution's C++ ops (the public op and its autograd:
// mcmri_fast/ops/conv3x3.py): schemas and the checks of its one backend, csrc/cpu/conv3x3.cpp (CUDA
// tensors take the op's reference, torch's convolution). The checks keep the Winograd kernel from
// reading out of bounds whatever it is called with.
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(conv3x3) {
  // out = conv2d(x, weight, bias, padding 1): x [B, C, H, W], weight [Co, C, 3, 3], bias [Co] or None, one
  // dtype, any strides. The output is contiguous.
  m.def("conv3x3_fwd(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // Its backward: (grad_x, grad_weight, grad_bias); each one not asked for is an empty tensor.
  m.def(
      "conv3x3_bwd(Tensor grad, Tensor x, Tensor weight, bool need_x, bool need_weight, bool need_bias) "
      "-> (Tensor, Tensor, Tensor)");
  // Whether conv3x3_fwd takes the Winograd kernel for these arguments (float32, AVX2 or AVX-512, Co a
  // multiple of 8, C ≥ 8, H and W ≥ 8); else it is torch's convolution.
  m.def("conv3x3_winograd_applies(Tensor x, Tensor weight) -> bool");
}

// x [B, C, H, W]; weight [Co, C, 3, 3], bias [Co] (where given) and grad [B, Co, H, W] (the backward's)
// of x's dtype and device.
inline void check_conv3x3_args(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias,
                               const at::Tensor* grad = nullptr) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be [B, C, H, W], got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == 3 && weight.size(3) == 3, op,
              ": weight must be [Co, C, 3, 3] with C = ", x.size(1), ", got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight must have x's dtype ", x.scalar_type(), ", got ",
              weight.scalar_type());
  if (bias != nullptr) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == x.scalar_type(), op,
                ": bias must be [", weight.size(0), "] of x's dtype, got ", bias->sizes(), " ", bias->scalar_type());
  }
  if (grad != nullptr) {
    TORCH_CHECK(grad->dim() == 4 && grad->size(0) == x.size(0) && grad->size(1) == weight.size(0) &&
                    grad->size(2) == x.size(2) && grad->size(3) == x.size(3) && grad->scalar_type() == x.scalar_type(),
                op, ": grad must be [B, Co, H, W] of x's dtype, got ", grad->sizes(), " ", grad->scalar_type());
  }
  for (const at::Tensor* t : {&weight, bias, grad}) {
    if (t != nullptr) {
      TORCH_CHECK(t->device() == x.device(), op, ": all tensors must be on ", x.device(), ", got ", t->device());
    }
  }
}

}  // namespace mcmri_fast
