// Row kernels of PReLU (see mcmri_fast/ops/prelu.py), written once on at::vec::Vectorized along the
// spatial dim and compiled twice (the scheme of cpu_isa.h): prelu.cpp builds them for the baseline and
// avx2_kernels.cpp for AVX2 + FMA + F16C; prelu.cpp picks one at run time. float16 / bfloat16 are
// computed in float32.
//
// The including file defines MCMRI_CPU_ISA (the namespace of this build), and for AVX2 also
// CPU_CAPABILITY=AVX2 and CPU_CAPABILITY_AVX2 before any ATen header (see avx2_kernels.cpp).
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

#include "vec_step.h"

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

// The slope of row r = (b, c): weight[0] when one slope is shared, else weight[c].
template <typename scalar_t>
inline at::opmath_type<scalar_t> prelu_slope(const scalar_t* weight, bool shared, int64_t r, int64_t C) {
  return static_cast<at::opmath_type<scalar_t>>(weight[shared ? 0 : r % C]);
}

// Rows [begin, end) of out = x > 0 ? x : w·x (x, out viewed as [B·C, N]).
template <typename scalar_t>
void prelu_forward_rows(int64_t C, int64_t N, const scalar_t* x, const scalar_t* weight, bool shared, scalar_t* out,
                        int64_t begin, int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const Vec zero(0);
  for (int64_t r = begin; r < end; ++r) {
    const Vec w(prelu_slope(weight, shared, r, C));
    const int64_t row = r * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec v[S::kParts];
      S::load(x + row + j, n, v);
      for (int p = 0; p < S::kParts; ++p) v[p] = Vec::blendv(w * v[p], v[p], v[p] > zero);
      S::store(out + row + j, n, v);
    }
  }
}

// Rows [begin, end) of the backward: grad_x = x > 0 ? g : w·g (when grad_x is not null), and per row
// the slope's gradient Σ_j (x > 0 ? 0 : x·g) into weight_rows[r] (when not null), summed in double by
// chunks of vector partials (a row may hold millions of elements).
template <typename scalar_t>
void prelu_backward_rows(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* x, const scalar_t* weight,
                         bool shared, scalar_t* grad_x, at::opmath_type<scalar_t>* weight_rows, int64_t begin,
                         int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t kChunk = 64 * S::kSize;
  const Vec zero(0);
  for (int64_t r = begin; r < end; ++r) {
    const Vec w(prelu_slope(weight, shared, r, C));
    const int64_t row = r * N;
    double total = 0;
    for (int64_t chunk = 0; chunk < N; chunk += kChunk) {
      Vec partial(0);
      for (int64_t j = chunk; j < std::min(N, chunk + kChunk); j += S::kSize) {
        const int64_t n = std::min<int64_t>(S::kSize, N - j);
        Vec vg[S::kParts], vx[S::kParts];
        S::load(grad + row + j, n, vg);
        S::load(x + row + j, n, vx);
        for (int p = 0; p < S::kParts; ++p) {
          const Vec positive = vx[p] > zero;
          // tail lanes load as zero: they add nothing
          if (weight_rows != nullptr) partial = partial + Vec::blendv(vx[p] * vg[p], zero, positive);
          vg[p] = Vec::blendv(w * vg[p], vg[p], positive);
        }
        if (grad_x != nullptr) S::store(grad_x + row + j, n, vg);
      }
      if (weight_rows != nullptr) {
        at::opmath_type<scalar_t> lanes[Vec::size()];
        partial.store(lanes);
        for (int64_t k = 0; k < Vec::size(); ++k) total += lanes[k];
      }
    }
    if (weight_rows != nullptr) weight_rows[r] = static_cast<at::opmath_type<scalar_t>>(total);
  }
}

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA
