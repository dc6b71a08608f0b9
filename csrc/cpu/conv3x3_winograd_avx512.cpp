// Dense 3×3 convolution (zero padding 1, stride 1) by Winograd's minimal filtering F(4×4, 3×3) [Lavin &
// Gray 2016], in AVX-512. Each 4×4 output tile is Aᵀ[Σ_i U_i ⊙ (Bᵀ d_i B)]A, d_i the 6×6 input patch
// of channel i and U_i = G w_i Gᵀ the transformed 3×3 kernel: 36 products per tile and channel pair for
// 16 outputs, where the direct convolution takes 144, so 4× fewer multiply-adds, the rest being
// transforms. Per block of 48 tiles (three groups of 16 consecutive tiles of one tile row, a vector lane
// per tile): transform every input channel into V[36][Cin][48]; then for each pack of 8 outputs, 36
// matrix products [8 × Cin]·[Cin × 48] (24 accumulators in registers) and the output transform. The
// stride-4 patches are split into vector lanes with permutes and the outputs interleaved back the same
// way: gathers and scatters, tried first, ran at ~60 cycles each on this CPU (AMD Zen 5).
// Rounding: the transforms' coefficients (up to 8) make it ~20× the direct convolution's error, ~1e-5
// of the output's largest value at Cin = 64 (tests/test_conv3x3.py).
#include "conv3x3_winograd.h"

#ifdef MCMRI_CPU_AVX512_BUILD
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>

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

struct Geometry {
  int64_t H, W, th, tw, ngx;  // th × tw tiles of 4×4; ngx: groups of 16 tiles per tile row
};

Geometry geometry(const Problem& p) {
  const int64_t tw = (p.W + 3) / 4;
  return {p.H, p.W, (p.H + 3) / 4, tw, (tw + 15) / 16};
}

int64_t blocks_per_sample(const Geometry& g) { return (g.th * g.ngx + NG - 1) / NG; }

// 16 tiles of one tile row: tx0 .. tx0 + 15; their 6×6 input patches span columns 4·tx0 − 1 .. 4·tx0 + 64
struct Group {
  int64_t ty = -1, x0 = 0;        // ty < 0: an empty group (past the last one)
  __mmask16 in[6] = {};           // lanes inside [0, W) of the input vectors at x0 − 16, x0, ..., x0 + 64
  __mmask16 out[4] = {};          // lanes inside [0, W) of the output vectors at x0, ..., x0 + 48
};

inline __mmask16 lanes_inside(int64_t start, int64_t W) {
  if (start >= W || start + 16 <= 0) return 0;
  const int64_t lo = std::max<int64_t>(0, -start), hi = std::min<int64_t>(16, W - start);
  return __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1));
}

inline Group make_group(const Geometry& g, int64_t index) {
  Group gr;
  if (index >= g.th * g.ngx) return gr;
  gr.ty = index / g.ngx;
  gr.x0 = 64 * (index % g.ngx);
  for (int v = 0; v < 6; ++v) gr.in[v] = lanes_inside(gr.x0 - 16 + 16 * v, g.W);
  for (int v = 0; v < 4; ++v) gr.out[v] = lanes_inside(gr.x0 + 16 * v, g.W);
  return gr;
}

// lane l of the result: phase q of the 64 values v0..v3, i.e. element 4l + q
inline __m512 phase(const __m512* v, const __m512i idx) {
  const __m512 lo = _mm512_permutex2var_ps(v[0], idx, v[1]);
  const __m512 hi = _mm512_permutex2var_ps(v[2], idx, v[3]);
  return _mm512_mask_blend_ps(0xFF00, lo, hi);
}

