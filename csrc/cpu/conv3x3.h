// CPU implementation of the dense 3×3 convolution ops (schemas in csrc/conv3x3_ops.cpp).
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace mcmri_fast::cpu {

at::Tensor conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                           const at::Tensor& weight, bool need_x, bool need_weight,
                                                           bool need_bias);
bool conv3x3_winograd_applies(const at::Tensor& x, const at::Tensor& weight);

}  // namespace mcmri_fast::cpu
