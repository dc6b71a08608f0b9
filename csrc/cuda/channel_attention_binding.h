// CUDA implementations of the channel_attention_* ops (registered in csrc/channel_attention_ops.cpp
// under the CUDA dispatch key). Same contract as the CPU ones in csrc/cpu/channel_attention.h; the
// kernels are in channel_attention.cu.
#pragma once
#include <ATen/ATen.h>

#include <tuple>

namespace mcmri_fast::cuda {

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_gram(const at::Tensor& a, const at::Tensor& b,
                                                                      bool with_norms);

at::Tensor channel_attention_apply(const at::Tensor& attn, const at::Tensor& v);

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_backward_pass(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& mq,
    const at::Tensor& dq, const at::Tensor& dk);

}  // namespace mcmri_fast::cuda
