// The contract of the guided-attention C++ ops (the public op, its tiny per-sample steps and its autograd:
// mcmri_fast/ops/guided_attention.py): schemas and the checks every backend runs
// (csrc/cpu/guided_attention.cpp, csrc/cuda/guided_attention.cu; the Triton twins in
// kernels/guided_attention.py are only called by the op, which has checked its arguments). The checks keep
// a kernel from reading out of bounds whatever it is called with.
//
// f1, f2 [B, C, *spatial] (N = the product of the spatial sizes), float32, float64, float16 or bfloat16 (the
// last two computed in float32), any strides; ca [B, C] and sa [B, N] in the accumulation dtype (float32,
// float64 for float64 maps), contiguous. Indices are int64, the first maximum's.
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(guided_attention) {
  // The channel attention's global max pool: per (b, c) the max over the pixels of f1 and its first index
  // (a NaN wins: the first NaN). Returns (max [B, C] accumulation dtype, index [B, C] int64).
  m.def("guided_attention_spatial_max(Tensor f1) -> (Tensor, Tensor)");
  // The spatial attention's channel max of a = f1 · ca: per (b, p) s = max_c f1[b, c, p] · ca[b, c] and its
  // first channel (a NaN wins: the first NaN). Returns (s [B, N] accumulation dtype, index [B, N] int64).
  m.def("guided_attention_channel_max(Tensor f1, Tensor ca) -> (Tensor, Tensor)");
  // out = f2 · (1 + f1 · ca[b, c] · sa[b, p]), contiguous, f2's dtype.
  m.def("guided_attention_apply(Tensor f1, Tensor f2, Tensor ca, Tensor sa) -> Tensor");
  // The backward's one pass over grad, f1, f2 (grad of f2's shape and dtype, any strides), with gA = grad · f2:
  //   grad_f1 = gA · ca · sa                         (the dense part; the op adds the max pools' terms)
  //   grad_f2 = grad · (1 + f1 · ca · sa)
  //   pixel_sums[b, p] = Σ_c gA · f1 · ca             (the gradient of sa)
  //   channel_sums[b, c] = Σ_p gA · f1 · sa           (the dense part of the gradient of ca)
  // Returns (grad_f1, grad_f2 contiguous in f1's dtype, pixel_sums [B, N], channel_sums [B, C] in the
  // accumulation dtype). The sums are reduced in a fixed order (deterministic).
  m.def(
      "guided_attention_backward_pass(Tensor grad, Tensor f1, Tensor f2, Tensor ca, Tensor sa) -> (Tensor, Tensor, "
      "Tensor, Tensor)");
  // The small steps of the CPU backend (ATen's CPU convolution of one channel takes its slow path; the GPU
  // backends run these as torch ops, csrc/cuda and kernels/ have no twins):
  // sa = sigmoid(conv_k×k(s, weight, zero padding k/2)); s [B, H, W], weight [k, k] (k odd), of one
  // accumulation dtype. Returns sa [B, H, W].
  m.def("guided_attention_spatial_conv(Tensor s, Tensor weight) -> Tensor");
  // Its backward from the gradient of sa (pixel_sums): z = pixel_sums · sa · (1 − sa), grad_s = the
  // convolution of z with the flipped kernel, grad_weight[i, j] = Σ_b,p z[p] · s[p + (i, j) − k/2] (summed
  // in a fixed order). Returns (grad_s [B, H, W], grad_weight [k, k]).
  m.def("guided_attention_spatial_conv_backward(Tensor pixel_sums, Tensor sa, Tensor s, Tensor weight) -> (Tensor, "
        "Tensor)");
  // The channel max's gradient: with c = index[b, p], adds grad_s[b, p] · ca[b, c] to grad_f1[b, c, p] (in
  // place: grad_f1 contiguous, f1's shape and dtype) and returns Σ_{p: index = c} grad_s · f1[b, c, p]
  // [B, C] (the term of grad_ca; summed in a fixed order). grad_s [B, N] accumulation dtype.
  m.def(
      "guided_attention_channel_max_backward(Tensor(a!) grad_f1, Tensor f1, Tensor ca, Tensor index, Tensor grad_s) "
      "-> Tensor");
}

// f1 [B, C, N] once made contiguous.
struct GuidedAttentionSizes {
  int64_t B, C, N;
};

inline at::ScalarType guided_attention_accumulate(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// Checks f1 (and, where given, f2 / grad of its shape and dtype, ca [B, C] and sa [B, N] of the accumulation
// dtype), all on f1's device.
inline GuidedAttentionSizes check_guided_attention_args(const char* op, const at::Tensor& f1,
                                                        const at::Tensor* ca = nullptr, const at::Tensor* sa = nullptr,
                                                        const at::Tensor* f2 = nullptr,
                                                        const at::Tensor* grad = nullptr) {
  TORCH_CHECK(f1.dim() >= 3, op, ": f1 must be [B, C, *spatial], got ", f1.sizes());
  const auto dtype = f1.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": f1 must be float32, float64, float16 or bfloat16, got ", dtype);
  const int64_t B = f1.size(0), C = f1.size(1);
  const int64_t N = B * C == 0 ? 0 : f1.numel() / (B * C);
  TORCH_CHECK(C > 0 && N > 0, op, ": f1 needs at least one channel and one pixel, got ", f1.sizes());
  const auto accumulate = guided_attention_accumulate(dtype);
  for (const auto& [name, t] : {std::pair{"f2", f2}, std::pair{"grad", grad}}) {
    if (t != nullptr) {
      TORCH_CHECK(t->sizes() == f1.sizes() && t->scalar_type() == dtype, op, ": ", name, " must match f1 (",
                  f1.sizes(), " ", dtype, "), got ", t->sizes(), " ", t->scalar_type());
    }
  }
  for (const auto& [name, t, cols] : {std::tuple{"ca", ca, C}, std::tuple{"sa", sa, N}}) {
    if (t != nullptr) {
      TORCH_CHECK(t->dim() == 2 && t->size(0) == B && t->size(1) == cols && t->scalar_type() == accumulate, op, ": ",
                  name, " must be [", B, ", ", cols, "] of ", accumulate, ", got ", t->sizes(), " ", t->scalar_type());
    }
  }
  for (const at::Tensor* t : {ca, sa, f2, grad}) {
    if (t != nullptr) {
      TORCH_CHECK(t->device() == f1.device(), op, ": all tensors must be on ", f1.device(), ", got ", t->device());
    }
  }
  return {B, C, N};
}

}  // namespace mcmri_fast