// V[p][t] (p = 6i + j, stride vstride_p) for the 16 tiles of a group in one input plane
inline void input_transform(const float* plane, const Geometry& g, const Group& gr, float* V, int64_t vstride_p) {
  alignas(64) __m512 e[6][6];
  if (gr.ty < 0) {
    for (int p = 0; p < 36; ++p) _mm512_store_ps(V + p * vstride_p, _mm512_setzero_ps());
    return;
  }
  // lane l picks element q + 4·(l mod 8) of its pair of vectors (see phase)
  const __m512i stride4 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 4, 8, 12, 16, 20, 24, 28);
  const __m512i idx[4] = {stride4, _mm512_add_epi32(stride4, _mm512_set1_epi32(1)),
                          _mm512_add_epi32(stride4, _mm512_set1_epi32(2)), _mm512_add_epi32(stride4, _mm512_set1_epi32(3))};
  for (int r = 0; r < 6; ++r) {
    const int64_t y = 4 * gr.ty - 1 + r;
    __m512 d[6];
    if (y < 0 || y >= g.H) {
      for (int c = 0; c < 6; ++c) d[c] = _mm512_setzero_ps();
    } else {
      const float* row = plane + y * g.W + gr.x0;
      __m512 v[6];
      for (int k = 0; k < 6; ++k) v[k] = _mm512_maskz_loadu_ps(gr.in[k], row - 16 + 16 * k);
      // v[0] ends at x0 − 1, v[1..4] hold x0 .. x0 + 63, v[5] starts at x0 + 64
      const __m512 p0 = phase(v + 1, idx[0]), p1 = phase(v + 1, idx[1]), p2 = phase(v + 1, idx[2]),
                   p3 = phase(v + 1, idx[3]);
      // element 4l − 1: phase 3 one lane up, v[0]'s last lane entering; element 4l + 4: phase 0 one lane
      // down, v[5]'s first lane entering
      d[0] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(p3), _mm512_castps_si512(v[0]), 15));
      d[1] = p0; d[2] = p1; d[3] = p2; d[4] = p3;
      d[5] = _mm512_castsi512_ps(_mm512_alignr_epi32(_mm512_castps_si512(v[5]), _mm512_castps_si512(p0), 1));
    }
    bt6(d, e[r]);
  }
  for (int j = 0; j < 6; ++j) {
    __m512 col[6], v[6];
    for (int r = 0; r < 6; ++r) col[r] = e[r][j];
    bt6(col, v);
    for (int i = 0; i < 6; ++i) _mm512_store_ps(V + (i * 6 + j) * vstride_p, v[i]);
  }
}

// interleaves a (even lanes) and b (odd lanes): the lower (hi = false) or upper 8 lanes of each
inline __m512 zip(__m512 a, __m512 b, bool hi) {
  const __m512i lower = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  return _mm512_permutex2var_ps(a, hi ? _mm512_add_epi32(lower, _mm512_set1_epi32(8)) : lower, b);
}

// M[p][r][t] (36 × CO × TB) → the CO output planes, for the 16 tiles of group k
inline void output_transform(const float* M, int k, float* const* planes, const float* bias, const Geometry& g,
                             const Group& gr) {
  if (gr.ty < 0) return;
  for (int r = 0; r < CO; ++r) {
    __m512 f[6][4];
    for (int a = 0; a < 6; ++a) {
      __m512 m[6];
      for (int b = 0; b < 6; ++b) m[b] = _mm512_load_ps(M + ((a * 6 + b) * CO + r) * TB + k * 16);
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
      const int64_t row = 4 * gr.ty + i;
      if (row >= g.H) break;
      const __m512 a0 = zip(y[i][0], y[i][2], false), a1 = zip(y[i][0], y[i][2], true);
      const __m512 b0 = zip(y[i][1], y[i][3], false), b1 = zip(y[i][1], y[i][3], true);
      float* dst = planes[r] + row * g.W + gr.x0;
      _mm512_mask_storeu_ps(dst, gr.out[0], zip(a0, b0, false));
      _mm512_mask_storeu_ps(dst + 16, gr.out[1], zip(a0, b0, true));
      _mm512_mask_storeu_ps(dst + 32, gr.out[2], zip(a1, b1, false));
      _mm512_mask_storeu_ps(dst + 48, gr.out[3], zip(a1, b1, true));
    }
  }
}

