// CPU implementations of the frequency-branch ops: the pointwise passes run the kernels of
// frequency_kernels.h (the AVX2 build where the CPU has it, else the baseline build below; see
// cpu_isa.h) over at::parallel_for chunks, one pass over memory each; the epilogue's 1x1 convolution
// is a GEMM per tile of pixels (at::mm_out) with the pointwise work fused around it while the tile is
// in cache.
#define MCMRI_CPU_ISA base
#include "frequency_kernels.h"

#include "frequency.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "../frequency_args.h"
#include "cpu_isa.h"
#include "frequency_kernel_table.h"

namespace mcmri_fast::cpu {
namespace {

// Elements per parallel chunk: enough work (transcendentals included) to outweigh a thread's start-up.
constexpr int64_t kGrain = 16384;

// The kernels for this CPU: the AVX2 build where use_avx2_kernels(), else the baseline build.
template <typename scalar_t>
const FrequencyKernels<scalar_t>& kernels() {
#ifdef MCMRI_CPU_AVX2_BUILD
  if (use_avx2_kernels()) return frequency_kernels_avx2<scalar_t>();
#endif
  static const FrequencyKernels<scalar_t> base_table = MCMRI_FAST_FREQUENCY_KERNEL_TABLE(base, scalar_t);
  return base_table;
}

template <typename scalar_t>
const scalar_t* optional_data(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

void check_optional_real_of(const char* op, const char* name, const c10::optional<at::Tensor>& t,
                            const at::Tensor& spectrum) {
  if (t.has_value()) frequency::check_real_of(op, name, *t, spectrum);
}

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

}  // namespace

std::tuple<at::Tensor, at::Tensor> freq_spectrum_to_polar(const at::Tensor& spectrum_in,
                                                          c10::optional<int64_t> signal_width) {
  frequency::check_complex("spectrum_to_polar", spectrum_in);
  const auto bins = frequency::check_signal_width("spectrum_to_polar", spectrum_in, signal_width);
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto real_options = spectrum.options().dtype(c10::toRealValueType(spectrum.scalar_type()));
  auto amplitude = at::empty(spectrum.sizes(), real_options);
  auto phase = at::empty(spectrum.sizes(), real_options);
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_spectrum_to_polar_cpu", [&] {
    const auto& k = kernels<scalar_t>();
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
  const char* op = "spectrum_to_polar_backward";
  frequency::check_complex(op, spectrum_in);
  const auto bins = frequency::check_signal_width(op, spectrum_in, signal_width);
  check_optional_real_of(op, "grad_amplitude", grad_amplitude_in, spectrum_in);
  check_optional_real_of(op, "grad_phase", grad_phase_in, spectrum_in);
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto grad_amplitude = frequency::contiguous(grad_amplitude_in);  // a stride-0 gradient is materialised here
  const auto grad_phase = frequency::contiguous(grad_phase_in);
  auto grad_spectrum = at::empty(spectrum.sizes(), spectrum.options());
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(spectrum.scalar_type()), "freq_spectrum_to_polar_backward_cpu", [&] {
    const auto& k = kernels<scalar_t>();
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
    const auto& k = kernels<scalar_t>();
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
  const char* op = "polar_to_spectrum_backward";
  frequency::check_polar_inputs(op, amplitude_in, phase_in, amplitude_residual_in, phase_residual_in);
  frequency::check_complex(op, grad_in);
  frequency::check_real_of(op, "amplitude", amplitude_in, grad_in);
  const auto grad = grad_in.resolve_conj().contiguous();
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = frequency::contiguous(amplitude_residual_in), phase_residual = frequency::contiguous(phase_residual_in);
  auto grad_amplitude = at::empty(amplitude.sizes(), amplitude.options());
  auto grad_phase = at::empty(amplitude.sizes(), amplitude.options());
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_polar_to_spectrum_backward_cpu", [&] {
    const auto& k = kernels<scalar_t>();
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
// cost two more full passes: 205 vs ~120 ms at 4x64x240x240 on two cores).
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
  frequency::check_epilogue(y_in, weight_in, bias_in, residual_in);
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
    const auto& k = kernels<scalar_t>();
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
  const char* op = "frequency_epilogue_backward";
  frequency::check_real(op, "grad", grad_in);
  TORCH_CHECK(grad_in.dim() == 4 && finite_in.sizes() == grad_in.sizes() && finite_in.scalar_type() == at::kBool,
              op, ": finite must be a bool tensor of grad's shape [B, Co, H, W]");
  frequency::check_epilogue(y_in, weight_in, c10::nullopt, grad_in);
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
    const auto& k = kernels<scalar_t>();
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

}  // namespace mcmri_fast::cpu
