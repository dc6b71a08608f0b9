// Pointwise CPU kernels of the frequency-branch ops (see mcmri_fast/ops/frequency.py), written once on
// at::vec::Vectorized and compiled twice (the scheme of cpu_isa.h): frequency.cpp builds them for the
// baseline (generic Vectorized, std:: math) and avx2_kernels.cpp for AVX2 + FMA, where Vectorized's
// atan2, sin, cos and sqrt go through Sleef; frequency.cpp picks one at run time.
//
// The including file defines MCMRI_CPU_ISA (the namespace of this build), and for AVX2 also
// CPU_CAPABILITY=AVX2 and CPU_CAPABILITY_AVX2 before any ATen header (see avx2_kernels.cpp).
//
// Every function handles elements [begin, end) of flat, contiguous buffers; complex buffers are
// interleaved (re, im) real arrays. Optional inputs are nullptr when absent (treated as zero).
#pragma once
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

using at::vec::Vectorized;

// Loads `count` (<= Vec::size()) elements of p, zeros when p is nullptr.
template <typename scalar_t>
inline Vectorized<scalar_t> load_or_zero(const scalar_t* p, int64_t i, int64_t count) {
  using Vec = Vectorized<scalar_t>;
  if (p == nullptr) return Vec(scalar_t(0));
  return count == Vec::size() ? Vec::loadu(p + i) : Vec::loadu(p + i, count);
}

// Loads complex elements [i, i + count) of an interleaved buffer as (re, im) vectors.
template <typename scalar_t>
inline std::pair<Vectorized<scalar_t>, Vectorized<scalar_t>> load_complex(const scalar_t* z, int64_t i, int64_t count) {
  using Vec = Vectorized<scalar_t>;
  const int64_t reals = 2 * count;
  const scalar_t* p = z + 2 * i;
  Vec lo = reals >= Vec::size() ? Vec::loadu(p) : Vec::loadu(p, reals);
  Vec hi = reals >= 2 * Vec::size() ? Vec::loadu(p + Vec::size())
           : reals > Vec::size()    ? Vec::loadu(p + Vec::size(), reals - Vec::size())
                                    : Vec(scalar_t(0));
  return at::vec::deinterleave2(lo, hi);
}

template <typename scalar_t>
inline void store_complex(scalar_t* z, int64_t i, int64_t count, const Vectorized<scalar_t>& re,
                          const Vectorized<scalar_t>& im) {
  using Vec = Vectorized<scalar_t>;
  auto [lo, hi] = at::vec::interleave2(re, im);
  const int64_t reals = 2 * count;
  scalar_t* p = z + 2 * i;
  if (reals >= 2 * Vec::size()) {
    lo.store(p);
    hi.store(p + Vec::size());
  } else if (reals > Vec::size()) {
    lo.store(p);
    hi.store(p + Vec::size(), reals - Vec::size());
  } else {
    lo.store(p, reals);
  }
}

template <typename scalar_t>
inline void store(scalar_t* p, int64_t i, int64_t count, const Vectorized<scalar_t>& v) {
  if (count == Vectorized<scalar_t>::size()) {
    v.store(p + i);
  } else {
    v.store(p + i, count);
  }
}

// (amplitude, phase) = (|z|, atan2(Im z, Re z)): torch.abs computes |z| as sqrt(re² + im²) too.
template <typename scalar_t>
void spectrum_to_polar(const scalar_t* z, scalar_t* amplitude, scalar_t* phase, int64_t begin, int64_t end) {
  using Vec = Vectorized<scalar_t>;
  for (int64_t i = begin; i < end; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), end - i);
    auto [re, im] = load_complex(z, i, count);
    store(amplitude, i, count, (re * re + im * im).sqrt());
    store(phase, i, count, im.atan2(re));
  }
}

// grad_z = (z/|z|)(g_a + i g_p/|z|) = (s re − t im) + i (s im + t re), s = g_a/|z|, t = g_p/|z|²;
// 0 where z == 0 (torch's abs and angle backward).
template <typename scalar_t>
void spectrum_to_polar_backward(const scalar_t* z, const scalar_t* grad_amplitude, const scalar_t* grad_phase,
                                scalar_t* grad_z, int64_t begin, int64_t end) {
  using Vec = Vectorized<scalar_t>;
  const Vec zero(scalar_t(0));
  for (int64_t i = begin; i < end; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), end - i);
    auto [re, im] = load_complex(z, i, count);
    const Vec r2 = re * re + im * im;
    const Vec s = load_or_zero(grad_amplitude, i, count) / r2.sqrt();
    const Vec t = load_or_zero(grad_phase, i, count) / r2;
    const Vec at_zero = r2 == zero;
    const Vec g_re = Vec::blendv(at::vec::fmsub(s, re, t * im), zero, at_zero);
    const Vec g_im = Vec::blendv(at::vec::fmadd(s, im, t * re), zero, at_zero);
    store_complex(grad_z, i, count, g_re, g_im);
  }
}

// z = a cos p + 2 eps + i (a sin p + eps), a = amplitude (+ amplitude_residual), p = phase (+ phase_residual).
// The real part adds eps twice, as the reference does, so both round alike.
template <typename scalar_t>
void polar_to_spectrum(const scalar_t* amplitude, const scalar_t* phase, const scalar_t* amplitude_residual,
                       const scalar_t* phase_residual, scalar_t eps, scalar_t* z, int64_t begin, int64_t end) {
  using Vec = Vectorized<scalar_t>;
  const Vec veps(eps);
  for (int64_t i = begin; i < end; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), end - i);
    Vec a = load_or_zero(amplitude, i, count);
    Vec p = load_or_zero(phase, i, count);
    if (amplitude_residual != nullptr) a = a + load_or_zero(amplitude_residual, i, count);
    if (phase_residual != nullptr) p = p + load_or_zero(phase_residual, i, count);
    store_complex(z, i, count, (a * p.cos() + veps) + veps, a * p.sin() + veps);
  }
}

// grad_a = g_re cos p + g_im sin p, grad_p = a (g_im cos p − g_re sin p) (a, p with their residuals).
template <typename scalar_t>
void polar_to_spectrum_backward(const scalar_t* grad_z, const scalar_t* amplitude, const scalar_t* phase,
                                const scalar_t* amplitude_residual, const scalar_t* phase_residual,
                                scalar_t* grad_amplitude, scalar_t* grad_phase, int64_t begin, int64_t end) {
  using Vec = Vectorized<scalar_t>;
  for (int64_t i = begin; i < end; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), end - i);
    Vec a = load_or_zero(amplitude, i, count);
    Vec p = load_or_zero(phase, i, count);
    if (amplitude_residual != nullptr) a = a + load_or_zero(amplitude_residual, i, count);
    if (phase_residual != nullptr) p = p + load_or_zero(phase_residual, i, count);
    auto [g_re, g_im] = load_complex(grad_z, i, count);
    const Vec c = p.cos(), s = p.sin();
    store(grad_amplitude, i, count, at::vec::fmadd(g_re, c, g_im * s));
    store(grad_phase, i, count, a * at::vec::fmsub(g_im, c, g_re * s));
  }
}

// n pixels of one output row (b, co) of the epilogue, in place after the GEMM (out = W |y|):
// v = (out + bias) + residual; finite[i] = isfinite(v) (when finite != nullptr); out = v, or `nonfinite`
// where v is not finite.
template <typename scalar_t>
void epilogue_cleanup(scalar_t* out, const scalar_t* residual, scalar_t bias, scalar_t nonfinite, bool* finite,
                      int64_t n) {
  using Vec = Vectorized<scalar_t>;
  const Vec vbias(bias), replacement(nonfinite), inf(std::numeric_limits<scalar_t>::infinity());
  const Vec zero(scalar_t(0)), one(scalar_t(1));
  scalar_t flags[Vec::size()];
  for (int64_t i = 0; i < n; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), n - i);
    const Vec v = (load_or_zero(out, i, count) + vbias) + load_or_zero(residual, i, count);
    const Vec is_finite = v.abs() < inf;  // false for ±inf and nan
    store(out, i, count, Vec::blendv(replacement, v, is_finite));
    if (finite != nullptr) {
      Vec::blendv(zero, one, is_finite).store(flags);
      for (int64_t k = 0; k < count; ++k) finite[i + k] = flags[k] != scalar_t(0);
    }
  }
}

// One row of the epilogue's backward: g' = g·finite, written to grad_masked; returns Σ g' (the bias gradient
// of the row, accumulated in double).
template <typename scalar_t>
double epilogue_mask_gradient(const scalar_t* grad, const bool* finite, scalar_t* grad_masked, int64_t n) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const scalar_t g = finite[i] ? grad[i] : scalar_t(0);
    grad_masked[i] = g;
    sum += g;
  }
  return sum;
}

// grad_y <- sign(y)·grad_y in place (0 at y == 0 and at nan: torch.sign(nan) is 0).
template <typename scalar_t>
void multiply_by_sign(const scalar_t* y, scalar_t* grad_y, int64_t begin, int64_t end) {
  using Vec = Vectorized<scalar_t>;
  const Vec zero(scalar_t(0)), one(scalar_t(1)), minus_one(scalar_t(-1));
  for (int64_t i = begin; i < end; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), end - i);
    const Vec v = load_or_zero(y, i, count);
    const Vec sign = Vec::blendv(zero, one, v > zero) + Vec::blendv(zero, minus_one, v < zero);
    store(grad_y, i, count, sign * load_or_zero(grad_y, i, count));
  }
}

// |y| of [begin, end) (the GEMM's operand, made tile by tile while it is in cache).
template <typename scalar_t>
void absolute(const scalar_t* y, scalar_t* out, int64_t begin, int64_t end) {
  using Vec = Vectorized<scalar_t>;
  for (int64_t i = begin; i < end; i += Vec::size()) {
    const int64_t count = std::min<int64_t>(Vec::size(), end - i);
    store(out, i, count, load_or_zero(y, i, count).abs());
  }
}

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA
