// CUDA kernels of PReLU (the CPU code in csrc/cpu/prelu.cpp is the reference). Memory-bound work over
// x [B, C, N]:
//   - forward: one thread per element, grid-stride;
//   - backward: blocks of kThreads threads over chunks of kChunk elements of one row (b, c); each thread
//     writes the input's gradient of its elements and the block reduces the slope's partial sum of its
//     chunk in shared memory (a fixed tree: deterministic), one partial per (row, chunk);
//   - float16 / bfloat16 are computed in float, float64 in double.
// No torch headers here: the binding is prelu_binding.cpp. Nothing in it needs sm_80+.
#include <cstdint>

#include <cuda_runtime.h>

#include "compute_type.cuh"
#include "prelu_launch.h"

namespace mcmri_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kItems = 8;  // elements per thread and chunk
constexpr int64_t kChunk = int64_t(kThreads) * kItems;
constexpr int64_t kMaxBlocks = 65535;

template <typename T>
__device__ __forceinline__ compute_t<T> slope_of(const PreluShape& s, const T* weight, int64_t row) {
  return to_compute(weight[s.shared ? 0 : row % s.C]);
}

template <typename T>
__global__ void prelu_fwd_kernel(PreluShape s, int64_t total, const T* __restrict__ x, const T* __restrict__ weight,
                                 T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const auto v = to_compute(x[i]);
    out[i] = from_compute<T>(v > 0 ? v : slope_of(s, weight, i / s.N) * v);
  }
}

// blockIdx.x: the chunk of the row; rows step by gridDim.y.
template <typename T>
__global__ void prelu_bwd_kernel(PreluShape s, int64_t chunks, const T* __restrict__ grad, const T* __restrict__ x,
                                 const T* __restrict__ weight, T* __restrict__ grad_x,
                                 compute_t<T>* __restrict__ weight_partials) {
  using Acc = compute_t<T>;
  __shared__ Acc shared_sums[kThreads];
  for (int64_t row = blockIdx.y; row < s.B * s.C; row += gridDim.y) {
    const Acc w = slope_of(s, weight, row);
    const int64_t base = row * s.N, start = blockIdx.x * kChunk;
    Acc sum = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = start + int64_t(k) * kThreads + threadIdx.x;
      if (j < s.N) {
        const Acc g = to_compute(grad[base + j]), v = to_compute(x[base + j]);
        if (grad_x != nullptr) grad_x[base + j] = from_compute<T>(v > 0 ? g : w * g);
        if (!(v > 0)) sum += v * g;
      }
    }
    if (weight_partials == nullptr) continue;
    shared_sums[threadIdx.x] = sum;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) shared_sums[threadIdx.x] += shared_sums[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) weight_partials[row * chunks + blockIdx.x] = shared_sums[0];
    __syncthreads();  // shared_sums is reused by the next row
  }
}

template <typename T>
cudaError_t launch_fwd(const PreluShape& s, const T* x, const T* weight, T* out, cudaStream_t stream) {
  if (s.B < 0 || s.C < 0 || s.N < 0) return cudaErrorInvalidValue;
  const int64_t total = s.B * s.C * s.N;
  if (total == 0) return cudaSuccess;
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  prelu_fwd_kernel<T><<<dim3(unsigned(blocks < kMaxBlocks ? blocks : kMaxBlocks)), kThreads, 0, stream>>>(
      s, total, x, weight, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const PreluShape& s, const T* grad, const T* x, const T* weight, T* grad_x,
                       compute_t<T>* weight_partials, cudaStream_t stream) {
  if (s.B < 0 || s.C < 0 || s.N < 0) return cudaErrorInvalidValue;
  const int64_t rows = s.B * s.C, chunks = prelu_weight_chunks(s.N);
  if (rows * s.N == 0 || (grad_x == nullptr && weight_partials == nullptr)) return cudaSuccess;
  if (chunks > 0x7fffffff) return cudaErrorInvalidValue;
  const dim3 grid(unsigned(chunks), unsigned(rows < kMaxBlocks ? rows : kMaxBlocks));
  prelu_bwd_kernel<T><<<grid, kThreads, 0, stream>>>(s, chunks, grad, x, weight, grad_x, weight_partials);
  return cudaGetLastError();
}

}  // namespace

int64_t prelu_weight_chunks(int64_t N) { return (N + kChunk - 1) / kChunk; }

#define MCMRI_PRELU_DEFINE(T, Acc)                                                                     \
  MCMRI_PRELU_FWD(T) { return launch_fwd<T>(s, x, weight, out, stream); }                              \
  MCMRI_PRELU_BWD(T, Acc) { return launch_bwd<T>(s, grad, x, weight, grad_x, weight_partials, stream); }
MCMRI_PRELU_DEFINE(float, float)
MCMRI_PRELU_DEFINE(double, double)
MCMRI_PRELU_DEFINE(__half, float)
MCMRI_PRELU_DEFINE(__nv_bfloat16, float)
#undef MCMRI_PRELU_DEFINE

}  // namespace mcmri_fast::cuda
