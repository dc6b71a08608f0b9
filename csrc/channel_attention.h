// The contract of channel attention's C++ ops, the N-sized passes of mcmri_fast/ops/channel_attention.py
// (which runs the tiny per-head math around them): schemas and the checks every backend runs
// (csrc/cpu/channel_attention.cpp, csrc/cuda/channel_attention.cu; the Triton twins in
// kernels/channel_attention.py are only called by the op, which has checked its arguments and laid them
// out). The checks keep a kernel from reading out of bounds whatever it is called with.
//
// Every N-sized operand is a contiguous [BH, d, N] block of rows: head h of sample b is block
// b * heads + h, its d channels over N pixels. Tiny per-head operands are contiguous, in the accumulation
// dtype (float64 for float64 inputs, float32 otherwise); outputs of size N are in the input dtype.
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(channel_attention) {
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

// float64 accumulates in float64, everything else (float32, float16, bfloat16) in float32.
inline at::ScalarType accumulate_type_of(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_rows(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.dim() == 3 && t.is_contiguous(), op, ": ", name, " must be a contiguous [BH, d, N] tensor, got ",
              t.sizes(), t.is_contiguous() ? "" : " (non-contiguous)");
  const auto type = t.scalar_type();
  TORCH_CHECK(type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16, op, ": ",
              name, " must be float16, bfloat16, float32 or float64, got ", type);
}

// a [BH, da, N] and b [BH, db, N] of one dtype and device.
inline void check_gram_args(const at::Tensor& a, const at::Tensor& b) {
  check_rows("channel_attention_gram", "a", a);
  check_rows("channel_attention_gram", "b", b);
  TORCH_CHECK(b.scalar_type() == a.scalar_type() && b.device() == a.device(),
              "channel_attention_gram: a and b must share dtype and device");
  TORCH_CHECK(b.size(0) == a.size(0) && b.size(2) == a.size(2),
              "channel_attention_gram: a [BH, da, N] and b [BH, db, N] must agree in BH and N, got ", a.sizes(),
              " and ", b.sizes());
}

// A tiny per-head tensor: contiguous, of the accumulation dtype of `like`, on its device, of `sizes`.
inline void check_tiny(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like,
                       at::IntArrayRef sizes) {
  TORCH_CHECK(t.is_contiguous() && t.sizes() == sizes && t.device() == like.device() &&
                  t.scalar_type() == accumulate_type_of(like.scalar_type()),
              op, ": ", name, " must be a contiguous ", accumulate_type_of(like.scalar_type()), " tensor of shape ",
              sizes, ", got ", t.scalar_type(), " ", t.sizes());
}

// attn [BH, dq, dk] (accumulation dtype) and v [BH, dk, N].
inline void check_apply_args(const at::Tensor& attn, const at::Tensor& v) {
  check_rows("channel_attention_apply", "v", v);
  TORCH_CHECK(attn.dim() == 3, "channel_attention_apply: attn must be [BH, dq, dk], got ", attn.sizes());
  check_tiny("channel_attention_apply", "attn", attn, v, {v.size(0), attn.size(1), v.size(1)});
}

// q [BH, dq, N], k [BH, dk, N], grad_out [BH, dq, N] of one dtype; attn, mq [BH, dq, dk], dq [BH, dq],
// dk [BH, dk] in the accumulation dtype.
inline void check_backward_pass_args(const at::Tensor& q, const at::Tensor& k, const at::Tensor& grad_out,
                                     const at::Tensor& attn, const at::Tensor& mq, const at::Tensor& dq,
                                     const at::Tensor& dk) {
  const char* op = "channel_attention_backward_pass";
  check_rows(op, "q", q);
  check_rows(op, "k", k);
  check_rows(op, "grad_out", grad_out);
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && grad_out.scalar_type() == q.scalar_type() &&
                  k.device() == q.device() && grad_out.device() == q.device(),
              op, ": q, k and grad_out must share dtype and device");
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(2) && grad_out.sizes() == q.sizes(), op,
              ": q [BH, dq, N], k [BH, dk, N] and grad_out [BH, dq, N] must agree, got ", q.sizes(), ", ", k.sizes(),
              " and ", grad_out.sizes());
  const int64_t BH = q.size(0), d_q = q.size(1), d_k = k.size(1);
  check_tiny(op, "attn", attn, q, {BH, d_q, d_k});
  check_tiny(op, "mq", mq, q, {BH, d_q, d_k});
  check_tiny(op, "dq", dq, q, {BH, d_q});
  check_tiny(op, "dk", dk, q, {BH, d_k});
}

}  // namespace mcmri_fast