// Mblk[p][r][:] = Σ_ci U[p][cob][ci][r] · V[p][ci][:] for one block
inline void gemm(const float* V, const float* U, int64_t Cin, float* M) {
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


void pack_weights(const float* w, int64_t Cout_w, int64_t Cin_w, bool rotated, float* U, int64_t pack_begin,
                  int64_t pack_end) {
  // G of F(4×4, 3×3); each U = G·w·Gᵀ is formed in double and rounded once
  static constexpr double G[6][3] = {{1. / 4, 0, 0},           {-1. / 6, -1. / 6, -1. / 6}, {-1. / 6, 1. / 6, -1. / 6},
                                     {1. / 24, 1. / 12, 1. / 6}, {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1}};
  const int64_t inputs = rotated ? Cout_w : Cin_w;
  for (int64_t pack = pack_begin; pack < pack_end; ++pack) {
    for (int64_t ci = 0; ci < inputs; ++ci) {
      for (int r = 0; r < CO; ++r) {
        const int64_t co = pack * CO + r;
        double tap[3][3], half[6][3];
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b)
            tap[a][b] = rotated ? w[((ci * Cin_w + co) * 3 + 2 - a) * 3 + 2 - b] : w[((co * Cin_w + ci) * 3 + a) * 3 + b];
        for (int i = 0; i < 6; ++i)
          for (int b = 0; b < 3; ++b) half[i][b] = G[i][0] * tap[0][b] + G[i][1] * tap[1][b] + G[i][2] * tap[2][b];
        for (int i = 0; i < 6; ++i)
          for (int j = 0; j < 6; ++j)
            U[((pack * 36 + i * 6 + j) * inputs + ci) * CO + r] =
                float(half[i][0] * G[j][0] + half[i][1] * G[j][1] + half[i][2] * G[j][2]);
      }
    }
  }
}

int64_t work_items(const Problem& p) {
  const Geometry g = geometry(p);
  return p.B * blocks_per_sample(g);
}

void forward(const Problem& p, int64_t begin, int64_t end) {
  const Geometry g = geometry(p);
  const int64_t nblocks = blocks_per_sample(g);
  struct Free {
    void operator()(float* f) const { std::free(f); }
  };
  const std::unique_ptr<float, Free> V(static_cast<float*>(std::aligned_alloc(64, sizeof(float) * 36 * p.Cin * TB)));
  const std::unique_ptr<float, Free> M(static_cast<float*>(std::aligned_alloc(64, sizeof(float) * 36 * CO * TB)));
  if (V == nullptr || M == nullptr) throw std::bad_alloc();
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / nblocks, first_group = (item % nblocks) * NG;
    Group groups[NG];
    for (int k = 0; k < NG; ++k) groups[k] = make_group(g, first_group + k);
    for (int64_t ci = 0; ci < p.Cin; ++ci) {
      const float* plane = p.x + (b * p.Cin + ci) * p.H * p.W;
      for (int k = 0; k < NG; ++k) input_transform(plane, g, groups[k], V.get() + ci * TB + k * 16, p.Cin * TB);
    }
    for (int64_t pack = 0; pack < p.Cout / CO; ++pack) {
      gemm(V.get(), p.U + pack * 36 * p.Cin * CO, p.Cin, M.get());
      float* planes[CO];
      for (int r = 0; r < CO; ++r) planes[r] = p.y + (b * p.Cout + pack * CO + r) * p.H * p.W;
      const float* bias = p.bias == nullptr ? nullptr : p.bias + pack * CO;
      for (int k = 0; k < NG; ++k) output_transform(M.get(), k, planes, bias, g, groups[k]);
    }
  }
}

}  // namespace mcmri_fast::cpu::winograd

#pragma GCC pop_options
#endif  // MCMRI_CPU_AVX512_BUILD
