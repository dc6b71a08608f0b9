// The AVX2 + FMA vector code of the Winograd kernel (the scheme: conv3x3_winograd.cpp), for CPUs without
// AVX-512. A group is 8 tiles of one tile row, a block NG groups. With 16 registers the products keep
// 4 outputs × 3 vectors of tiles, 12 accumulators, in registers (3 loads and 4 broadcasts per 12
// multiply-adds), and take a pack's 8 outputs in two passes over V[p], which stays in L1. A row's stride-4
// patches are split into lanes by a 4 × 4 transpose within each 128-bit half, after pairing tiles l and
// l + 4 with permute2f128, and shifted by one lane with permute2f128 and alignr; the outputs are
// interleaved back the same way. Groups inside the plane load and store whole vectors; only those
// crossing its right edge take maskload/maskstore (slow stores on AMD CPUs).
#include "conv3x3_winograd.h"

#ifdef MCMRI_CPU_AVX2_BUILD
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace mcmri_fast::cpu::winograd {
namespace {
// A block: NG groups of 8 tiles (TB lanes). Its transformed inputs, 36 × Cin × TB floats (221 KiB at
// Cin = 64), stay in L2 (256 KiB or more on AVX2 CPUs) while every pack of CO outputs is computed from
// them. NG is a multiple of the products' 3 vectors.
constexpr int NG = 3;
constexpr int TB = 8 * NG;
constexpr int CO = int(kOutputsPerPack);

// Bᵀ·d for F(4×4, 3×3) along one axis
inline void bt6(const __m256* d, __m256* o) {
  const __m256 four = _mm256_set1_ps(4.f), five = _mm256_set1_ps(5.f), two = _mm256_set1_ps(2.f);
  o[0] = _mm256_add_ps(_mm256_fnmadd_ps(five, d[2], _mm256_mul_ps(four, d[0])), d[4]);
  __m256 a = _mm256_add_ps(d[3], d[4]), b = _mm256_mul_ps(four, _mm256_add_ps(d[1], d[2]));
  o[1] = _mm256_sub_ps(a, b);
  __m256 c = _mm256_sub_ps(d[4], d[3]), e = _mm256_mul_ps(four, _mm256_sub_ps(d[1], d[2]));
  o[2] = _mm256_add_ps(c, e);
  __m256 f = _mm256_sub_ps(d[4], d[2]), g = _mm256_mul_ps(two, _mm256_sub_ps(d[3], d[1]));
  o[3] = _mm256_add_ps(f, g);
  o[4] = _mm256_sub_ps(f, g);
  o[5] = _mm256_add_ps(_mm256_fnmadd_ps(five, d[3], _mm256_mul_ps(four, d[1])), d[5]);
}

// Aᵀ·m along one axis
inline void at4(const __m256* m, __m256* o) {
  __m256 s12 = _mm256_add_ps(m[1], m[2]), d12 = _mm256_sub_ps(m[1], m[2]);
  __m256 s34 = _mm256_add_ps(m[3], m[4]), d34 = _mm256_sub_ps(m[3], m[4]);
  o[0] = _mm256_add_ps(_mm256_add_ps(m[0], s12), s34);
  o[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.f), d34, d12);
  o[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.f), s34, s12);
  o[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.f), d34, d12), m[5]);
}

// The 4 × 4 transpose within each 128-bit half: half h of t[q] is element q of half h of a, b, c, d.
inline void transpose_halves(__m256 a, __m256 b, __m256 c, __m256 d, __m256* t) {
  const __m256 ab_lo = _mm256_unpacklo_ps(a, b), ab_hi = _mm256_unpackhi_ps(a, b);
  const __m256 cd_lo = _mm256_unpacklo_ps(c, d), cd_hi = _mm256_unpackhi_ps(c, d);
  t[0] = _mm256_shuffle_ps(ab_lo, cd_lo, 0x44);
  t[1] = _mm256_shuffle_ps(ab_lo, cd_lo, 0xEE);
  t[2] = _mm256_shuffle_ps(ab_hi, cd_hi, 0x44);
  t[3] = _mm256_shuffle_ps(ab_hi, cd_hi, 0xEE);
}

