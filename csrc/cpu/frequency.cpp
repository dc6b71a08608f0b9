// CPU implementations of the frequency-branch ops: the pointwise passes run the kernels of
// frequency_kernels.h (AVX2 + Sleef where the CPU has it, else the baseline build below) over
// at::parallel_for chunks, one pass over memory each; the epilogue's 1x1 convolution is a GEMM
// (at::baddbmm, accumulating onto the residual) with the pointwise work fused around it.
#define FREQUENCY_ISA base
#include "frequency_kernels.h"

#include "frequency.h"

#include <ATen/Parallel.h>
#include <ATen/Version.h>

#include "../frequency_args.h"
#include "frequency_kernel_table.h"

namespace mcmri_fast::cpu {
namespace {

// Elements per parallel chunk: enough work (transcendentals included) to outweigh a thread's start-up.
constexpr int64_t kGrain = 16384;

// The kernels for this CPU: the AVX2 build where ATen's CPU capability (which honours
// ATEN_CPU_CAPABILITY=default) allows it, else the baseline build.
template <typename scalar_t>
const FrequencyKernels<scalar_t>& kernels() {
  static const FrequencyKernels<scalar_t> base_table = MCMRI_FAST_FREQUENCY_KERNEL_TABLE(base, scalar_t);
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool avx2 = [] {
    const std::string capability = at::get_cpu_capability();  // "DEFAULT", "AVX2", "AVX512", ...
    return (capability == "AVX2" || capability == "AVX512") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma");
  }();
  if (avx2) return frequency_kernels_avx2<scalar_t>();
#endif
  return base_table;
}

template <typename scalar_t>
const scalar_t* optional_data(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

c10::optional<at::Tensor> contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

void check_optional_real_of(const char* op, const char* name, const c10::optional<at::Tensor>& t,
                            const at::Tensor& spectrum) {
  if (t.has_value()) frequency::check_real_of(op, name, *t, spectrum);
}

void check_polar_inputs(const char* op, const at::Tensor& amplitude, const at::Tensor& phase,
                        const c10::optional<at::Tensor>& amplitude_residual,
                        const c10::optional<at::Tensor>& phase_residual) {
  frequency::check_real(op, "amplitude", amplitude);
  frequency::check_same(op, "phase", phase, amplitude);
  if (amplitude_residual.has_value()) frequency::check_same(op, "amplitude_residual", *amplitude_residual, amplitude);
  if (phase_residual.has_value()) frequency::check_same(op, "phase_residual", *phase_residual, amplitude);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> freq_spectrum_to_polar(const at::Tensor& spectrum_in) {
  frequency::check_complex("spectrum_to_polar", spectrum_in);
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
  });
  return {amplitude, phase};
}

at::Tensor freq_spectrum_to_polar_backward(const at::Tensor& spectrum_in,
                                           const c10::optional<at::Tensor>& grad_amplitude_in,
                                           const c10::optional<at::Tensor>& grad_phase_in) {
  const char* op = "spectrum_to_polar_backward";
  frequency::check_complex(op, spectrum_in);
  check_optional_real_of(op, "grad_amplitude", grad_amplitude_in, spectrum_in);
  check_optional_real_of(op, "grad_phase", grad_phase_in, spectrum_in);
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto grad_amplitude = contiguous(grad_amplitude_in);  // a stride-0 gradient is materialised here
  const auto grad_phase = contiguous(grad_phase_in);
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
  });
  return grad_spectrum;
}

