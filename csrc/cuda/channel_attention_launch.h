// Launchers of the CUDA kernels of channel attention's N-sized passes (csrc/cuda/channel_attention.cu).
// Plain C++ with raw pointers, so that the .cu file compiles without the torch headers; the torch
// binding (channel_attention_binding.cpp) checks the tensors and calls these.
//
// Every N-sized array is a contiguous [BH, d, N] block of rows in the input type T (float, double, __half,
// __nv_bfloat16); tiny per-head arrays are contiguous in the accumulation type Acc (double for double,
// float otherwise). Every launcher returns the launch error (cudaGetLastError), cudaSuccess when there
// is nothing to do, cudaErrorInvalidValue for sizes the kernels cannot index.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace mcmri_fast::cuda {

// The number S of pixel chunks the Gram reduction of [BH, d, N] blocks is split into (its partials'
// second dim): enough blocks to fill a GPU, chunks of at least a few tiles.
int64_t channel_attention_gram_splits(int64_t BH, int64_t N);

// Partials of the Gram a bᵀ and of the squared row norms: block (bh, s) sums pixel chunk s of head bh
// into gram_partial [BH, S, da, db] and, when a_sq_partial and b_sq_partial are not null (both or
// neither), a_sq_partial [BH, S, da] and b_sq_partial [BH, S, db]; the caller sums dim 1 (fixed order:
// deterministic, no atomics). a [BH, da, N], b [BH, db, N]; S from channel_attention_gram_splits.
#define MCMRI_CA_DECLARE_GRAM(T, Acc)                                                                          \
  cudaError_t launch_channel_attention_gram(const T* a, const T* b, int64_t BH, int64_t da, int64_t db,         \
                                            int64_t N, int64_t splits, Acc* gram_partial, Acc* a_sq_partial, \
                                            Acc* b_sq_partial, cudaStream_t stream);
// out [BH, dq, N] = attn [BH, dq, dk] v [BH, dk, N].
#define MCMRI_CA_DECLARE_FWD(T, Acc)                                                                        \
  cudaError_t launch_channel_attention_fwd(const Acc* attn, const T* v, T* out, int64_t BH, int64_t dq, \
                                           int64_t dk, int64_t N, cudaStream_t stream);
// The backward's one pass, for q [BH, dq, N], k [BH, dk, N], grad_out [BH, dq, N]:
//   gq = mq k + diag(coef_q) q,  gk = mqᵀ q + diag(coef_k) k,  gv = attnᵀ grad_out,
// with attn, mq [BH, dq, dk], coef_q [BH, dq], coef_k [BH, dk].
#define MCMRI_CA_DECLARE_BWD(T, Acc)                                                                            \
  cudaError_t launch_channel_attention_bwd(const T* q, const T* k, const T* grad_out, const Acc* attn,          \
                                           const Acc* mq, const Acc* coef_q, const Acc* coef_k, T* gq, T* gk, \
                                           T* gv, int64_t BH, int64_t dq, int64_t dk, int64_t N,             \
                                           cudaStream_t stream);
#define MCMRI_CA_DECLARE(T, Acc) MCMRI_CA_DECLARE_GRAM(T, Acc) MCMRI_CA_DECLARE_FWD(T, Acc) MCMRI_CA_DECLARE_BWD(T, Acc)

MCMRI_CA_DECLARE(float, float)
MCMRI_CA_DECLARE(double, double)
MCMRI_CA_DECLARE(__half, float)
MCMRI_CA_DECLARE(__nv_bfloat16, float)

#undef MCMRI_CA_DECLARE
#undef MCMRI_CA_DECLARE_GRAM
#undef MCMRI_CA_DECLARE_FWD
#undef MCMRI_CA_DECLARE_BWD

}  // namespace mcmri_fast::cuda
