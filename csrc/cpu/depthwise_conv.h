#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace mcmri_fast::cpu {

// out = bias + the depthwise 3×3 convolution of x, zero padding 1 (see csrc/depthwise_conv_ops.cpp).
// Inputs of any strides (made contiguous); the output is contiguous.
at::Tensor depthwise_conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);

// (grad_x, grad_weight, grad_bias); those not asked for are empty tensors. grad may have any strides.
std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& weight, bool need_x,
                                                                     bool need_weight, bool need_bias);

}  // namespace mcmri_fast::cpu
