// Chan's combination of per-chunk statistics (instance_norm.cu, batch_norm.cu): the reductions write, per
// (row, chunk of kChunk elements), the chunk's mean and its sum of squared deviations from it; torch
// combines them in order (a fixed reduction: deterministic). Host code (ATen ops), no kernels.
#pragma once
#include <ATen/ATen.h>

#include <utility>

#include "row_chunks.cuh"

namespace mcmri_fast::cuda {

// (mean, rstd = 1 / sqrt(σ² + eps)) of each row of `count` elements from its chunks' partials [..., chunks]:
// the chunks' counts are all kChunk but the last (counted in int64: exact).
inline std::pair<at::Tensor, at::Tensor> combine_chunk_statistics(const at::Tensor& mean_partials,
                                                                  const at::Tensor& m2_partials, int64_t count,
                                                                  double eps) {
  const int64_t chunks = mean_partials.size(-1);
  const auto counts = at::arange(chunks, mean_partials.options().dtype(at::kLong))
                          .mul_(-kChunk)
                          .add_(count)
                          .clamp_max_(kChunk)
                          .to(mean_partials.scalar_type());
  auto mean = (mean_partials * counts).sum(-1).div_(count);
  const auto m2 = m2_partials.sum(-1).add_((counts * (mean_partials - mean.unsqueeze(-1)).square()).sum(-1));
  return {mean, m2.div(count).add_(eps).rsqrt_()};
}

}  // namespace mcmri_fast::cuda
