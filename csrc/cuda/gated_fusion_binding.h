// CUDA implementations of the gated_fusion_ ops (registered in csrc/gated_fusion_ops.cpp under the CUDA
// dispatch key). Same contract as the CPU ones in csrc/cpu/gated_fusion.h; the kernels are in gated_fusion.cu.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace mcmri_fast::cuda {

at::Tensor gated_fusion_fwd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& gate,
                            std::optional<double> nonfinite);

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_fusion_bwd(const at::Tensor& grad, const at::Tensor& a,
                                                                const at::Tensor& b, const at::Tensor& gate,
                                                                std::optional<double> nonfinite);

}  // namespace mcmri_fast::cuda