// The lanes of 32 floats from x0 + 8k (k = 0..3) inside [0, W): lane i of mask k set where
// x0 + 8k + i < W.
struct RightEdge {
  bool crossed;  // some lane is outside
  __m256i inside[4];
};

inline RightEdge right_edge(int64_t x0, int64_t W) {
  RightEdge edge{x0 + 32 > W, {}};
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int k = 0; k < 4; ++k) {
    const int64_t left = W - x0 - 8 * k;  // lanes left in the row from x0 + 8k, clamped to a lane count
    edge.inside[k] = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(left < 0 ? 0 : left > 8 ? 8 : left)), lane);
  }
  return edge;
}

// V[p · vstride + t] (p = 6i + j) for the 8 tiles of a group in one input plane
void input_transform(const float* plane, int64_t H, int64_t W, Group group, float* V, int64_t vstride) {
  alignas(32) __m256 e[6][6];
  const RightEdge edge = right_edge(group.x0, W);
  for (int r = 0; r < 6; ++r) {
    const int64_t y = 4 * group.ty - 1 + r;
    __m256 d[6];
    if (y < 0 || y >= H) {
      for (int c = 0; c < 6; ++c) d[c] = _mm256_setzero_ps();
    } else {
      const float* row = plane + y * W + group.x0;
      __m256 v[4];  // x0 .. x0 + 31: tile l's columns 4l .. 4l + 3 in half l mod 2 of v[l / 2]
      for (int k = 0; k < 4; ++k) {
        v[k] = edge.crossed ? _mm256_maskload_ps(row + 8 * k, edge.inside[k]) : _mm256_loadu_ps(row + 8 * k);
      }
      // the columns next to the group: x0 − 1 and x0 + 32
      const __m256 left = _mm256_set1_ps(group.x0 > 0 ? row[-1] : 0.f);
      const __m256 right = _mm256_set1_ps(group.x0 + 32 < W ? row[32] : 0.f);
      // halves 0 | 1 hold tiles l | l + 4
      __m256 p[4];  // lane l of p[q]: column 4l + q
      transpose_halves(_mm256_permute2f128_ps(v[0], v[2], 0x20), _mm256_permute2f128_ps(v[0], v[2], 0x31),
                       _mm256_permute2f128_ps(v[1], v[3], 0x20), _mm256_permute2f128_ps(v[1], v[3], 0x31), p);
      // column 4l − 1: phase 3 one lane up, `left` entering; column 4l + 4: phase 0 one lane down, `right`
      // entering (alignr shifts within halves, so the lane crossing them comes from permute2f128)
      d[0] = _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(p[3]),
                                                    _mm256_castps_si256(_mm256_permute2f128_ps(left, p[3], 0x21)), 12));
      d[1] = p[0]; d[2] = p[1]; d[3] = p[2]; d[4] = p[3];
      d[5] = _mm256_castsi256_ps(_mm256_alignr_epi8(_mm256_castps_si256(_mm256_permute2f128_ps(p[0], right, 0x21)),
                                                    _mm256_castps_si256(p[0]), 4));
    }
    bt6(d, e[r]);
  }
  for (int j = 0; j < 6; ++j) {
    __m256 col[6], v[6];
    for (int r = 0; r < 6; ++r) col[r] = e[r][j];
    bt6(col, v);
    for (int i = 0; i < 6; ++i) _mm256_store_ps(V + (i * 6 + j) * vstride, v[i]);
  }
}

// M[(p · CO + r) · TB + t] → the CO output planes, for the 8 tiles of a group
void output_transform(const float* M, float* const* planes, const float* bias, int64_t H, int64_t W, Group group) {
  const RightEdge edge = right_edge(group.x0, W);
  for (int r = 0; r < CO; ++r) {
    __m256 f[6][4];
    for (int a = 0; a < 6; ++a) {
      __m256 m[6];
      for (int b = 0; b < 6; ++b) m[b] = _mm256_load_ps(M + ((a * 6 + b) * CO + r) * TB);
      at4(m, f[a]);
    }
    const __m256 bv = _mm256_set1_ps(bias ? bias[r] : 0.f);
    __m256 y[4][4];  // y[i][j]: output row 4ty + i, column x0 + 4l + j
    for (int j = 0; j < 4; ++j) {
      __m256 col[6], o[4];
      for (int a = 0; a < 6; ++a) col[a] = f[a][j];
      at4(col, o);
      for (int i = 0; i < 4; ++i) y[i][j] = _mm256_add_ps(o[i], bv);
    }
    for (int i = 0; i < 4; ++i) {
      const int64_t row = 4 * group.ty + i;
      if (row >= H) break;
      __m256 t[4];  // t[l]: halves 0 | 1 hold tiles l | l + 4
      transpose_halves(y[i][0], y[i][1], y[i][2], y[i][3], t);
      const __m256 out[4] = {_mm256_permute2f128_ps(t[0], t[1], 0x20), _mm256_permute2f128_ps(t[2], t[3], 0x20),
                             _mm256_permute2f128_ps(t[0], t[1], 0x31), _mm256_permute2f128_ps(t[2], t[3], 0x31)};
      float* dst = planes[r] + row * W + group.x0;
      for (int k = 0; k < 4; ++k) {
        if (edge.crossed) {
          _mm256_maskstore_ps(dst + 8 * k, edge.inside[k], out[k]);
        } else {
          _mm256_storeu_ps(dst + 8 * k, out[k]);
        }
      }
    }
  }
}

// M[p][r][:] = Σ_ci U[p][ci][r] · V[p][ci][:] for one block
void products(const float* V, const float* U, int64_t Cin, float* M) {
  constexpr int outputs = 4, vectors = 3;  // per pass: 12 accumulators
  for (int p = 0; p < 36; ++p) {
    const float* Vp = V + p * Cin * TB;
    const float* Up = U + p * Cin * CO;
    for (int t0 = 0; t0 < TB; t0 += 8 * vectors) {
      for (int r0 = 0; r0 < CO; r0 += outputs) {
        __m256 acc[outputs][vectors];
#pragma GCC unroll 4
        for (int r = 0; r < outputs; ++r)
#pragma GCC unroll 3
          for (int k = 0; k < vectors; ++k) acc[r][k] = _mm256_setzero_ps();
        for (int64_t ci = 0; ci < Cin; ++ci) {
          __m256 v[vectors];
#pragma GCC unroll 3
          for (int k = 0; k < vectors; ++k) v[k] = _mm256_load_ps(Vp + ci * TB + t0 + 8 * k);
#pragma GCC unroll 4
          for (int r = 0; r < outputs; ++r) {
            const __m256 u = _mm256_broadcast_ss(Up + ci * CO + r0 + r);
#pragma GCC unroll 3
            for (int k = 0; k < vectors; ++k) acc[r][k] = _mm256_fmadd_ps(u, v[k], acc[r][k]);
          }
        }
#pragma GCC unroll 4
        for (int r = 0; r < outputs; ++r)
#pragma GCC unroll 3
          for (int k = 0; k < vectors; ++k) _mm256_store_ps(M + (p * CO + r0 + r) * TB + t0 + 8 * k, acc[r][k]);
      }
    }
  }
}

}  // namespace

const Kernel& avx2_kernel() {
  static constexpr Kernel kernel{8, NG, input_transform, products, output_transform};
  return kernel;
}

}  // namespace mcmri_fast::cpu::winograd

#pragma GCC pop_options
#endif  // MCMRI_CPU_AVX2_BUILD
