// The AVX-512 vector code of the Winograd kernel (the scheme: conv3x3_winograd.cpp). A group is 16 tiles
// of one tile row, a block three groups (48 tiles); the products keep 8 outputs × 3 vectors of tiles,
// 24 accumulators, in registers. The stride-4 patches are split into lanes by two-source permutes
// (permutex2var) and shifted by one lane with alignr.
#include "conv3x3_winograd.h"

#ifdef MCMRI_CPU_AVX512_BUILD
#include <immintrin.h>

#include <algorithm>

#pragma GCC push_options
#pragma GCC target("avx512f,fma")

namespace mcmri_fast::cpu::winograd {
namespace {
// A block: NG groups of 16 tiles (TB lanes). Its transformed inputs, 36 × Cin × TB floats (442 KiB at
// Cin = 64), stay in L2 while every pack of CO outputs is computed from them.
constexpr int NG = 3;
constexpr int TB = 16 * NG;
constexpr int CO = int(kOutputsPerPack);

// Bᵀ·d for F(4×4, 3×3) along one axis
inline void bt6(const __m512* d, __m512* o) {
  const __m512 four = _mm512_set1_ps(4.f), five = _mm512_set1_ps(5.f), two = _mm512_set1_ps(2.f);
  o[0] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[2], _mm512_mul_ps(four, d[0])), d[4]);
  __m512 a = _mm512_add_ps(d[3], d[4]), b = _mm512_mul_ps(four, _mm512_add_ps(d[1], d[2]));
  o[1] = _mm512_sub_ps(a, b);
  __m512 c = _mm512_sub_ps(d[4], d[3]), e = _mm512_mul_ps(four, _mm512_sub_ps(d[1], d[2]));
  o[2] = _mm512_add_ps(c, e);
  __m512 f = _mm512_sub_ps(d[4], d[2]), g = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
  o[3] = _mm512_add_ps(f, g);
  o[4] = _mm512_sub_ps(f, g);
  o[5] = _mm512_add_ps(_mm512_fnmadd_ps(five, d[3], _mm512_mul_ps(four, d[1])), d[5]);
}

// Aᵀ·m along one axis
inline void at4(const __m512* m, __m512* o) {
  __m512 s12 = _mm512_add_ps(m[1], m[2]), d12 = _mm512_sub_ps(m[1], m[2]);
  __m512 s34 = _mm512_add_ps(m[3], m[4]), d34 = _mm512_sub_ps(m[3], m[4]);
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], s12), s34);
  o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.f), d34, d12);
  o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.f), s34, s12);
  o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.f), d34, d12), m[5]);
}

// the lanes of the 16 floats from column `start` that lie inside [0, W)
inline __mmask16 lanes_inside(int64_t start, int64_t W) {
  if (start >= W || start + 16 <= 0) return 0;
  const int64_t lo = std::max<int64_t>(0, -start), hi = std::min<int64_t>(16, W - start);
  return __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1));
}

// lane l of the result: phase q of the 64 values v0..v3, i.e. element 4l + q
inline __m512 phase(const __m512* v, const __m512i idx) {
  const __m512 lo = _mm512_permutex2var_ps(v[0], idx, v[1]);
  const __m512 hi = _mm512_permutex2var_ps(v[2], idx, v[3]);
  return _mm512_mask_blend_ps(0xFF00, lo, hi);
}

// lanes n .. 15 of lo, then lanes 0 .. n − 1 of hi (valignd). Zero-masking no lane: GCC 12 warns that
// the plain intrinsic's undefined merge source may be used uninitialized.
template <int n>
inline __m512 concat_from(__m512 lo, __m512 hi) {
  return _mm512_castsi512_ps(_mm512_maskz_alignr_epi32(0xFFFF, _mm512_castps_si512(hi), _mm512_castps_si512(lo), n));
}

// V[p · vstride + t] (p = 6i + j) for the 16 tiles of a group in one input plane
void input_transform(const float* plane, int64_t H, int64_t W, Group group, float* V, int64_t vstride) {
  alignas(64) __m512 e[6][6];
  // lane l picks element q + 4·(l mod 8) of its pair of vectors (see phase)
  const __m512i stride4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  const __m512i idx[4] = {stride4, _mm512_add_epi32(stride4, _mm512_set1_epi32(1)),
                          _mm512_add_epi32(stride4, _mm512_set1_epi32(2)), _mm512_add_epi32(stride4, _mm512_set1_epi32(3))};
  // lanes inside [0, W) of the input vectors at x0 − 16, x0, ..., x0 + 64
  __mmask16 inside[6];
  for (int k = 0; k < 6; ++k) inside[k] = lanes_inside(group.x0 - 16 + 16 * k, W);
  for (int r = 0; r < 6; ++r) {
    const int64_t y = 4 * group.ty - 1 + r;
    __m512 d[6];
    if (y < 0 || y >= H) {
      for (int c = 0; c < 6; ++c) d[c] = _mm512_setzero_ps();
    } else {
      const float* row = plane + y * W + group.x0;
      __m512 v[6];
      for (int k = 0; k < 6; ++k) v[k] = _mm512_maskz_loadu_ps(inside[k], row - 16 + 16 * k);
      // v[0] ends at x0 − 1, v[1..4] hold x0 .. x0 + 63, v[5] starts at x0 + 64
      const __m512 p0 = phase(v + 1, idx[0]), p1 = phase(v + 1, idx[1]), p2 = phase(v + 1, idx[2]),
                   p3 = phase(v + 1, idx[3]);
      // element 4l − 1: phase 3 one lane up, v[0]'s last lane entering; element 4l + 4: phase 0 one lane
      // down, v[5]'s first lane entering
      d[0] = concat_from<15>(v[0], p3);
      d[1] = p0; d[2] = p1; d[3] = p2; d[4] = p3;
      d[5] = concat_from<1>(p0, v[5]);
    }
    bt6(d, e[r]);
  }
  for (int j = 0; j < 6; ++j) {
    __m512 col[6], v[6];
    for (int r = 0; r < 6; ++r) col[r] = e[r][j];
    bt6(col, v);
    for (int i = 0; i < 6; ++i) _mm512_store_ps(V + (i * 6 + j) * vstride, v[i]);
  }
}

