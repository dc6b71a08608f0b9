// The launch shape of the element-wise CUDA kernels: kThreads threads a block, at most kMaxBlocks blocks,
// each thread striding over the elements (MCMRI_GRID_STRIDE), so any size runs on a capped grid.
#pragma once
#include <algorithm>
#include <cstdint>

namespace mcmri_fast::cuda {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;

inline unsigned blocks_for(int64_t n) { return unsigned(std::min((n + kThreads - 1) / kThreads, kMaxBlocks)); }

}  // namespace mcmri_fast::cuda

#define MCMRI_GRID_STRIDE(e, n) \
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < (n); e += int64_t(gridDim.x) * blockDim.x)