at::Tensor freq_polar_to_spectrum(const at::Tensor& amplitude_in, const at::Tensor& phase_in,
                                  const c10::optional<at::Tensor>& amplitude_residual_in,
                                  const c10::optional<at::Tensor>& phase_residual_in, double eps) {
  check_polar_inputs("polar_to_spectrum", amplitude_in, phase_in, amplitude_residual_in, phase_residual_in);
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = contiguous(amplitude_residual_in), phase_residual = contiguous(phase_residual_in);
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
  check_polar_inputs(op, amplitude_in, phase_in, amplitude_residual_in, phase_residual_in);
  frequency::check_complex(op, grad_in);
  frequency::check_real_of(op, "amplitude", amplitude_in, grad_in);
  const auto grad = grad_in.resolve_conj().contiguous();
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = contiguous(amplitude_residual_in), phase_residual = contiguous(phase_residual_in);
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

std::tuple<at::Tensor, at::Tensor> freq_epilogue(const at::Tensor& y_in, const at::Tensor& weight,
                                                 const c10::optional<at::Tensor>& bias_in,
                                                 const at::Tensor& residual, double nonfinite, bool keep_mask) {
  frequency::check_epilogue(y_in, weight, bias_in, residual);
  const auto y = y_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), Co = weight.size(0), N = y.size(2) * y.size(3);
  auto abs_y = at::empty({B, C, N}, y.options());
  // The 1x1 convolution as one batched GEMM that accumulates onto the residual: out = residual + W |y|.
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_abs_cpu", [&] {
    const auto& k = kernels<scalar_t>();
    const scalar_t* src = y.const_data_ptr<scalar_t>();
    scalar_t* dst = abs_y.data_ptr<scalar_t>();
    at::parallel_for(0, y.numel(), kGrain, [&](int64_t begin, int64_t end) { k.absolute(src, dst, begin, end); });
  });
  auto out = at::baddbmm(residual.reshape({B, Co, N}), weight.expand({B, Co, C}), abs_y).contiguous();
  // The finite mask of the pre-cleanup value, for the backward (g' = g where it was finite). A bool per
  // element costs a quarter of the float32 output; recomputing the pre-cleanup value instead would need
  // the GEMM again (C multiply-adds per element) and the residual, and the output alone cannot tell a
  // replaced value from a computed one equal to `nonfinite`.
  auto finite = keep_mask ? at::empty({B, Co, N}, y.options().dtype(at::kBool)) : at::empty({0}, y.options().dtype(at::kBool));
  const auto bias = bias_in.has_value() ? c10::optional<at::Tensor>(bias_in->contiguous()) : c10::nullopt;
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_cleanup_cpu", [&] {
    const auto& k = kernels<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    bool* f = keep_mask ? finite.data_ptr<bool>() : nullptr;
    const scalar_t* b = optional_data<scalar_t>(bias);
    const scalar_t replacement = static_cast<scalar_t>(nonfinite);
    at::parallel_for(0, B * Co, std::max<int64_t>(1, kGrain / std::max<int64_t>(N, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        k.epilogue_cleanup(o + row * N, b ? b[row % Co] : scalar_t(0), replacement, f ? f + row * N : nullptr, N);
      }
    });
  });
  return {out.view({B, Co, y.size(2), y.size(3)}), finite.numel() ? finite.view({B, Co, y.size(2), y.size(3)}) : finite};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> freq_epilogue_backward(
    const at::Tensor& grad_in, const at::Tensor& y_in, const at::Tensor& weight, const at::Tensor& finite_in,
    bool need_y_grad, bool need_weight_grad, bool need_bias_grad) {
  const char* op = "frequency_epilogue_backward";
  frequency::check_real(op, "grad", grad_in);
  TORCH_CHECK(grad_in.dim() == 4 && finite_in.sizes() == grad_in.sizes() && finite_in.scalar_type() == at::kBool,
              op, ": finite must be a bool tensor of grad's shape [B, Co, H, W]");
  frequency::check_epilogue(y_in, weight, c10::nullopt, grad_in);
  const auto y = y_in.contiguous(), grad = grad_in.contiguous(), finite = finite_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), Co = weight.size(0), N = y.size(2) * y.size(3);
  auto grad_masked = at::empty({B, Co, N}, grad.options());
  auto bias_rows = at::empty({B, Co}, grad.options().dtype(at::kDouble));
  // g' = g·isfinite(pre-cleanup value), and its per-row sums for the bias, in one pass.
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_mask_cpu", [&] {
    const auto& k = kernels<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const bool* f = finite.const_data_ptr<bool>();
    scalar_t* gm = grad_masked.data_ptr<scalar_t>();
    double* rows = bias_rows.data_ptr<double>();
    at::parallel_for(0, B * Co, std::max<int64_t>(1, kGrain / std::max<int64_t>(N, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        rows[row] = k.epilogue_mask_gradient(g + row * N, f + row * N, gm + row * N, N);
      }
    });
  });
  // Distinct empty tensors for the gradients not asked for: a custom op's outputs may not alias.
  at::Tensor grad_y = at::empty({0}, y.options()), grad_weight = at::empty({0}, y.options()),
             grad_bias = at::empty({0}, y.options());
  if (need_bias_grad) grad_bias = bias_rows.sum(0).to(y.scalar_type());
  if (need_weight_grad) {
    auto abs_y = at::empty({B, C, N}, y.options());
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_abs_cpu", [&] {
      const auto& k = kernels<scalar_t>();
      const scalar_t* src = y.const_data_ptr<scalar_t>();
      scalar_t* dst = abs_y.data_ptr<scalar_t>();
      at::parallel_for(0, y.numel(), kGrain, [&](int64_t begin, int64_t end) { k.absolute(src, dst, begin, end); });
    });
    // Σ_b g'_b |y_b|ᵀ: B GEMMs accumulating into one [Co, C] result.
    grad_weight = at::zeros({Co, C}, y.options());
    for (int64_t b = 0; b < B; ++b) grad_weight.addmm_(grad_masked[b], abs_y[b].t());
  }
  if (need_y_grad) {
    grad_y = at::bmm(weight.t().expand({B, C, Co}), grad_masked);  // Wᵀ g'
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_sign_cpu", [&] {
      const auto& k = kernels<scalar_t>();
      const scalar_t* src = y.const_data_ptr<scalar_t>();
      scalar_t* gy = grad_y.data_ptr<scalar_t>();
      at::parallel_for(0, y.numel(), kGrain, [&](int64_t begin, int64_t end) { k.multiply_by_sign(src, gy, begin, end); });
    });
    grad_y = grad_y.view(y.sizes());
  }
  return {grad_y, grad_weight, grad_bias, grad_masked.view(grad.sizes())};
}

}  // namespace mcmri_fast::cpu
