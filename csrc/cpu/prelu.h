#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace mcmri_fast::cpu {

// out = x > 0 ? x : w·x (see csrc/prelu_ops.cpp). x of any strides (made contiguous); contiguous output.
at::Tensor prelu_fwd(const at::Tensor& x, const at::Tensor& weight);

// (grad_x, weight_rows): grad_x contiguous, weight_rows [B, C] the slope's gradient summed per row in
// float32 (float64 for float64 x); an empty tensor for each one not asked for. grad of any strides.
std::tuple<at::Tensor, at::Tensor> prelu_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                             bool need_x, bool need_weight);

}  // namespace mcmri_fast::cpu
