// CPU passes of channel attention (the contract: csrc/channel_attention.h). The GEMM-shaped forward parts
// (the Gram Q Kᵀ, A V, and gO Vᵀ in the backward) are ATen batched GEMMs on the [BH, d, N] blocks (no
// copies for float32 / float64); the fusion here is what is skipped: Q̂ and K̂ are never formed (the norms
// fold into the tiny Gram), and the backward's three outputs gQ, gK, gV come from one pass over pixel
// chunks (at::parallel_for over (head, chunk) tasks) instead of the reference's GEMMs plus the
// elementwise normalisation backward. The backward pass's loops are built for each instruction set
// (isa_builds.h); they are plain `omp simd` loops rather than at::vec::Vectorized: in the baseline build
// Vectorized falls back to its generic array implementation, which measured an order of magnitude
// slower than these loops (BENCHMARKS.md).
// float16 / bfloat16 inputs are computed in float32 (converted copies) and returned in their dtype.
#include "isa_builds.h"

#include <algorithm>
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

}  // namespace mcmri_fast::cpu

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

template <typename scalar_t>
const ChannelAttentionKernels<scalar_t>& channel_attention_kernels() {
  static const ChannelAttentionKernels<scalar_t> table{&channel_attention_backward_tasks<scalar_t>};
  return table;
}
MCMRI_CPU_FLOAT_KERNELS(channel_attention_kernels, ChannelAttentionKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "../channel_attention.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(channel_attention_kernels, ChannelAttentionKernels)

namespace {

// Tasks are (bh, chunk of kChannelAttentionChunk pixels) pairs; each writes its chunk of every row of
// gq, gk and gv.
template <typename scalar_t>
void backward_pass(int64_t BH, int64_t d_q, int64_t d_k, int64_t N, const scalar_t* q, const scalar_t* k,
                   const scalar_t* grad_out, const scalar_t* attn, const scalar_t* mq, const scalar_t* dq,
                   const scalar_t* dk, scalar_t* gq, scalar_t* gk, scalar_t* gv) {
  const int64_t n_chunks = (N + kChannelAttentionChunk - 1) / kChannelAttentionChunk;
  const auto& kern = channel_attention_kernels<scalar_t>();
  at::parallel_for(0, BH * n_chunks, 1, [&](int64_t begin, int64_t end) {
    kern.backward_pass_tasks(begin, end, n_chunks, d_q, d_k, N, q, k, grad_out, attn, mq, dq, dk, gq, gk, gv);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_gram(const at::Tensor& a, const at::Tensor& b,
                                                                      bool with_norms) {
  check_gram_args(a, b);
  const auto acc = accumulate_type_of(a.scalar_type());
  const at::Tensor af = a.to(acc), bf = b.to(acc);  // the tensors themselves for float32 / float64
  at::Tensor gram = at::bmm(af, bf.transpose(1, 2));
  if (!with_norms) return {gram, at::empty({0}, gram.options()), at::empty({0}, gram.options())};
  return {gram, at::linalg_vector_norm(af, 2, {2}), at::linalg_vector_norm(bf, 2, {2})};
}

at::Tensor channel_attention_apply(const at::Tensor& attn, const at::Tensor& v) {
  check_apply_args(attn, v);
  return at::bmm(attn, v.to(attn.scalar_type())).to(v.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_backward_pass(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& mq,
    const at::Tensor& dq, const at::Tensor& dk) {
  check_backward_pass_args(q, k, grad_out, attn, mq, dq, dk);
  const auto acc = accumulate_type_of(q.scalar_type());
  const at::Tensor qf = q.to(acc), kf = k.to(acc), gf = grad_out.to(acc);
  at::Tensor gq = at::empty_like(qf), gk = at::empty_like(kf), gv = at::empty_like(kf);
  AT_DISPATCH_FLOATING_TYPES(acc, "channel_attention_backward_pass_cpu", [&] {
    backward_pass<scalar_t>(q.size(0), q.size(1), k.size(1), q.size(2), qf.const_data_ptr<scalar_t>(),
                            kf.const_data_ptr<scalar_t>(), gf.const_data_ptr<scalar_t>(),
                            attn.const_data_ptr<scalar_t>(), mq.const_data_ptr<scalar_t>(),
                            dq.const_data_ptr<scalar_t>(), dk.const_data_ptr<scalar_t>(), gq.data_ptr<scalar_t>(),
                            gk.data_ptr<scalar_t>(), gv.data_ptr<scalar_t>());
  });
  const auto type = q.scalar_type();
  return {gq.to(type), gk.to(type), gv.to(type)};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("channel_attention_gram", &channel_attention_gram);
  m.impl("channel_attention_apply", &channel_attention_apply);
  m.impl("channel_attention_backward_pass", &channel_attention_backward_pass);
}

}  // namespace mcmri_fast::cpu
#endif
