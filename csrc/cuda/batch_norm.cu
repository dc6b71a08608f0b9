// CUDA kernels of batch norm + ReLU in training mode (the contract: csrc/batch_norm.h; csrc/cpu/batch_norm.cpp
// computes the same on the CPU). Memory-bound work over x [B, C, N], the M = B·N elements of channel c at
// (b·C + c)·N + p, two kernels a pass:
//   - a reduction: blocks of kThreads threads over chunks of kChunk elements of one channel (row_chunks.cuh),
//     one partial per (channel, chunk) reduced in shared memory (a fixed tree: deterministic), which torch
//     then combines in order: the forward's chunk mean of t − t[0, c, 0] and its sum of squared deviations
//     (Chan's combination of the chunks, as instance_norm.cu), writing t = x + residual on the way; the
//     backward's sums of g' and g' x̂;
//   - the pointwise map with the channel's statistics: one thread per element, grid-stride;
//   - float16 / bfloat16 are computed in float, float64 in double.
// Nothing in it needs sm_80+.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../batch_norm.h"
#include "compute_type.cuh"
#include "cuda_types.h"
#include "chunk_statistics.h"
#include "row_chunks.cuh"

namespace mcmri_fast::cuda {
namespace {

// The offset of element e of channel c in [B, C, N].
__device__ __forceinline__ int64_t channel_offset(const BatchNormSizes& s, int64_t c, int64_t e) {
  const int64_t b = e / s.N;
  return (b * s.C + c) * s.N + (e - b * s.N);
}

// (t − μ) γ rstd + β: the forward's y and the backward's mask from one expression.
template <typename Acc>
__device__ __forceinline__ Acc affine(Acc t, Acc mu, Acc scale, Acc beta) {
  return (t - mu) * scale + beta;
}

// blockIdx.x: the chunk of the channel; channels step by gridDim.y. residual null: t is x.
template <typename T>
__global__ void batch_norm_stats_kernel(BatchNormSizes s, int64_t chunks, const T* __restrict__ x,
                                        const T* __restrict__ residual, T* __restrict__ t_out,
                                        compute_t<T>* __restrict__ mean_partials,
                                        compute_t<T>* __restrict__ m2_partials) {
  using Acc = compute_t<T>;
  __shared__ Acc shared_sums[kThreads];
  const int64_t M = s.B * s.N;
  for (int64_t c = blockIdx.y; c < s.C; c += gridDim.y) {
    const int64_t start = blockIdx.x * kChunk;
    const int64_t count = M - start < kChunk ? M - start : kChunk;
    const int64_t first = c * s.N;
    const Acc shift = residual == nullptr ? to_compute(x[first]) : to_compute(from_compute<T>(to_compute(x[first]) + to_compute(residual[first])));
    Acc v[kItems];
    Acc sum = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t e = start + int64_t(k) * kThreads + threadIdx.x;
      v[k] = 0;
      if (e < M) {
        const int64_t at = channel_offset(s, c, e);
        Acc t = to_compute(x[at]);
        if (residual != nullptr) {
          const T rounded = from_compute<T>(t + to_compute(residual[at]));
          t_out[at] = rounded;
          t = to_compute(rounded);  // the statistics of the rounded t (what the backward reads)
        }
        v[k] = t - shift;
        sum += v[k];
      }
    }
    const Acc mean = block_sum(sum, shared_sums) / Acc(count);
    Acc m2 = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t e = start + int64_t(k) * kThreads + threadIdx.x;
      if (e < M) {
        const Acc d = v[k] - mean;
        m2 += d * d;
      }
    }
    m2 = block_sum(m2, shared_sums);
    if (threadIdx.x == 0) {
      mean_partials[c * chunks + blockIdx.x] = mean;
      m2_partials[c * chunks + blockIdx.x] = m2;
    }
  }
}

template <typename T>
__global__ void batch_norm_relu_fwd_kernel(BatchNormSizes s, int64_t total, const T* __restrict__ t,
                                           const compute_t<T>* __restrict__ mean, const compute_t<T>* __restrict__ rstd,
                                           const compute_t<T>* __restrict__ weight,
                                           const compute_t<T>* __restrict__ bias, T* __restrict__ y) {
  using Acc = compute_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / s.N) % s.C;
    const Acc v = affine(to_compute(t[i]), mean[c], weight[c] * rstd[c], bias[c]);
    y[i] = from_compute<T>(v > 0 ? v : Acc(0));
  }
}