// interleaves a (even lanes) and b (odd lanes): the lower (hi = false) or upper 8 lanes of each
inline __m512 zip(__m512 a, __m512 b, bool hi) {
  const __m512i lower = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  return _mm512_permutex2var_ps(a, hi ? _mm512_add_epi32(lower, _mm512_set1_epi32(8)) : lower, b);
}

// M[(p · CO + r) · TB + t] → the CO output planes, for the 16 tiles of a group
void output_transform(const float* M, float* const* planes, const float* bias, int64_t H, int64_t W, Group group) {
  // lanes inside [0, W) of the output vectors at x0, ..., x0 + 48
  __mmask16 inside[4];
  for (int k = 0; k < 4; ++k) inside[k] = lanes_inside(group.x0 + 16 * k, W);
  for (int r = 0; r < CO; ++r) {
    __m512 f[6][4];
    for (int a = 0; a < 6; ++a) {
      __m512 m[6];
      for (int b = 0; b < 6; ++b) m[b] = _mm512_load_ps(M + ((a * 6 + b) * CO + r) * TB);
      at4(m, f[a]);
    }
    const __m512 bv = _mm512_set1_ps(bias ? bias[r] : 0.f);
    __m512 y[4][4];  // y[i][j]: output row 4ty + i, column x0 + 4l + j
    for (int j = 0; j < 4; ++j) {
      __m512 col[6], o[4];
      for (int a = 0; a < 6; ++a) col[a] = f[a][j];
      at4(col, o);
      for (int i = 0; i < 4; ++i) y[i][j] = _mm512_add_ps(o[i], bv);
    }
    for (int i = 0; i < 4; ++i) {
      const int64_t row = 4 * group.ty + i;
      if (row >= H) break;
      const __m512 a0 = zip(y[i][0], y[i][2], false), a1 = zip(y[i][0], y[i][2], true);
      const __m512 b0 = zip(y[i][1], y[i][3], false), b1 = zip(y[i][1], y[i][3], true);
      float* dst = planes[r] + row * W + group.x0;
      _mm512_mask_storeu_ps(dst, inside[0], zip(a0, b0, false));
      _mm512_mask_storeu_ps(dst + 16, inside[1], zip(a0, b0, true));
      _mm512_mask_storeu_ps(dst + 32, inside[2], zip(a1, b1, false));
      _mm512_mask_storeu_ps(dst + 48, inside[3], zip(a1, b1, true));
    }
  }
}

// M[p][r][:] = Σ_ci U[p][ci][r] · V[p][ci][:] for one block
void products(const float* V, const float* U, int64_t Cin, float* M) {
  for (int p = 0; p < 36; ++p) {
    const float* Vp = V + p * Cin * TB;
    const float* Up = U + p * Cin * CO;
    __m512 acc[CO][NG];
#pragma GCC unroll 8
    for (int r = 0; r < CO; ++r)
#pragma GCC unroll 3
      for (int k = 0; k < NG; ++k) acc[r][k] = _mm512_setzero_ps();
    for (int64_t ci = 0; ci < Cin; ++ci) {
      __m512 v[NG];
#pragma GCC unroll 3
      for (int k = 0; k < NG; ++k) v[k] = _mm512_load_ps(Vp + ci * TB + k * 16);
#pragma GCC unroll 8
      for (int r = 0; r < CO; ++r) {
        const __m512 u = _mm512_set1_ps(Up[ci * CO + r]);
#pragma GCC unroll 3
        for (int k = 0; k < NG; ++k) acc[r][k] = _mm512_fmadd_ps(u, v[k], acc[r][k]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < CO; ++r)
#pragma GCC unroll 3
      for (int k = 0; k < NG; ++k) _mm512_store_ps(M + (p * CO + r) * TB + k * 16, acc[r][k]);
  }
}

}  // namespace

const Kernel& avx512_kernel() {
  static constexpr Kernel kernel{16, NG, input_transform, products, output_transform};
  return kernel;
}

}  // namespace mcmri_fast::cpu::winograd

#pragma GCC pop_options
#endif  // MCMRI_CPU_AVX512_BUILD
