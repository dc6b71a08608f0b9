// CUDA implementations of the prelu_ ops (registered in csrc/prelu_ops.cpp under the CUDA dispatch key).
// Same contract as the CPU ones in csrc/cpu/prelu.h; the kernels are in prelu.cu.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace mcmri_fast::cuda {

at::Tensor prelu_fwd(const at::Tensor& x, const at::Tensor& weight);

std::tuple<at::Tensor, at::Tensor> prelu_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                             bool need_x, bool need_weight);

}  // namespace mcmri_fast::cuda
