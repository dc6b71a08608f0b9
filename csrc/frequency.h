// The contract of the frequency-branch C++ ops (FSMNet's FreBlock; the public ops and their autograd:
// mcmri_fast/ops/frequency.py): schemas and the checks every backend runs (csrc/cpu/frequency.cpp,
// csrc/cuda/frequency.cu; the Triton twins in kernels/frequency.py are only called by the ops, which have
// checked their arguments). The checks keep a kernel from reading out of bounds whatever it is called with.
// All tensors of one call share a device and a precision (float32 / complex64 or float64 / complex128);
// any strides are accepted (made contiguous).
#pragma once
#include <ATen/ATen.h>

#include "frequency_bins.h"
#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(frequency) {
  // spectrum_to_polar: (|z|, atan2(Im z, Re z)) of a complex tensor; backward: grad_z = (z/|z|)(g_a + i g_p/|z|),
  // 0 at z = 0, an absent gradient counting as zero. With signal_width, Im z counts as +0 at the
  // self-conjugate bins of the rfft2 half spectrum (csrc/frequency_bins.h) and gets no gradient there.
  m.def("freq_spectrum_to_polar(Tensor spectrum, int? signal_width) -> (Tensor, Tensor)");
  m.def(
      "freq_spectrum_to_polar_backward(Tensor spectrum, Tensor? grad_amplitude, Tensor? grad_phase, "
      "int? signal_width) -> Tensor");
  // polar_to_spectrum: z = a cos p + 2 eps + i (a sin p + eps), a = amplitude (+ amplitude_residual),
  // p = phase (+ phase_residual); backward: (grad_a, grad_p) = (g_re cos p + g_im sin p, a (g_im cos p - g_re sin p)),
  // the residuals' too.
  m.def(
      "freq_polar_to_spectrum(Tensor amplitude, Tensor phase, Tensor? amplitude_residual, Tensor? phase_residual, "
      "float eps) -> Tensor");
  m.def(
      "freq_polar_to_spectrum_backward(Tensor grad, Tensor amplitude, Tensor phase, Tensor? amplitude_residual, "
      "Tensor? phase_residual) -> (Tensor, Tensor)");
  // frequency_epilogue: out = nan_to_num(W |y| + bias + residual, nonfinite) with y [B, C, H, W], weight [Co, C],
  // bias [Co], residual [B, Co, H, W]; returns (out, finite), finite the bool mask of the finite pre-cleanup
  // values when keep_mask (empty otherwise). The backward returns (grad_y, grad_weight, grad_bias,
  // grad_residual), the first three empty unless asked for.
  m.def(
      "freq_epilogue(Tensor y, Tensor weight, Tensor? bias, Tensor residual, float nonfinite, bool keep_mask) "
      "-> (Tensor, Tensor)");
  m.def(
      "freq_epilogue_backward(Tensor grad, Tensor y, Tensor weight, Tensor finite, bool need_y_grad, "
      "bool need_weight_grad, bool need_bias_grad) -> (Tensor, Tensor, Tensor, Tensor)");
}

namespace frequency {

inline void check_same(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type() && t.device() == like.device(), op,
              ": ", name, " must match the first input in shape, dtype and device, got ", t.sizes(), " ",
              t.scalar_type(), " on ", t.device());
}

inline void check_real(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

inline void check_complex(const char* op, const at::Tensor& spectrum) {
  TORCH_CHECK(spectrum.scalar_type() == at::kComplexFloat || spectrum.scalar_type() == at::kComplexDouble, op,
              ": spectrum must be complex64 or complex128, got ", spectrum.scalar_type());
}

// The self-conjugate bins to treat as real (none without a signal width); the spectrum's last size must
// be signal_width / 2 + 1.
inline SelfConjugateBins check_signal_width(const char* op, const at::Tensor& spectrum,
                                            c10::optional<int64_t> signal_width) {
  if (!signal_width.has_value()) return {};
  TORCH_CHECK(spectrum.dim() >= 2 && *signal_width >= 1 && spectrum.size(-1) == *signal_width / 2 + 1, op,
              ": the spectrum's last size must be signal_width / 2 + 1 = ", *signal_width / 2 + 1, ", got spectrum ",
              spectrum.sizes());
  return self_conjugate_bins(spectrum.size(-2), *signal_width);
}

// The real tensor matching a complex one (its dtype's real type, same shape and device).
inline void check_real_of(const char* op, const char* name, const at::Tensor& t, const at::Tensor& spectrum) {
  TORCH_CHECK(t.sizes() == spectrum.sizes() && t.scalar_type() == c10::toRealValueType(spectrum.scalar_type()) &&
                  t.device() == spectrum.device(),
              op, ": ", name, " must be a real tensor of the spectrum's shape and precision on its device");
}

// spectrum_to_polar's operands: the spectrum, and in the backward the gradients given. Returns the bins.
inline SelfConjugateBins check_spectrum_to_polar(const char* op, const at::Tensor& spectrum,
                                                 c10::optional<int64_t> signal_width,
                                                 const c10::optional<at::Tensor>& grad_amplitude = c10::nullopt,
                                                 const c10::optional<at::Tensor>& grad_phase = c10::nullopt) {
  check_complex(op, spectrum);
  const auto bins = check_signal_width(op, spectrum, signal_width);
  if (grad_amplitude.has_value()) check_real_of(op, "grad_amplitude", *grad_amplitude, spectrum);
  if (grad_phase.has_value()) check_real_of(op, "grad_phase", *grad_phase, spectrum);
  return bins;
}

// The polar recombination's operands: amplitude (float32 or float64), phase and the optional residuals
// all alike in shape, dtype and device; in the backward, grad the complex tensor of the amplitude's
// shape and precision.
inline void check_polar_inputs(const char* op, const at::Tensor& amplitude, const at::Tensor& phase,
                               const c10::optional<at::Tensor>& amplitude_residual,
                               const c10::optional<at::Tensor>& phase_residual, const at::Tensor* grad = nullptr) {
  check_real(op, "amplitude", amplitude);
  check_same(op, "phase", phase, amplitude);
  if (amplitude_residual.has_value()) check_same(op, "amplitude_residual", *amplitude_residual, amplitude);
  if (phase_residual.has_value()) check_same(op, "phase_residual", *phase_residual, amplitude);
  if (grad != nullptr) {
    check_complex(op, *grad);
    check_real_of(op, "amplitude", amplitude, *grad);
  }
}

// The epilogue's operands: y [B, C, H, W], weight [Co, C], bias [Co] (optional), residual [B, Co, H, W],
// all of y's dtype (float32 or float64) and device.
inline void check_epilogue(const char* op, const at::Tensor& y, const at::Tensor& weight,
                           const c10::optional<at::Tensor>& bias, const at::Tensor& residual) {
  check_real(op, "y", y);
  TORCH_CHECK(y.dim() == 4, op, ": y must be [B, C, H, W], got ", y.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == y.size(1) && weight.scalar_type() == y.scalar_type() &&
                  weight.device() == y.device(),
              op, ": weight must be [Co, C] of y's dtype and device, got ", weight.sizes(), " ", weight.scalar_type());
  const int64_t Co = weight.size(0);
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == Co && bias->scalar_type() == y.scalar_type() &&
                    bias->device() == y.device(),
                op, ": bias must be [Co] of y's dtype and device, got ", bias->sizes());
  }
  TORCH_CHECK(residual.dim() == 4 && residual.size(0) == y.size(0) && residual.size(1) == Co &&
                  residual.size(2) == y.size(2) && residual.size(3) == y.size(3) &&
                  residual.scalar_type() == y.scalar_type() && residual.device() == y.device(),
              op, ": residual must be [B, Co, H, W] of y's dtype and device, got ", residual.sizes());
}

// The epilogue backward's operands: grad in the residual's place, and finite the bool mask of grad's shape.
inline void check_epilogue_backward(const at::Tensor& grad, const at::Tensor& y, const at::Tensor& weight,
                                    const at::Tensor& finite) {
  const char* op = "frequency_epilogue_backward";
  check_real(op, "grad", grad);
  TORCH_CHECK(grad.dim() == 4 && finite.sizes() == grad.sizes() && finite.scalar_type() == at::kBool &&
                  finite.device() == grad.device(),
              op, ": finite must be a bool tensor of grad's shape [B, Co, H, W]");
  check_epilogue(op, y, weight, c10::nullopt, grad);
}

inline c10::optional<at::Tensor> contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

// The data of an optional tensor, nullptr when absent (the kernels count it as zero).
template <typename scalar_t>
const scalar_t* optional_data(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? t->const_data_ptr<scalar_t>() : nullptr;
}

}  // namespace frequency
}  // namespace mcmri_fast
