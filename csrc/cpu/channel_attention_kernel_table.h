// The table of channel attention's CPU backward kernel (channel_attention_kernels.h) of one instruction
// set. Free of ATen headers: avx2_kernels.cpp, compiled for AVX2, fills one; channel_attention.cpp,
// compiled for the baseline, fills the other and picks between them at run time (see cpu_isa.h).
#pragma once
#include <cstdint>

namespace mcmri_fast::cpu {

// Pixels per task of the backward pass: the chunks of q, k and grad_out it reads (3 d x 1024 values)
// stay in L2 while each is re-read once per output row.
constexpr int64_t kChannelAttentionChunk = 1024;

template <typename scalar_t>
struct ChannelAttentionKernels {
  // Tasks [begin, end) of the backward pass, task = (bh, chunk of kChannelAttentionChunk pixels).
  void (*backward_pass_tasks)(int64_t begin, int64_t end, int64_t n_chunks, int64_t d_q, int64_t d_k, int64_t N,
                              const scalar_t* q, const scalar_t* k, const scalar_t* grad_out, const scalar_t* attn,
                              const scalar_t* mq, const scalar_t* dq, const scalar_t* dk, scalar_t* gq, scalar_t* gk,
                              scalar_t* gv);
};

// The AVX2 build (avx2_kernels.cpp); only call it where use_avx2_kernels().
template <typename scalar_t>
const ChannelAttentionKernels<scalar_t>& channel_attention_kernels_avx2();

}  // namespace mcmri_fast::cpu

// Fills a ChannelAttentionKernels<scalar_t> with the functions of namespace `isa` (in an including .cpp).
#define MCMRI_FAST_CHANNEL_ATTENTION_KERNEL_TABLE(isa, scalar_t) \
  ::mcmri_fast::cpu::ChannelAttentionKernels<scalar_t> { &isa::channel_attention_backward_tasks<scalar_t> }
