// CPU passes of channel attention. The GEMM-shaped forward parts (the Gram Q Kᵀ, A V, and gO Vᵀ in the
// backward) are ATen batched GEMMs on the [BH, d, N] blocks (no copies for float32 / float64); the fusion
// here is what is skipped: Q̂ and K̂ are never formed (the norms fold into the tiny Gram), and the
// backward's three outputs gQ, gK, gV come from one pass over pixel chunks (at::parallel_for over
// (head, chunk) tasks) instead of the reference's GEMMs plus the elementwise normalisation backward.
// The backward pass's loops are in channel_attention_kernels.h: the AVX2 build where the CPU has it,
// else the baseline build below (see cpu_isa.h).
// float16 / bfloat16 inputs are computed in float32 (converted copies) and returned in their dtype.
#define MCMRI_CPU_ISA base
#include "channel_attention_kernels.h"

#include "channel_attention.h"

#include <ATen/Parallel.h>

#include "../channel_attention_args.h"
#include "channel_attention_kernel_table.h"
#include "cpu_isa.h"

namespace mcmri_fast::cpu {
namespace {

// The kernels for this CPU: the AVX2 build where use_avx2_kernels(), else the baseline build.
template <typename scalar_t>
const ChannelAttentionKernels<scalar_t>& kernels() {
#ifdef MCMRI_CPU_AVX2_BUILD
  if (use_avx2_kernels()) return channel_attention_kernels_avx2<scalar_t>();
#endif
  static const ChannelAttentionKernels<scalar_t> base_table = MCMRI_FAST_CHANNEL_ATTENTION_KERNEL_TABLE(base, scalar_t);
  return base_table;
}

// Tasks are (bh, chunk of kChannelAttentionChunk pixels) pairs; each writes its chunk of every row of
// gq, gk and gv.
template <typename scalar_t>
void backward_pass(int64_t BH, int64_t d_q, int64_t d_k, int64_t N, const scalar_t* q, const scalar_t* k,
                   const scalar_t* grad_out, const scalar_t* attn, const scalar_t* mq, const scalar_t* dq,
                   const scalar_t* dk, scalar_t* gq, scalar_t* gk, scalar_t* gv) {
  const int64_t n_chunks = (N + kChannelAttentionChunk - 1) / kChannelAttentionChunk;
  const auto& kern = kernels<scalar_t>();
  at::parallel_for(0, BH * n_chunks, 1, [&](int64_t begin, int64_t end) {
    kern.backward_pass_tasks(begin, end, n_chunks, d_q, d_k, N, q, k, grad_out, attn, mq, dq, dk, gq, gk, gv);
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_gram(const at::Tensor& a, const at::Tensor& b,
                                                                      bool with_norms) {
  check_gram_args(a, b);
  TORCH_CHECK(a.device().is_cpu(), "channel_attention_gram: expected CPU tensors, got ", a.device());
  const auto acc = accumulate_type_of(a.scalar_type());
  const at::Tensor af = a.to(acc), bf = b.to(acc);  // the tensors themselves for float32 / float64
  at::Tensor gram = at::bmm(af, bf.transpose(1, 2));
  if (!with_norms) return {gram, at::empty({0}, gram.options()), at::empty({0}, gram.options())};
  return {gram, at::linalg_vector_norm(af, 2, {2}), at::linalg_vector_norm(bf, 2, {2})};
}

at::Tensor channel_attention_apply(const at::Tensor& attn, const at::Tensor& v) {
  check_apply_args(attn, v);
  TORCH_CHECK(v.device().is_cpu(), "channel_attention_apply: expected CPU tensors, got ", v.device());
  return at::bmm(attn, v.to(attn.scalar_type())).to(v.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_backward_pass(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& mq,
    const at::Tensor& dq, const at::Tensor& dk) {
  check_backward_pass_args(q, k, grad_out, attn, mq, dq, dk);
  TORCH_CHECK(q.device().is_cpu(), "channel_attention_backward_pass: expected CPU tensors, got ", q.device());
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

}  // namespace mcmri_fast::cpu
