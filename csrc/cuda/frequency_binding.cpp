// Torch binding of the CUDA frequency-branch ops: checks, device guard, stream, outputs, dtype dispatch
// and the epilogue's GEMMs (ATen, i.e. cuBLAS); the pointwise kernels and their launchers are in
// frequency.cu (no torch headers there).
#include "frequency_binding.h"

#include <type_traits>
#include <vector>

// c10's stream and guard headers (ATen/cuda/CUDAContext.h would pull in cuBLAS / cuSPARSE headers for
// nothing): c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream returns.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_types.h"
#include "../frequency_args.h"
#include "frequency_launch.h"

namespace mcmri_fast::cuda {
namespace {

static_assert(sizeof(bool) == sizeof(uint8_t));

template <typename scalar_t>
const scalar_t* optional_data(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

void check_cuda(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.is_cuda(), op, ": expected CUDA tensors, got ", t.device());
}

// The shared checks, and CUDA tensors (the others match the amplitude's device).
void check_polar_inputs(const char* op, const at::Tensor& amplitude, const at::Tensor& phase,
                        const c10::optional<at::Tensor>& amplitude_residual,
                        const c10::optional<at::Tensor>& phase_residual) {
  frequency::check_polar_inputs(op, amplitude, phase, amplitude_residual, phase_residual);
  check_cuda(op, amplitude);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> freq_spectrum_to_polar(const at::Tensor& spectrum_in,
                                                          c10::optional<int64_t> signal_width) {
  const char* op = "spectrum_to_polar";
  frequency::check_complex(op, spectrum_in);
  const auto bins = frequency::check_signal_width(op, spectrum_in, signal_width);
  check_cuda(op, spectrum_in);
  c10::cuda::CUDAGuard guard(spectrum_in.device());
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto real_options = spectrum.options().dtype(c10::toRealValueType(spectrum.scalar_type()));
  auto amplitude = at::empty(spectrum.sizes(), real_options);
  auto phase = at::empty(spectrum.sizes(), real_options);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_spectrum_to_polar_cuda", [&] {
    C10_CUDA_CHECK(launch_spectrum_to_polar_fwd(vec_cptr<scalar_t>(spectrum), amplitude.data_ptr<scalar_t>(),
                                                phase.data_ptr<scalar_t>(), spectrum.numel(), bins, stream));
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
  if (grad_amplitude_in.has_value()) frequency::check_real_of(op, "grad_amplitude", *grad_amplitude_in, spectrum_in);
  if (grad_phase_in.has_value()) frequency::check_real_of(op, "grad_phase", *grad_phase_in, spectrum_in);
  check_cuda(op, spectrum_in);
  c10::cuda::CUDAGuard guard(spectrum_in.device());
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto grad_amplitude = frequency::contiguous(grad_amplitude_in);  // a stride-0 gradient is materialised here
  const auto grad_phase = frequency::contiguous(grad_phase_in);
  auto grad_spectrum = at::empty(spectrum.sizes(), spectrum.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(spectrum.scalar_type()), "freq_spectrum_to_polar_backward_cuda", [&] {
    C10_CUDA_CHECK(launch_spectrum_to_polar_bwd(vec_cptr<scalar_t>(spectrum), optional_data<scalar_t>(grad_amplitude),
                                                optional_data<scalar_t>(grad_phase), vec_ptr<scalar_t>(grad_spectrum),
                                                spectrum.numel(), bins, stream));
  });
  return grad_spectrum;
}

at::Tensor freq_polar_to_spectrum(const at::Tensor& amplitude_in, const at::Tensor& phase_in,
                                  const c10::optional<at::Tensor>& amplitude_residual_in,
                                  const c10::optional<at::Tensor>& phase_residual_in, double eps) {
  check_polar_inputs("polar_to_spectrum", amplitude_in, phase_in, amplitude_residual_in, phase_residual_in);
  c10::cuda::CUDAGuard guard(amplitude_in.device());
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = frequency::contiguous(amplitude_residual_in), phase_residual = frequency::contiguous(phase_residual_in);
  auto spectrum = at::empty(amplitude.sizes(), amplitude.options().dtype(c10::toComplexType(amplitude.scalar_type())));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_polar_to_spectrum_cuda", [&] {
    C10_CUDA_CHECK(launch_polar_to_spectrum_fwd(
        amplitude.const_data_ptr<scalar_t>(), phase.const_data_ptr<scalar_t>(),
        optional_data<scalar_t>(amplitude_residual), optional_data<scalar_t>(phase_residual),
        static_cast<scalar_t>(eps), vec_ptr<scalar_t>(spectrum), amplitude.numel(), stream));
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
  c10::cuda::CUDAGuard guard(amplitude_in.device());
  const auto grad = grad_in.resolve_conj().contiguous();
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = frequency::contiguous(amplitude_residual_in), phase_residual = frequency::contiguous(phase_residual_in);
  auto grad_amplitude = at::empty(amplitude.sizes(), amplitude.options());
  auto grad_phase = at::empty(amplitude.sizes(), amplitude.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_polar_to_spectrum_backward_cuda", [&] {
    C10_CUDA_CHECK(launch_polar_to_spectrum_bwd(
        vec_cptr<scalar_t>(grad), amplitude.const_data_ptr<scalar_t>(), phase.const_data_ptr<scalar_t>(),
        optional_data<scalar_t>(amplitude_residual), optional_data<scalar_t>(phase_residual),
        grad_amplitude.data_ptr<scalar_t>(), grad_phase.data_ptr<scalar_t>(), amplitude.numel(), stream));
  });
  return {grad_amplitude, grad_phase};
}

std::tuple<at::Tensor, at::Tensor> freq_epilogue(const at::Tensor& y_in, const at::Tensor& weight,
                                                 const c10::optional<at::Tensor>& bias_in,
                                                 const at::Tensor& residual, double nonfinite, bool keep_mask) {
  frequency::check_epilogue(y_in, weight, bias_in, residual);
  check_cuda("frequency_epilogue", y_in);
  c10::cuda::CUDAGuard guard(y_in.device());
  const auto y = y_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), Co = weight.size(0), N = y.size(2) * y.size(3);
  // The 1x1 convolution as one batched cuBLAS GEMM accumulating onto the residual: out = residual + W |y|.
  auto out = at::baddbmm(residual.reshape({B, Co, N}), weight.expand({B, Co, C}), at::abs(y).view({B, C, N}))
                 .contiguous();
  // The finite mask of the pre-cleanup value for the backward: see csrc/cpu/frequency.cpp for why a mask.
  const std::vector<int64_t> finite_shape =
      keep_mask ? std::vector<int64_t>{B, Co, y.size(2), y.size(3)} : std::vector<int64_t>{0};
  auto finite = at::empty(finite_shape, y.options().dtype(at::kBool));
  const auto bias = frequency::contiguous(bias_in);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_cuda", [&] {
    C10_CUDA_CHECK(launch_epilogue_cleanup(
        out.data_ptr<scalar_t>(), optional_data<scalar_t>(bias), static_cast<scalar_t>(nonfinite),
        keep_mask ? reinterpret_cast<uint8_t*>(finite.data_ptr<bool>()) : nullptr, B * Co, Co, N, stream));
  });
  return {out.view({B, Co, y.size(2), y.size(3)}), finite};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> freq_epilogue_backward(
    const at::Tensor& grad_in, const at::Tensor& y_in, const at::Tensor& weight, const at::Tensor& finite_in,
    bool need_y_grad, bool need_weight_grad, bool need_bias_grad) {
  const char* op = "frequency_epilogue_backward";
  frequency::check_real(op, "grad", grad_in);
  TORCH_CHECK(grad_in.dim() == 4 && finite_in.sizes() == grad_in.sizes() && finite_in.scalar_type() == at::kBool &&
                  finite_in.device() == grad_in.device(),
              op, ": finite must be a bool tensor of grad's shape [B, Co, H, W]");
  frequency::check_epilogue(y_in, weight, c10::nullopt, grad_in);
  check_cuda(op, y_in);
  c10::cuda::CUDAGuard guard(y_in.device());
  const auto y = y_in.contiguous(), grad = grad_in.contiguous(), finite = finite_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), Co = weight.size(0), N = y.size(2) * y.size(3);
  auto grad_masked = at::empty({B, Co, N}, grad.options());
  auto row_sums = at::empty({B, Co}, grad.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // g' = g·isfinite(pre-cleanup value) and its per-row sums for the bias, in one pass.
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_backward_cuda", [&] {
    C10_CUDA_CHECK(launch_epilogue_mask_gradient(
        grad.const_data_ptr<scalar_t>(), reinterpret_cast<const uint8_t*>(finite.const_data_ptr<bool>()),
        grad_masked.data_ptr<scalar_t>(), row_sums.data_ptr<scalar_t>(), B * Co, N, stream));
  });
  // Distinct empty tensors for the gradients not asked for: a custom op's outputs may not alias.
  at::Tensor grad_y = at::empty({0}, y.options()), grad_weight = at::empty({0}, y.options()),
             grad_bias = at::empty({0}, y.options());
  if (need_bias_grad) grad_bias = row_sums.sum(0);
  if (need_weight_grad) {
    // Σ_b g'_b |y_b|ᵀ: one batched GEMM, then a sum over the (few) samples.
    grad_weight = at::bmm(grad_masked, at::abs(y).view({B, C, N}).transpose(1, 2)).sum(0);
  }
  if (need_y_grad) {
    grad_y = at::bmm(weight.t().expand({B, C, Co}), grad_masked);  // Wᵀ g'
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_sign_cuda", [&] {
      C10_CUDA_CHECK(launch_multiply_by_sign(y.const_data_ptr<scalar_t>(), grad_y.data_ptr<scalar_t>(), y.numel(),
                                             stream));
    });
    grad_y = grad_y.view(y.sizes());
  }
  return {grad_y, grad_weight, grad_bias, grad_masked.view(grad.sizes())};
}

}  // namespace mcmri_fast::cuda
