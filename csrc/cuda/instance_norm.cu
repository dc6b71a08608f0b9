// CUDA kernels of instance norm + LeakyReLU (the contract: csrc/instance_norm.h; csrc/cpu/instance_norm.cpp
// computes the same on the CPU). Memory-bound work over x [B, C, N], two kernels a pass:
//   - a reduction: blocks of kThreads threads over chunks of kChunk elements of one row (b, c), one
//     partial per (row, chunk) reduced in shared memory (a fixed tree: deterministic), which torch then
//     combines in order: the forward's chunk mean and its sum of squared deviations from it (two passes
//     over the chunk held in registers, not E[x²] − μ², which cancels when |μ| ≫ σ; Chan's combination
//     of the chunks), the backward's sums of g' and of grad · y;
//   - the pointwise map with the row's statistics: one thread per element, grid-stride;
//   - the forward works on x − x[row, 0] (the row's first element; the difference is exact when
//     |μ| ≫ σ): the chunks' means are then of the order of σ, not of μ, and rounding them spoils neither
//     the spread between the chunks nor the centring x − μ;
//   - float16 / bfloat16 are computed in float, float64 in double.
// Nothing in it needs sm_80+.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../instance_norm.h"
#include "compute_type.cuh"
#include "cuda_types.h"
#include "chunk_statistics.h"
#include "row_chunks.cuh"

namespace mcmri_fast::cuda {
namespace {

// blockIdx.x: the chunk of the row; rows step by gridDim.y. Per (row, chunk): the mean of x − x[row, 0]
// over the chunk and the sum of the squared deviations from it.
template <typename T>
__global__ void instance_norm_stats_kernel(InstanceNormSizes s, int64_t chunks, const T* __restrict__ x,
                                           compute_t<T>* __restrict__ mean_partials,
                                           compute_t<T>* __restrict__ m2_partials) {
  using Acc = compute_t<T>;
  __shared__ Acc shared_sums[kThreads];
  for (int64_t row = blockIdx.y; row < s.B * s.C; row += gridDim.y) {
    const int64_t base = row * s.N, start = blockIdx.x * kChunk;
    const int64_t count = s.N - start < kChunk ? s.N - start : kChunk;
    const Acc shift = to_compute(x[base]);
    Acc v[kItems];
    Acc sum = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = start + int64_t(k) * kThreads + threadIdx.x;
      v[k] = j < s.N ? to_compute(x[base + j]) - shift : Acc(0);
      sum += v[k];
    }
    const Acc mean = block_sum(sum, shared_sums) / Acc(count);
    Acc m2 = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = start + int64_t(k) * kThreads + threadIdx.x;
      if (j < s.N) {
        const Acc d = v[k] - mean;
        m2 += d * d;
      }
    }
    m2 = block_sum(m2, shared_sums);
    if (threadIdx.x == 0) {
      mean_partials[row * chunks + blockIdx.x] = mean;
      m2_partials[row * chunks + blockIdx.x] = m2;
    }
  }
}

// mean: of x − x[row, 0], per row.
template <typename T>
__global__ void instance_norm_leaky_relu_fwd_kernel(InstanceNormSizes s, int64_t total, const T* __restrict__ x,
                                                    const compute_t<T>* __restrict__ mean,
                                                    const compute_t<T>* __restrict__ rstd, compute_t<T> slope,
                                                    T* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / s.N;
    const auto x_hat = (to_compute(x[i]) - to_compute(x[row * s.N]) - mean[row]) * rstd[row];
    y[i] = from_compute<T>(x_hat > 0 ? x_hat : slope * x_hat);
  }
}

// blockIdx.x: the chunk of the row; rows step by gridDim.y. Per (row, chunk): the sums of g' and of grad · y.
template <typename T>
__global__ void instance_norm_bwd_sums_kernel(InstanceNormSizes s, int64_t chunks, const T* __restrict__ grad,
                                              const T* __restrict__ y, compute_t<T> slope,
                                              compute_t<T>* __restrict__ g_partials,
                                              compute_t<T>* __restrict__ gy_partials) {
  using Acc = compute_t<T>;
  __shared__ Acc shared_sums[kThreads];
  for (int64_t row = blockIdx.y; row < s.B * s.C; row += gridDim.y) {
    const int64_t base = row * s.N, start = blockIdx.x * kChunk;
    Acc g_sum = 0, gy_sum = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = start + int64_t(k) * kThreads + threadIdx.x;
      if (j < s.N) {
        const Acc g = to_compute(grad[base + j]), v = to_compute(y[base + j]);
        g_sum += v > 0 ? g : slope * g;
        gy_sum += g * v;
      }
    }
    g_sum = block_sum(g_sum, shared_sums);
    gy_sum = block_sum(gy_sum, shared_sums);
    if (threadIdx.x == 0) {
      g_partials[row * chunks + blockIdx.x] = g_sum;
      gy_partials[row * chunks + blockIdx.x] = gy_sum;
    }
  }
}

// a, b: per row, the means of g' and of grad · y.
template <typename T>
__global__ void instance_norm_leaky_relu_bwd_kernel(InstanceNormSizes s, int64_t total, const T* __restrict__ grad,
                                                    const T* __restrict__ y, const compute_t<T>* __restrict__ rstd,
                                                    const compute_t<T>* __restrict__ a,
                                                    const compute_t<T>* __restrict__ b, compute_t<T> slope,
                                                    T* __restrict__ grad_x) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / s.N;
    const auto g = to_compute(grad[i]), v = to_compute(y[i]);
    const bool positive = v > 0;
    const auto x_hat = positive ? v : v / slope;
    grad_x[i] = from_compute<T>(rstd[row] * ((positive ? g : slope * g) - a[row] - x_hat * b[row]));
  }
}

// The chunks of a row with the grid of the reduction kernels: (chunks, rows up to kMaxBlocks).
int64_t chunks_of(const char* op, const InstanceNormSizes& s, dim3* grid) {
  const int64_t chunks = (s.N + kChunk - 1) / kChunk;
  TORCH_CHECK(chunks <= 0x7fffffff, op, ": a row of ", s.N, " elements is too long");
  *grid = dim3(unsigned(chunks), unsigned(std::min(s.B * s.C, kMaxBlocks)));
  return chunks;
}

unsigned pointwise_blocks(int64_t total) { return unsigned(std::min((total + kThreads - 1) / kThreads, kMaxBlocks)); }

std::tuple<at::Tensor, at::Tensor> instance_norm_leaky_relu_fwd(const at::Tensor& x, double negative_slope,
                                                                double eps) {
  const auto s = check_instance_norm_args("instance_norm_leaky_relu_fwd", x, negative_slope);
  c10::cuda::CUDAGuard guard(x.device());
  const auto x_c = x.contiguous();
  const auto accumulate = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto acc_options = x.options().dtype(accumulate);
  auto y = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  const int64_t total = y.numel();
  if (total == 0) return {y, at::zeros({s.B, s.C}, acc_options)};
  dim3 grid;
  const int64_t chunks = chunks_of("instance_norm_leaky_relu_fwd", s, &grid);
  // Every slot is written: block (chunk, row) stores its chunk's partials.
  auto mean_partials = at::empty({s.B, s.C, chunks}, acc_options), m2_partials = at::empty_like(mean_partials);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "instance_norm_stats_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    instance_norm_stats_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, chunks, cuda_cptr<scalar_t>(x_c), mean_partials.mutable_data_ptr<acc_t>(),
        m2_partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // Chan's combination of the chunks of a row; mean is the mean of x − x[row, 0].
  const auto statistics = combine_chunk_statistics(mean_partials, m2_partials, s.N, eps);
  const at::Tensor &mean = statistics.first, &rstd = statistics.second;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "instance_norm_leaky_relu_fwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    instance_norm_leaky_relu_fwd_kernel<<<pointwise_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, total, cuda_cptr<scalar_t>(x_c), mean.const_data_ptr<acc_t>(), rstd.const_data_ptr<acc_t>(),
        static_cast<acc_t>(negative_slope), cuda_ptr<scalar_t>(y));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, rstd};
}

at::Tensor instance_norm_leaky_relu_bwd(const at::Tensor& grad, const at::Tensor& y, const at::Tensor& rstd,
                                        double negative_slope) {
  const auto s = check_instance_norm_args("instance_norm_leaky_relu_bwd", y, negative_slope, &rstd, &grad);
  c10::cuda::CUDAGuard guard(y.device());
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernels read rows contiguously.
  const auto grad_c = grad.contiguous(), y_c = y.contiguous(), rstd_c = rstd.contiguous();
  auto grad_x = at::empty_like(y_c, at::MemoryFormat::Contiguous);
  const int64_t total = grad_x.numel();
  if (total == 0) return grad_x;
  dim3 grid;
  const int64_t chunks = chunks_of("instance_norm_leaky_relu_bwd", s, &grid);
  // Every slot is written: block (chunk, row) stores its chunk's partials.
  auto g_partials = at::empty({s.B, s.C, chunks}, rstd.options()), gy_partials = at::empty_like(g_partials);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "instance_norm_bwd_sums_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    instance_norm_bwd_sums_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, chunks, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(y_c), static_cast<acc_t>(negative_slope),
        g_partials.mutable_data_ptr<acc_t>(), gy_partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // The chunks of a row summed in order (a fixed reduction: deterministic): a = mean(g'), b = mean(grad · y).
  const auto a = g_partials.sum(-1).div_(s.N), b = gy_partials.sum(-1).div_(s.N);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "instance_norm_leaky_relu_bwd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    instance_norm_leaky_relu_bwd_kernel<<<pointwise_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, total, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(y_c), rstd_c.const_data_ptr<acc_t>(),
        a.const_data_ptr<acc_t>(), b.const_data_ptr<acc_t>(), static_cast<acc_t>(negative_slope),
        cuda_ptr<scalar_t>(grad_x));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("instance_norm_leaky_relu_fwd", &instance_norm_leaky_relu_fwd);
  m.impl("instance_norm_leaky_relu_bwd", &instance_norm_leaky_relu_bwd);
}

}  // namespace mcmri_fast::cuda
