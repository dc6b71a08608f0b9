// CUDA implementations of the depthwise_conv3x3_ ops (registered in csrc/depthwise_conv_ops.cpp under the
// CUDA dispatch key). Same contract as the CPU ones in csrc/cpu/depthwise_conv.h; the kernels are in
// depthwise_conv.cu.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace mcmri_fast::cuda {

at::Tensor depthwise_conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& weight, bool need_x,
                                                                     bool need_weight, bool need_bias);

}  // namespace mcmri_fast::cuda
