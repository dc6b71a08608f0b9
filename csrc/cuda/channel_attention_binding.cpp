// Torch binding of the CUDA channel-attention passes: checks, device guard, stream, outputs, dtype
// dispatch; the kernels and their launchers are in channel_attention.cu (no torch headers there).
// All three passes are CUDA kernels of channel_attention.cu; the Gram partials are summed here (a tiny
// reduction over the splits, in a fixed order).
#include "channel_attention_binding.h"

#include <ATen/AccumulateType.h>

// c10's stream and guard headers (ATen/cuda/CUDAContext.h would pull in cuBLAS / cuSPARSE headers for
// nothing): c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream returns.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../channel_attention_args.h"
#include "channel_attention_launch.h"
#include "cuda_types.h"

namespace mcmri_fast::cuda {

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_gram(const at::Tensor& a, const at::Tensor& b,
                                                                      bool with_norms) {
  check_gram_args(a, b);
  TORCH_CHECK(a.is_cuda(), "channel_attention_gram: expected CUDA tensors, got ", a.device());
  c10::cuda::CUDAGuard guard(a.device());
  const int64_t BH = a.size(0), da = a.size(1), db = b.size(1), N = a.size(2);
  TORCH_CHECK(BH <= 65535, "channel_attention_gram: batch x heads = ", BH, " is too large for the CUDA kernels");
  const int64_t splits = channel_attention_gram_splits(BH, N);
  const auto options = a.options().dtype(accumulate_type_of(a.scalar_type()));
  // Zeroed: with no rows on one side the kernel has nothing to write, and the sums are then 0.
  at::Tensor gram = at::zeros({BH, splits, da, db}, options);
  at::Tensor a_sq = with_norms ? at::zeros({BH, splits, da}, options) : at::empty({0}, options);
  at::Tensor b_sq = with_norms ? at::zeros({BH, splits, db}, options) : at::empty({0}, options);
  if (BH > 0 && da > 0 && db > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "channel_attention_gram_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      C10_CUDA_CHECK(launch_channel_attention_gram(
          cuda_cptr<scalar_t>(a), cuda_cptr<scalar_t>(b), BH, da, db, N, splits, gram.data_ptr<acc_t>(),
          with_norms ? a_sq.data_ptr<acc_t>() : nullptr, with_norms ? b_sq.data_ptr<acc_t>() : nullptr, stream));
    });
  }
  if (!with_norms) return {gram.sum(1), a_sq, b_sq};
  return {gram.sum(1), a_sq.sum(1).sqrt(), b_sq.sum(1).sqrt()};
}

at::Tensor channel_attention_apply(const at::Tensor& attn, const at::Tensor& v) {
  check_apply_args(attn, v);
  TORCH_CHECK(v.is_cuda(), "channel_attention_apply: expected CUDA tensors, got ", v.device());
  c10::cuda::CUDAGuard guard(v.device());
  const int64_t BH = v.size(0), dk = v.size(1), N = v.size(2), dq = attn.size(1);
  at::Tensor out = at::empty({BH, dq, N}, v.options());
  if (out.numel() == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "channel_attention_apply_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    C10_CUDA_CHECK(launch_channel_attention_fwd(attn.const_data_ptr<acc_t>(), cuda_cptr<scalar_t>(v),
                                                cuda_ptr<scalar_t>(out), BH, dq, dk, N, stream));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_backward_pass(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& mq,
    const at::Tensor& dq, const at::Tensor& dk) {
  check_backward_pass_args(q, k, grad_out, attn, mq, dq, dk);
  TORCH_CHECK(q.is_cuda(), "channel_attention_backward_pass: expected CUDA tensors, got ", q.device());
  c10::cuda::CUDAGuard guard(q.device());
  at::Tensor gq = at::empty_like(q), gk = at::empty_like(k), gv = at::empty_like(k);
  const int64_t BH = q.size(0), d_q = q.size(1), d_k = k.size(1), N = q.size(2);
  if (BH == 0 || N == 0 || d_q == 0 || d_k == 0) return {gq, gk, gv};
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "channel_attention_backward_pass_cuda",
                                  [&] {
                                    using acc_t = at::acc_type<scalar_t, true>;
                                    C10_CUDA_CHECK(launch_channel_attention_bwd(
                                        cuda_cptr<scalar_t>(q), cuda_cptr<scalar_t>(k), cuda_cptr<scalar_t>(grad_out),
                                        attn.const_data_ptr<acc_t>(), mq.const_data_ptr<acc_t>(),
                                        dq.const_data_ptr<acc_t>(), dk.const_data_ptr<acc_t>(), cuda_ptr<scalar_t>(gq),
                                        cuda_ptr<scalar_t>(gk), cuda_ptr<scalar_t>(gv), BH, d_q, d_k, N, stream));
                                  });
  return {gq, gk, gv};
}

}  // namespace mcmri_fast::cuda
