// The launch shape of the row reductions (prelu.cu, instance_norm.cu): blocks of kThreads threads over
// chunks of kChunk elements of one row (b, c), blockIdx.x the chunk, rows stepping by gridDim.y (at most
// kMaxBlocks), one partial per (row, chunk) reduced by block_sum, which torch then combines in order.
#pragma once
#include <cstdint>

namespace mcmri_fast::cuda {

constexpr int kThreads = 256;
constexpr int kItems = 8;  // elements per thread and chunk
constexpr int64_t kChunk = int64_t(kThreads) * kItems;
constexpr int64_t kMaxBlocks = 65535;

// The sum of v over the block's kThreads threads, handed to all of them: a fixed tree in shared memory
// (deterministic). Every thread of the block calls it.
template <typename Acc>
__device__ __forceinline__ Acc block_sum(Acc v, Acc* shared_sums) {
  shared_sums[threadIdx.x] = v;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared_sums[threadIdx.x] += shared_sums[threadIdx.x + half];
    __syncthreads();
  }
  const Acc total = shared_sums[0];
  __syncthreads();  // shared_sums is reused by the next call
  return total;
}

}  // namespace mcmri_fast::cuda