// blockIdx.x: the chunk of the channel; channels step by gridDim.y. Per (channel, chunk): Σ g', Σ g' x̂.
template <typename T>
__global__ void batch_norm_bwd_sums_kernel(BatchNormSizes s, int64_t chunks, const T* __restrict__ grad,
                                           const T* __restrict__ t, const compute_t<T>* __restrict__ mean,
                                           const compute_t<T>* __restrict__ rstd,
                                           const compute_t<T>* __restrict__ weight,
                                           const compute_t<T>* __restrict__ bias, compute_t<T>* __restrict__ a_partials,
                                           compute_t<T>* __restrict__ s_partials) {
  using Acc = compute_t<T>;
  __shared__ Acc shared_sums[kThreads];
  const int64_t M = s.B * s.N;
  for (int64_t c = blockIdx.y; c < s.C; c += gridDim.y) {
    const int64_t start = blockIdx.x * kChunk;
    const Acc mu = mean[c], inv = rstd[c], scale = weight[c] * inv, beta = bias[c];
    Acc a_sum = 0, s_sum = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t e = start + int64_t(k) * kThreads + threadIdx.x;
      if (e < M) {
        const int64_t at = channel_offset(s, c, e);
        const Acc v = to_compute(t[at]);
        const Acc g = affine(v, mu, scale, beta) > 0 ? to_compute(grad[at]) : Acc(0);
        a_sum += g;
        s_sum += g * ((v - mu) * inv);
      }
    }
    a_sum = block_sum(a_sum, shared_sums);
    s_sum = block_sum(s_sum, shared_sums);
    if (threadIdx.x == 0) {
      a_partials[c * chunks + blockIdx.x] = a_sum;
      s_partials[c * chunks + blockIdx.x] = s_sum;
    }
  }
}

// a, sg: per channel the means over M of g' and of g' x̂.
template <typename T>
__global__ void batch_norm_relu_bwd_kernel(BatchNormSizes s, int64_t total, const T* __restrict__ grad,
                                           const T* __restrict__ t, const compute_t<T>* __restrict__ mean,
                                           const compute_t<T>* __restrict__ rstd,
                                           const compute_t<T>* __restrict__ weight,
                                           const compute_t<T>* __restrict__ bias, const compute_t<T>* __restrict__ a,
                                           const compute_t<T>* __restrict__ sg, T* __restrict__ grad_t) {
  using Acc = compute_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / s.N) % s.C;
    const Acc v = to_compute(t[i]), mu = mean[c], inv = rstd[c], scale = weight[c] * inv;
    const Acc g = affine(v, mu, scale, bias[c]) > 0 ? to_compute(grad[i]) : Acc(0);
    grad_t[i] = from_compute<T>(scale * (g - a[c] - (v - mu) * inv * sg[c]));
  }
}

// The chunks of a channel with the grid of the reduction kernels: (chunks, channels up to kMaxBlocks).
int64_t chunks_of(const char* op, const BatchNormSizes& s, dim3* grid) {
  const int64_t chunks = (s.B * s.N + kChunk - 1) / kChunk;
  TORCH_CHECK(chunks <= 0x7fffffff, op, ": a channel of ", s.B * s.N, " elements is too long");
  *grid = dim3(unsigned(chunks), unsigned(std::min(s.C, kMaxBlocks)));
  return chunks;
}

