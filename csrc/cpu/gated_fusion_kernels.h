// Row kernels of the sigmoid-gated fusion (see mcmri_fast/ops/gated_fusion.py), written once on
// at::vec::Vectorized along the spatial dim and compiled twice (the scheme of cpu_isa.h): gated_fusion.cpp
// builds them for the baseline and avx2_kernels.cpp for AVX2 + FMA + F16C; gated_fusion.cpp picks one
// at run time. float16 / bfloat16 are computed in float32.
//
// The including file defines MCMRI_CPU_ISA (the namespace of this build), and for AVX2 also
// CPU_CAPABILITY=AVX2 and CPU_CAPABILITY_AVX2 before any ATen header (see avx2_kernels.cpp).
#pragma once
#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>

#include "vec_step.h"

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

using at::vec::Vectorized;

// exp of float lanes from Vectorized arithmetic (Cephes' expf: n = round(x / ln 2), a degree-5 polynomial
// of r = x − n ln 2, times 2^n built in the exponent bits; within 2 ulp). Kept in both builds: in the
// baseline one Vectorized<float>::exp() calls std::exp lane by lane, and in the AVX2 one it is Sleef's
// 1-ulp expf, slower here (forward at 1x64x240x240, one thread: 4.3 ms with Sleef, 3.7 ms with these
// lanes). float64 keeps Vectorized<double>::exp() (gradcheck's precision).
inline Vectorized<float> exp_lanes(const Vectorized<float>& x) {
  using V = Vectorized<float>;
  using I = Vectorized<int32_t>;
  const V magic(12582912.0f);  // 1.5·2^23: adding it rounds to an integer, held in the low mantissa bits
  // Clamped so that 2^n stays a normal float (n in [-126, 127]); maximum / minimum keep nan.
  const V clamped = at::vec::minimum(at::vec::maximum(x, V(-87.3f)), V(88.0f));
  const V t = clamped * V(1.44269504088896341f) + magic;
  const V n = t - magic;
  const V r = (clamped - n * V(0.693359375f)) - n * V(-2.12194440e-4f);
  V p(1.9875691500e-4f);
  p = p * r + V(1.3981999507e-3f);
  p = p * r + V(8.3334519073e-3f);
  p = p * r + V(4.1665795894e-2f);
  p = p * r + V(1.6666665459e-1f);
  p = p * r + V(5.0000001201e-1f);
  p = p * (r * r) + r + V(1.0f);
  // 2^n: the biased exponent n + 127 in bits 23..30 (the bits of t are those of the magic number plus n).
  const I exponent = (at::vec::cast<int32_t>(t) - I(0x4B400000 - 127)) * I(1 << 23);
  const V scaled = p * at::vec::cast<float>(exponent);
  return V::blendv(scaled, V(std::numeric_limits<float>::infinity()), x > V(88.72283935546875f));  // overflow
}

template <typename Vec>
inline Vec exp_lanes(const Vec& x) {
  return x.exp();
}

template <typename Vec>
inline Vec sigmoid(const Vec& x) {
  const Vec one(1);
  return one / (one + exp_lanes(x.neg()));
}

// All-ones lanes where x is finite: x - x is 0 for finite x and nan for ±inf and nan.
template <typename Vec>
inline Vec finite_lanes(const Vec& x) {
  return (x - x) == Vec(0);
}

// The forward at one vector of elements: a σ(ga) + b σ(gb), its non-finite lanes replaced by `fill`.
template <typename Vec>
inline Vec fused(const Vec& a, const Vec& b, const Vec& ga, const Vec& gb, bool clean, const Vec& fill) {
  const Vec out = a * sigmoid(ga) + b * sigmoid(gb);
  return clean ? Vec::blendv(fill, out, finite_lanes(out)) : out;
}

// The backward at one vector of elements. With cleanup the gradient is zero where the forward's value
// before the cleanup was not finite (nan_to_num's backward); the gate gradient keeps the operation
// order of mul and sigmoid's backward, (g a)(1 − s)s.
template <typename Vec>
inline void fused_backward(const Vec& grad, const Vec& a, const Vec& b, const Vec& ga, const Vec& gb, bool clean,
                           Vec& grad_a, Vec& grad_b, Vec& grad_ga, Vec& grad_gb) {
  const Vec one(1);
  const Vec sa = sigmoid(ga), sb = sigmoid(gb);
  const Vec g = clean ? Vec::blendv(Vec(0), grad, finite_lanes(a * sa + b * sb)) : grad;
  grad_a = g * sa;
  grad_b = g * sb;
  grad_ga = g * a * (one - sa) * sa;
  grad_gb = g * b * (one - sb) * sb;
}

// Offset of gate[b, c] for row r = (b, c); gate[b, C + c] is C·N further.
inline int64_t gate_row_offset(int64_t r, int64_t C, int64_t N) {
  const int64_t batch = r / C, c = r - batch * C;
  return (batch * 2 * C + c) * N;
}

// Rows [begin, end) of out = a σ(gate[:, :C]) + b σ(gate[:, C:]) (see GatedFusionKernels).
template <typename scalar_t>
void gated_fusion_forward_rows(int64_t C, int64_t N, const scalar_t* a, const scalar_t* b, const scalar_t* gate,
                               scalar_t* out, bool clean, double fill, int64_t begin, int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const Vec vfill(static_cast<at::opmath_type<scalar_t>>(fill));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = r * N, gate_row = gate_row_offset(r, C, N), gate_b_row = gate_row + C * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec va[S::kParts], vb[S::kParts], vga[S::kParts], vgb[S::kParts], vout[S::kParts];
      S::load(a + row + j, n, va);
      S::load(b + row + j, n, vb);
      S::load(gate + gate_row + j, n, vga);
      S::load(gate + gate_b_row + j, n, vgb);
      for (int p = 0; p < S::kParts; ++p) vout[p] = fused(va[p], vb[p], vga[p], vgb[p], clean, vfill);
      S::store(out + row + j, n, vout);
    }
  }
}

// Rows [begin, end) of the backward: grad_a, grad_b and both halves of grad_gate (see GatedFusionKernels).
template <typename scalar_t>
void gated_fusion_backward_rows(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* a, const scalar_t* b,
                                const scalar_t* gate, scalar_t* grad_a, scalar_t* grad_b, scalar_t* grad_gate,
                                bool clean, int64_t begin, int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = r * N, gate_row = gate_row_offset(r, C, N), gate_b_row = gate_row + C * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec vg[S::kParts], va[S::kParts], vb[S::kParts], vga[S::kParts], vgb[S::kParts];
      Vec da[S::kParts], db[S::kParts], dga[S::kParts], dgb[S::kParts];
      S::load(grad + row + j, n, vg);
      S::load(a + row + j, n, va);
      S::load(b + row + j, n, vb);
      S::load(gate + gate_row + j, n, vga);
      S::load(gate + gate_b_row + j, n, vgb);
      for (int p = 0; p < S::kParts; ++p) {
        fused_backward(vg[p], va[p], vb[p], vga[p], vgb[p], clean, da[p], db[p], dga[p], dgb[p]);
      }
      S::store(grad_a + row + j, n, da);
      S::store(grad_b + row + j, n, db);
      S::store(grad_gate + gate_row + j, n, dga);
      S::store(grad_gate + gate_b_row + j, n, dgb);
    }
  }
}

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA
