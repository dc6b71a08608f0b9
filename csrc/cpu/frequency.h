#pragma once
#include <ATen/ATen.h>

// CPU implementations of the frequency-branch ops (schemas in csrc/frequency_ops.cpp).
namespace mcmri_fast::cpu {

std::tuple<at::Tensor, at::Tensor> freq_spectrum_to_polar(const at::Tensor& spectrum,
                                                          c10::optional<int64_t> signal_width);
at::Tensor freq_spectrum_to_polar_backward(const at::Tensor& spectrum, const c10::optional<at::Tensor>& grad_amplitude,
                                           const c10::optional<at::Tensor>& grad_phase,
                                           c10::optional<int64_t> signal_width);
at::Tensor freq_polar_to_spectrum(const at::Tensor& amplitude, const at::Tensor& phase,
                                  const c10::optional<at::Tensor>& amplitude_residual,
                                  const c10::optional<at::Tensor>& phase_residual, double eps);
std::tuple<at::Tensor, at::Tensor> freq_polar_to_spectrum_backward(const at::Tensor& grad, const at::Tensor& amplitude,
                                                                   const at::Tensor& phase,
                                                                   const c10::optional<at::Tensor>& amplitude_residual,
                                                                   const c10::optional<at::Tensor>& phase_residual);
std::tuple<at::Tensor, at::Tensor> freq_epilogue(const at::Tensor& y, const at::Tensor& weight,
                                                 const c10::optional<at::Tensor>& bias, const at::Tensor& residual,
                                                 double nonfinite, bool keep_mask);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> freq_epilogue_backward(
    const at::Tensor& grad, const at::Tensor& y, const at::Tensor& weight, const at::Tensor& finite, bool need_y_grad,
    bool need_weight_grad, bool need_bias_grad);

}  // namespace mcmri_fast::cpu