unsigned pointwise_blocks(int64_t total) { return unsigned(std::min((total + kThreads - 1) / kThreads, kMaxBlocks)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_fwd(const at::Tensor& x,
                                                                              const std::optional<at::Tensor>& residual,
                                                                              const at::Tensor& weight,
                                                                              const at::Tensor& bias, double eps) {
  const auto s = check_batch_norm_fwd_args(x, residual, weight, bias);
  c10::cuda::CUDAGuard guard(x.device());
  const auto x_c = x.contiguous();
  const auto r_c = residual.has_value() ? residual->contiguous() : at::Tensor();
  const auto weight_c = weight.contiguous(), bias_c = bias.contiguous();
  auto y = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  auto t = residual.has_value() ? at::empty_like(x_c, at::MemoryFormat::Contiguous) : x.new_empty({0});
  dim3 grid;
  const int64_t chunks = chunks_of("batch_norm_relu_fwd", s, &grid);
  // Every slot is written: block (chunk, channel) stores its chunk's partials.
  auto mean_partials = at::empty({s.C, chunks}, weight.options()), m2_partials = at::empty_like(mean_partials);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_stats_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    batch_norm_stats_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, chunks, cuda_cptr<scalar_t>(x_c), residual.has_value() ? cuda_cptr<scalar_t>(r_c) : nullptr,
        residual.has_value() ? cuda_ptr<scalar_t>(t) : nullptr, mean_partials.mutable_data_ptr<acc_t>(),
        m2_partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Chan's combination of the chunks of a channel; the means are of t − t[0, c, 0], shifted back after.
  const auto statistics = combine_chunk_statistics(mean_partials, m2_partials, s.B * s.N, eps);
  const at::Tensor &shifted = statistics.first, &rstd = statistics.second;
  const auto& source = residual.has_value() ? t : x_c;
  auto mean = shifted.add(source.view({s.B, s.C, s.N}).select(0, 0).select(1, 0).to(weight.scalar_type()));
  const int64_t total = y.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_relu_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    batch_norm_relu_fwd_kernel<<<pointwise_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, total, cuda_cptr<scalar_t>(source), mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
        weight_c.const_data_ptr<acc_t>(), bias_c.const_data_ptr<acc_t>(), cuda_ptr<scalar_t>(y));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, t, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_bwd(const at::Tensor& grad, const at::Tensor& t,
                                                                   const at::Tensor& mean, const at::Tensor& rstd,
                                                                   const at::Tensor& weight, const at::Tensor& bias) {
  const auto s = check_batch_norm_args("batch_norm_relu_bwd", t, {{"grad", &grad}},
                                       {{"mean", &mean}, {"rstd", &rstd}, {"weight", &weight}, {"bias", &bias}});
  c10::cuda::CUDAGuard guard(t.device());
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernels read planes contiguously.
  const auto grad_c = grad.contiguous(), t_c = t.contiguous();
  const auto mean_c = mean.contiguous(), rstd_c = rstd.contiguous(), weight_c = weight.contiguous(),
             bias_c = bias.contiguous();
  auto grad_t = at::empty_like(t_c, at::MemoryFormat::Contiguous);
  dim3 grid;
  const int64_t chunks = chunks_of("batch_norm_relu_bwd", s, &grid);
  // Every slot is written: block (chunk, channel) stores its chunk's partials.
  auto a_partials = at::empty({s.C, chunks}, weight.options()), s_partials = at::empty_like(a_partials);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "batch_norm_bwd_sums_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    batch_norm_bwd_sums_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, chunks, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(t_c), mean_c.const_data_ptr<acc_t>(),
        rstd_c.const_data_ptr<acc_t>(), weight_c.const_data_ptr<acc_t>(), bias_c.const_data_ptr<acc_t>(),
        a_partials.mutable_data_ptr<acc_t>(), s_partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // The chunks of a channel summed in order (a fixed reduction: deterministic).
  auto grad_bias = a_partials.sum(-1), grad_weight = s_partials.sum(-1);
  const int64_t M = s.B * s.N, total = grad_t.numel();
  const auto a = grad_bias.div(M), sg = grad_weight.div(M);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "batch_norm_relu_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    batch_norm_relu_bwd_kernel<<<pointwise_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, total, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(t_c), mean_c.const_data_ptr<acc_t>(),
        rstd_c.const_data_ptr<acc_t>(), weight_c.const_data_ptr<acc_t>(), bias_c.const_data_ptr<acc_t>(),
        a.const_data_ptr<acc_t>(), sg.const_data_ptr<acc_t>(), cuda_ptr<scalar_t>(grad_t));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_t, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("batch_norm_relu_fwd", &batch_norm_relu_fwd);
  m.impl("batch_norm_relu_bwd", &batch_norm_relu_bwd);
}

}  // namespace mcmri_fast::cuda
