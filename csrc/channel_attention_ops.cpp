// Schemas of the channel_attention_* ops (the N-sized passes of mcmri_fast/ops/channel_attention.py) and
// the registration of their CPU and CUDA implementations. Every N-sized operand is a contiguous
// [BH, d, N] block of rows: head h of sample b is block b * heads + h, its d channels over N pixels.
// Tiny per-head operands are contiguous, in the accumulation dtype (float64 for float64 inputs, float32
// otherwise); outputs of size N are in the input dtype.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/channel_attention.h"
#ifdef MCMRI_FAST_WITH_CUDA
#include "cuda/channel_attention_binding.h"
#endif

TORCH_LIBRARY_FRAGMENT(mcmri_fast, m) {
  // (gram, a_norm, b_norm) of a [BH, da, N] and b [BH, db, N]: gram = a bᵀ [BH, da, db] and, if
  // with_norms, the L2 norms of the rows of a [BH, da] and b [BH, db] (else empty tensors).
  m.def("channel_attention_gram(Tensor a, Tensor b, bool with_norms) -> (Tensor, Tensor, Tensor)");
  // out = attn v [BH, dq, N] for attn [BH, dq, dk] and v [BH, dk, N].
  m.def("channel_attention_apply(Tensor attn, Tensor v) -> Tensor");
  // The backward's one pass: (gq, gk, gv) with gq = mq k + diag(dq) q, gk = mqᵀ q + diag(dk) k and
  // gv = attnᵀ grad_out, for q [BH, dq, N], k [BH, dk, N], grad_out [BH, dq, N], attn and mq
  // [BH, dq, dk], dq [BH, dq], dk [BH, dk].
  m.def(
      "channel_attention_backward_pass(Tensor q, Tensor k, Tensor grad_out, Tensor attn, Tensor mq, Tensor dq, "
      "Tensor dk) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("channel_attention_gram", &mcmri_fast::cpu::channel_attention_gram);
  m.impl("channel_attention_apply", &mcmri_fast::cpu::channel_attention_apply);
  m.impl("channel_attention_backward_pass", &mcmri_fast::cpu::channel_attention_backward_pass);
}

#ifdef MCMRI_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("channel_attention_gram", &mcmri_fast::cuda::channel_attention_gram);
  m.impl("channel_attention_apply", &mcmri_fast::cuda::channel_attention_apply);
  m.impl("channel_attention_backward_pass", &mcmri_fast::cuda::channel_attention_backward_pass);
}
#endif
