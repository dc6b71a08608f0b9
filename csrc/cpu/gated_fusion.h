#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace mcmri_fast::cpu {

// out = a·σ(gate[:, :C]) + b·σ(gate[:, C:]), non-finite values replaced by `nonfinite` when given
// (see csrc/gated_fusion_ops.cpp). Inputs of any strides (made contiguous); the output is contiguous.
at::Tensor gated_fusion_fwd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& gate,
                            std::optional<double> nonfinite);

// (grad_a, grad_b, grad_gate), contiguous; grad may have any strides (0 included).
std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_fusion_bwd(const at::Tensor& grad, const at::Tensor& a,
                                                                const at::Tensor& b, const at::Tensor& gate,
                                                                std::optional<double> nonfinite);

}  // namespace mcmri_fast::cpu
