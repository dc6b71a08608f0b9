// Sums over rows of the normalisation kernels (instance_norm.cpp, batch_norm.cpp): several sums of terms of
// several inputs in one pass, each in double by chunks of vector partials. Compiled in each ISA build like
// the kernels that include it (see isa_builds.h).
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cstdint>

#include "vec_step.h"

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

// The kSums sums over the row of terms(one vector of each input, the count of its lanes that hold row
// elements) → std::array<Vec, kSums>, in one pass, each in double by chunks of vector partials (a row may
// hold millions of elements); tail lanes load as zero and the terms must give 0 for them.
template <int kSums, typename scalar_t, int kInputs, typename Terms>
std::array<double, kSums> row_sums(int64_t N, const scalar_t* const (&rows)[kInputs], Terms terms) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t kChunk = 64 * S::kSize;
  std::array<double, kSums> totals{};
  for (int64_t chunk = 0; chunk < N; chunk += kChunk) {
    std::array<Vec, kSums> partials;
    partials.fill(Vec(0));
    for (int64_t j = chunk; j < std::min(N, chunk + kChunk); j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec v[kInputs][S::kParts];
      for (int i = 0; i < kInputs; ++i) S::load(rows[i] + j, n, v[i]);
      for (int p = 0; p < S::kParts; ++p) {
        Vec parts[kInputs];
        for (int i = 0; i < kInputs; ++i) parts[i] = v[i][p];
        const std::array<Vec, kSums> terms_now = terms(parts, n - p * Vec::size());
        for (int k = 0; k < kSums; ++k) partials[k] = partials[k] + terms_now[k];
      }
    }
    for (int k = 0; k < kSums; ++k) {
      at::opmath_type<scalar_t> lanes[Vec::size()];
      partials[k].store(lanes);
      for (int64_t l = 0; l < Vec::size(); ++l) totals[k] += lanes[l];
    }
  }
  return totals;
}

// The lanes of a vector that hold row elements: `valid` of them (any count; ≤ 0 none).
template <typename Vec>
inline Vec valid_lanes(int64_t valid) {
  if (valid >= Vec::size()) return Vec(1);
  typename Vec::value_type lanes[Vec::size()];
  for (int64_t k = 0; k < Vec::size(); ++k) lanes[k] = k < valid ? 1 : 0;
  return Vec::loadu(lanes);
}

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA
