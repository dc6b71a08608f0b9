// The backward pass's loops of channel attention (see channel_attention.cpp), compiled twice (the scheme
// of cpu_isa.h): channel_attention.cpp builds them for the baseline and avx2_kernels.cpp for AVX2 + FMA;
// channel_attention.cpp picks one at run time. They are plain `omp simd` loops rather than
// at::vec::Vectorized: in the baseline build Vectorized falls back to its generic array implementation,
// which measured 13x slower than these loops (4.1 vs 0.32 ms for 8 heads x 8 channels x 4096 pixels, one
// thread, both in the AVX2 build).
//
// The including file defines MCMRI_CPU_ISA (the namespace of this build).
#pragma once
#include <algorithm>
#include <cstdint>

#include "channel_attention_kernel_table.h"

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

// out[n] = self_coef * self[n] + sum_r coef[r * coef_stride] * rows[r * N + n] for n in [n0, n1);
// self may be null (no diagonal term). Row by row: the chunk of out stays in L1 while it accumulates.
template <typename scalar_t>
inline void combine_rows(scalar_t* out, scalar_t self_coef, const scalar_t* self, const scalar_t* rows, int64_t n_rows,
                         const scalar_t* coef, int64_t coef_stride, int64_t N, int64_t n0, int64_t n1) {
  scalar_t* __restrict__ o = out;
  if (self != nullptr) {
    const scalar_t* __restrict__ x = self;
#pragma omp simd
    for (int64_t n = n0; n < n1; ++n) o[n] = self_coef * x[n];
  } else {
#pragma omp simd
    for (int64_t n = n0; n < n1; ++n) o[n] = scalar_t(0);
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    const scalar_t c = coef[r * coef_stride];
    const scalar_t* __restrict__ x = rows + r * N;
#pragma omp simd
    for (int64_t n = n0; n < n1; ++n) o[n] += c * x[n];
  }
}

// Tasks [begin, end) of the backward pass: task = (bh, chunk of kChannelAttentionChunk pixels), which
// writes its chunk of every row of gq, gk and gv.
template <typename scalar_t>
void channel_attention_backward_tasks(int64_t begin, int64_t end, int64_t n_chunks, int64_t d_q, int64_t d_k,
                                      int64_t N, const scalar_t* q, const scalar_t* k, const scalar_t* grad_out,
                                      const scalar_t* attn, const scalar_t* mq, const scalar_t* dq, const scalar_t* dk,
                                      scalar_t* gq, scalar_t* gk, scalar_t* gv) {
  for (int64_t task = begin; task < end; ++task) {
    const int64_t bh = task / n_chunks;
    const int64_t n0 = (task % n_chunks) * kChannelAttentionChunk, n1 = std::min(N, n0 + kChannelAttentionChunk);
    const scalar_t* Q = q + bh * d_q * N;
    const scalar_t* K = k + bh * d_k * N;
    const scalar_t* G = grad_out + bh * d_q * N;
    const scalar_t* A = attn + bh * d_q * d_k;
    const scalar_t* M = mq + bh * d_q * d_k;
    for (int64_t i = 0; i < d_q; ++i) {  // gQ_i = dq_i Q_i + sum_j M_ij K_j
      combine_rows(gq + (bh * d_q + i) * N, dq[bh * d_q + i], Q + i * N, K, d_k, M + i * d_k, 1, N, n0, n1);
    }
    for (int64_t j = 0; j < d_k; ++j) {  // gK_j = dk_j K_j + sum_i M_ij Q_i
      combine_rows(gk + (bh * d_k + j) * N, dk[bh * d_k + j], K + j * N, Q, d_q, M + j, d_k, N, n0, n1);
    }
    for (int64_t j = 0; j < d_k; ++j) {  // gV_j = sum_i A_ij gO_i
      combine_rows(gv + (bh * d_k + j) * N, scalar_t(0), static_cast<const scalar_t*>(nullptr), G, d_q, A + j, d_k,
                   N, n0, n1);
    }
  }
}

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA
