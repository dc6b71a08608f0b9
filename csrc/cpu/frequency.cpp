// CPU kernels of the frequency-branch ops (the contract: csrc/frequency.h). The pointwise passes are
// written once on at::vec::Vectorized and built for each instruction set (isa_builds.h: in the baseline
// build generic Vectorized and std:: math, in the AVX2 one Sleef's atan2, sin, cos and sqrt), run over
// at::parallel_for chunks, one pass over memory each; the epilogue's 1x1 convolution is a GEMM per tile
// of pixels (at::mm_out) with the pointwise work fused around it while the tile is in cache.
#include "isa_builds.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>

namespace mcmri_fast::cpu {

// Every kernel handles elements [begin, end) (or n) of flat, contiguous buffers; complex buffers are
// interleaved (re, im) real arrays. Optional inputs are nullptr when absent (treated as zero).
template <typename scalar_t>
struct FrequencyKernels {
  void (*spectrum_to_polar)(const scalar_t* z, scalar_t* amplitude, scalar_t* phase, int64_t begin, int64_t end);
  void (*spectrum_to_polar_backward)(const scalar_t* z, const scalar_t* grad_amplitude, const scalar_t* grad_phase,
                                     scalar_t* grad_z, int64_t begin, int64_t end);
  void (*polar_to_spectrum)(const scalar_t* amplitude, const scalar_t* phase, const scalar_t* amplitude_residual,
                            const scalar_t* phase_residual, scalar_t eps, scalar_t* z, int64_t begin, int64_t end);
  void (*polar_to_spectrum_backward)(const scalar_t* grad_z, const scalar_t* amplitude, const scalar_t* phase,
                                     const scalar_t* amplitude_residual, const scalar_t* phase_residual,
                                     scalar_t* grad_amplitude, scalar_t* grad_phase, int64_t begin, int64_t end);
  void (*epilogue_cleanup)(scalar_t* out, const scalar_t* residual, scalar_t bias, scalar_t nonfinite, bool* finite,
                           int64_t n);
  double (*epilogue_mask_gradient)(const scalar_t* grad, const bool* finite, scalar_t* grad_masked, int64_t n);
  void (*multiply_by_sign)(const scalar_t* y, scalar_t* grad_y, int64_t begin, int64_t end);
  void (*absolute)(const scalar_t* y, scalar_t* out, int64_t begin, int64_t end);
};

}  // namespace mcmri_fast::cpu

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

// The amplitude and phase at [i, i + count), each with its residual added where there is one.
template <typename scalar_t>
std::pair<Vectorized<scalar_t>, Vectorized<scalar_t>> load_polar(const scalar_t* amplitude, const scalar_t* phase,
                                                                  const scalar_t* amplitude_residual,
                                                                  const scalar_t* phase_residual, int64_t i,
                                                                  int64_t count) {
  auto a = load_or_zero(amplitude, i, count), p = load_or_zero(phase, i, count);
  if (amplitude_residual != nullptr) a = a + load_or_zero(amplitude_residual, i, count);
  if (phase_residual != nullptr) p = p + load_or_zero(phase_residual, i, count);
  return {a, p};
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
    const auto [a, p] = load_polar(amplitude, phase, amplitude_residual, phase_residual, i, count);
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
    const auto [a, p] = load_polar(amplitude, phase, amplitude_residual, phase_residual, i, count);
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

template <typename scalar_t>
const FrequencyKernels<scalar_t>& frequency_kernels() {
  static const FrequencyKernels<scalar_t> table{
      &spectrum_to_polar<scalar_t>,  &spectrum_to_polar_backward<scalar_t>, &polar_to_spectrum<scalar_t>,
      &polar_to_spectrum_backward<scalar_t>, &epilogue_cleanup<scalar_t>, &epilogue_mask_gradient<scalar_t>,
      &multiply_by_sign<scalar_t>, &absolute<scalar_t>};
  return table;
}
MCMRI_CPU_FLOAT_KERNELS(frequency_kernels, FrequencyKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "../frequency.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(frequency_kernels, FrequencyKernels)

namespace {

using frequency::optional_data;

// Elements per parallel chunk: enough work (transcendentals included) to outweigh a thread's start-up.
constexpr int64_t kGrain = 16384;

// Calls f(flat index) at every self-conjugate bin of a contiguous spectrum of numel elements: at most
// four per [H, W/2 + 1] plane, so a serial fix-up after the vectorised pass.
template <typename F>
void for_each_self_conjugate_bin(const frequency::SelfConjugateBins& bins, int64_t numel, F&& f) {
  if (!bins.active()) return;
  const int64_t rows[] = {0, bins.nyquist_row}, cols[] = {0, bins.nyquist_col};
  for (int64_t plane = 0; plane < numel; plane += bins.rows * bins.cols) {
    for (const int64_t r : rows) {
      for (const int64_t c : cols) {
        if (r >= 0 && c >= 0) f(plane + r * bins.cols + c);
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> freq_spectrum_to_polar(const at::Tensor& spectrum_in,
                                                          c10::optional<int64_t> signal_width) {
  const auto bins = frequency::check_spectrum_to_polar("spectrum_to_polar", spectrum_in, signal_width);
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto real_options = spectrum.options().dtype(c10::toRealValueType(spectrum.scalar_type()));
  auto amplitude = at::empty(spectrum.sizes(), real_options);
  auto phase = at::empty(spectrum.sizes(), real_options);
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_spectrum_to_polar_cpu", [&] {
    const auto& k = frequency_kernels<scalar_t>();
    const auto* z = reinterpret_cast<const scalar_t*>(spectrum.const_data_ptr());
    auto* a = amplitude.data_ptr<scalar_t>();
    auto* p = phase.data_ptr<scalar_t>();
    at::parallel_for(0, spectrum.numel(), kGrain, [&](int64_t begin, int64_t end) {
      k.spectrum_to_polar(z, a, p, begin, end);
    });
    for_each_self_conjugate_bin(bins, spectrum.numel(), [&](int64_t i) {  // z = (Re z, +0)
      a[i] = std::abs(z[2 * i]);
      p[i] = std::atan2(scalar_t(0), z[2 * i]);
    });
  });
  return {amplitude, phase};
}

at::Tensor freq_spectrum_to_polar_backward(const at::Tensor& spectrum_in,
                                           const c10::optional<at::Tensor>& grad_amplitude_in,
                                           const c10::optional<at::Tensor>& grad_phase_in,
                                           c10::optional<int64_t> signal_width) {
  const auto bins = frequency::check_spectrum_to_polar("spectrum_to_polar_backward", spectrum_in, signal_width,
                                                       grad_amplitude_in, grad_phase_in);
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto grad_amplitude = frequency::contiguous(grad_amplitude_in);  // a stride-0 gradient is materialised here
  const auto grad_phase = frequency::contiguous(grad_phase_in);
  auto grad_spectrum = at::empty(spectrum.sizes(), spectrum.options());
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(spectrum.scalar_type()), "freq_spectrum_to_polar_backward_cpu", [&] {
    const auto& k = frequency_kernels<scalar_t>();
    const auto* z = reinterpret_cast<const scalar_t*>(spectrum.const_data_ptr());
    const scalar_t* ga = optional_data<scalar_t>(grad_amplitude);
    const scalar_t* gp = optional_data<scalar_t>(grad_phase);
    auto* gz = reinterpret_cast<scalar_t*>(grad_spectrum.data_ptr());
    at::parallel_for(0, spectrum.numel(), kGrain, [&](int64_t begin, int64_t end) {
      k.spectrum_to_polar_backward(z, ga, gp, gz, begin, end);
    });
    // z = (Re z, +0): the phase is flat in Re z, and the imaginary part gets no gradient.
    for_each_self_conjugate_bin(bins, spectrum.numel(), [&](int64_t i) {
      const scalar_t re = z[2 * i], g = ga != nullptr ? ga[i] : scalar_t(0);
      gz[2 * i] = re > 0 ? g : re < 0 ? -g : scalar_t(0);
      gz[2 * i + 1] = 0;
    });
  });
  return grad_spectrum;
}

at::Tensor freq_polar_to_spectrum(const at::Tensor& amplitude_in, const at::Tensor& phase_in,
                                  const c10::optional<at::Tensor>& amplitude_residual_in,
                                  const c10::optional<at::Tensor>& phase_residual_in, double eps) {
  frequency::check_polar_inputs("polar_to_spectrum", amplitude_in, phase_in, amplitude_residual_in, phase_residual_in);
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = frequency::contiguous(amplitude_residual_in), phase_residual = frequency::contiguous(phase_residual_in);
  auto spectrum = at::empty(amplitude.sizes(), amplitude.options().dtype(c10::toComplexType(amplitude.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_polar_to_spectrum_cpu", [&] {
    const auto& k = frequency_kernels<scalar_t>();
    const scalar_t* a = amplitude.const_data_ptr<scalar_t>();
    const scalar_t* p = phase.const_data_ptr<scalar_t>();
    const scalar_t* ar = optional_data<scalar_t>(amplitude_residual);
    const scalar_t* pr = optional_data<scalar_t>(phase_residual);
    auto* z = reinterpret_cast<scalar_t*>(spectrum.data_ptr());
    at::parallel_for(0, amplitude.numel(), kGrain, [&](int64_t begin, int64_t end) {
      k.polar_to_spectrum(a, p, ar, pr, static_cast<scalar_t>(eps), z, begin, end);
    });
  });
  return spectrum;
}

std::tuple<at::Tensor, at::Tensor> freq_polar_to_spectrum_backward(
    const at::Tensor& grad_in, const at::Tensor& amplitude_in, const at::Tensor& phase_in,
    const c10::optional<at::Tensor>& amplitude_residual_in, const c10::optional<at::Tensor>& phase_residual_in) {
  frequency::check_polar_inputs("polar_to_spectrum_backward", amplitude_in, phase_in, amplitude_residual_in,
                                phase_residual_in, &grad_in);
  const auto grad = grad_in.resolve_conj().contiguous();
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = frequency::contiguous(amplitude_residual_in), phase_residual = frequency::contiguous(phase_residual_in);
  auto grad_amplitude = at::empty(amplitude.sizes(), amplitude.options());
  auto grad_phase = at::empty(amplitude.sizes(), amplitude.options());
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_polar_to_spectrum_backward_cpu", [&] {
    const auto& k = frequency_kernels<scalar_t>();
    const auto* gz = reinterpret_cast<const scalar_t*>(grad.const_data_ptr());
    const scalar_t* a = amplitude.const_data_ptr<scalar_t>();
    const scalar_t* p = phase.const_data_ptr<scalar_t>();
    const scalar_t* ar = optional_data<scalar_t>(amplitude_residual);
    const scalar_t* pr = optional_data<scalar_t>(phase_residual);
    auto* ga = grad_amplitude.data_ptr<scalar_t>();
    auto* gp = grad_phase.data_ptr<scalar_t>();
    at::parallel_for(0, amplitude.numel(), kGrain, [&](int64_t begin, int64_t end) {
      k.polar_to_spectrum_backward(gz, a, p, ar, pr, ga, gp, begin, end);
    });
  });
  return {grad_amplitude, grad_phase};
}

// The epilogue runs over tiles of kEpilogueTile pixels of one sample: |y| of the tile ([C, n], made in a
// per-chunk buffer), its GEMM (at::mm_out: one BLAS call per tile, single-threaded inside the parallel
// loop) and the pointwise work on the GEMM's output happen while the tile is in cache, so y, the
// residual and the output each cross memory once (a whole-tensor |y| and a baddbmm onto the residual
// cost two more full passes; BENCHMARKS.md has the figures).
constexpr int64_t kEpilogueTile = 1024;

struct EpilogueTile {
  int64_t b, n0, n;  // sample, first pixel, pixel count
};

inline EpilogueTile epilogue_tile(int64_t t, int64_t tiles_per_sample, int64_t N) {
  const int64_t b = t / tiles_per_sample, n0 = (t % tiles_per_sample) * kEpilogueTile;
  return {b, n0, std::min(kEpilogueTile, N - n0)};
}

// |y[b, :, n0:n0+n]| into buffer, returned as a contiguous [C, n] matrix.
template <typename scalar_t>
at::Tensor abs_tile(const FrequencyKernels<scalar_t>& k, const at::Tensor& y, at::Tensor& buffer, const EpilogueTile& t,
                    int64_t C, int64_t N) {
  const scalar_t* src = y.const_data_ptr<scalar_t>() + t.b * C * N + t.n0;
  scalar_t* dst = buffer.data_ptr<scalar_t>();
  for (int64_t c = 0; c < C; ++c) k.absolute(src + c * N, dst + c * t.n, 0, t.n);
  return buffer.narrow(0, 0, C * t.n).view({C, t.n});
}

std::tuple<at::Tensor, at::Tensor> freq_epilogue(const at::Tensor& y_in, const at::Tensor& weight_in,
                                                 const c10::optional<at::Tensor>& bias_in,
                                                 const at::Tensor& residual_in, double nonfinite, bool keep_mask) {
  frequency::check_epilogue("frequency_epilogue", y_in, weight_in, bias_in, residual_in);
  // Detached: the GEMMs run on intra-op worker threads, where the caller's disabled autograd does not
  // reach, and ATen's out= variants refuse inputs that require gradients.
  const auto y = y_in.contiguous(), weight = weight_in.detach().contiguous(), residual = residual_in.contiguous();
  const auto bias = frequency::contiguous(bias_in);
  const int64_t B = y.size(0), C = y.size(1), Co = weight.size(0), H = y.size(2), W = y.size(3), N = H * W;
  auto out = at::empty({B, Co, H, W}, y.options());
  // The finite mask of the pre-cleanup value, for the backward (g' = g where it was finite). A bool per
  // element costs a quarter of the float32 output; recomputing the pre-cleanup value instead would need
  // the GEMM again (C multiply-adds per element) and the residual, and the output alone cannot tell a
  // replaced value from a computed one equal to `nonfinite`.
  auto finite = at::empty(keep_mask ? std::vector<int64_t>{B, Co, H, W} : std::vector<int64_t>{0},
                          y.options().dtype(at::kBool));
  if (out.numel() == 0) return {out, finite};
  const int64_t tiles_per_sample = (N + kEpilogueTile - 1) / kEpilogueTile;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_cpu", [&] {
    const auto& k = frequency_kernels<scalar_t>();
    const scalar_t* b = optional_data<scalar_t>(bias);
    const scalar_t replacement = static_cast<scalar_t>(nonfinite);
    at::parallel_for(0, B * tiles_per_sample, 1, [&](int64_t begin, int64_t end) {
      auto buffer = at::empty({C * kEpilogueTile}, y.options());
      for (int64_t index = begin; index < end; ++index) {
        const auto t = epilogue_tile(index, tiles_per_sample, N);
        at::Tensor out_tile = out[t.b].view({Co, N}).narrow(1, t.n0, t.n);  // rows of stride N: BLAS's ldc
        at::mm_out(out_tile, weight, abs_tile(k, y, buffer, t, C, N));
        for (int64_t co = 0; co < Co; ++co) {
          const int64_t offset = (t.b * Co + co) * N + t.n0;
          k.epilogue_cleanup(out.data_ptr<scalar_t>() + offset, residual.const_data_ptr<scalar_t>() + offset,
                             b ? b[co] : scalar_t(0), replacement, keep_mask ? finite.data_ptr<bool>() + offset : nullptr,
                             t.n);
        }
      }
    });
  });
  return {out, finite};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> freq_epilogue_backward(
    const at::Tensor& grad_in, const at::Tensor& y_in, const at::Tensor& weight_in, const at::Tensor& finite_in,
    bool need_y_grad, bool need_weight_grad, bool need_bias_grad) {
  frequency::check_epilogue_backward(grad_in, y_in, weight_in, finite_in);
  const auto y = y_in.contiguous(), grad = grad_in.contiguous(), finite = finite_in.contiguous();
  const auto weight = weight_in.detach().contiguous();  // detached: see freq_epilogue
  const int64_t B = y.size(0), C = y.size(1), Co = weight.size(0), N = y.size(2) * y.size(3);
  auto grad_residual = at::empty(grad.sizes(), grad.options());  // g'
  // Partial sums per thread (each thread visits its tiles in a fixed order), summed at the end. Called
  // from inside a parallel region, parallel_for runs inline on the calling thread: one slot then.
  const bool nested = at::in_parallel_region();
  const int64_t threads = nested ? 1 : at::get_num_threads();
  auto weight_parts = at::zeros({threads, Co, C}, y.options());
  auto bias_parts = at::zeros({threads, Co}, y.options().dtype(at::kDouble));
  // Distinct empty tensors for the gradients not asked for: a custom op's outputs may not alias.
  at::Tensor grad_y = need_y_grad ? at::empty(y.sizes(), y.options()) : at::empty({0}, y.options());
  at::Tensor grad_weight = at::empty({0}, y.options()), grad_bias = at::empty({0}, y.options());
  const auto weight_t = weight.t();
  const int64_t tiles_per_sample = (N + kEpilogueTile - 1) / kEpilogueTile;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_backward_cpu", [&] {
    const auto& k = frequency_kernels<scalar_t>();
    at::parallel_for(0, B * tiles_per_sample, 1, [&](int64_t begin, int64_t end) {
      const int64_t thread = nested ? 0 : at::get_thread_num();
      at::Tensor weight_part = weight_parts[thread];
      double* bias_part = bias_parts.data_ptr<double>() + thread * Co;
      auto buffer = need_weight_grad ? at::empty({C * kEpilogueTile}, y.options()) : at::Tensor();
      for (int64_t index = begin; index < end; ++index) {
        const auto t = epilogue_tile(index, tiles_per_sample, N);
        // g' = g·isfinite(pre-cleanup value), and its row sums for the bias.
        for (int64_t co = 0; co < Co; ++co) {
          const int64_t offset = (t.b * Co + co) * N + t.n0;
          bias_part[co] += k.epilogue_mask_gradient(grad.const_data_ptr<scalar_t>() + offset,
                                                    finite.const_data_ptr<bool>() + offset,
                                                    grad_residual.data_ptr<scalar_t>() + offset, t.n);
        }
        const at::Tensor g_tile = grad_residual[t.b].view({Co, N}).narrow(1, t.n0, t.n);
        if (need_weight_grad) weight_part.addmm_(g_tile, abs_tile(k, y, buffer, t, C, N).t());  // g' |y|ᵀ
        if (need_y_grad) {
          at::Tensor grad_y_tile = grad_y[t.b].view({C, N}).narrow(1, t.n0, t.n);
          at::mm_out(grad_y_tile, weight_t, g_tile);  // Wᵀ g'
          for (int64_t c = 0; c < C; ++c) {
            const int64_t offset = (t.b * C + c) * N + t.n0;
            k.multiply_by_sign(y.const_data_ptr<scalar_t>() + offset, grad_y.data_ptr<scalar_t>() + offset, 0, t.n);
          }
        }
      }
    });
  });
  if (need_weight_grad) grad_weight = weight_parts.sum(0);
  if (need_bias_grad) grad_bias = bias_parts.sum(0).to(y.scalar_type());
  return {grad_y, grad_weight, grad_bias, grad_residual};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("freq_spectrum_to_polar", &freq_spectrum_to_polar);
  m.impl("freq_spectrum_to_polar_backward", &freq_spectrum_to_polar_backward);
  m.impl("freq_polar_to_spectrum", &freq_polar_to_spectrum);
  m.impl("freq_polar_to_spectrum_backward", &freq_polar_to_spectrum_backward);
  m.impl("freq_epilogue", &freq_epilogue);
  m.impl("freq_epilogue_backward", &freq_epilogue_backward);
}

}  // namespace mcmri_fast::cpu
#endif
