// Checks of the frequency ops' native entry points (csrc/frequency_ops.cpp), shared by the CPU and the
// CUDA implementations. The Python API validates what users pass and brings the inputs to these forms;
// these checks keep a kernel from reading out of bounds whatever it is called with.
#pragma once
#include <ATen/ATen.h>

#include "frequency_bins.h"

namespace mcmri_fast::frequency {

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

// The polar recombination's operands: amplitude (float32 or float64), phase and the optional residuals
// all alike in shape, dtype and device.
inline void check_polar_inputs(const char* op, const at::Tensor& amplitude, const at::Tensor& phase,
                               const c10::optional<at::Tensor>& amplitude_residual,
                               const c10::optional<at::Tensor>& phase_residual) {
  check_real(op, "amplitude", amplitude);
  check_same(op, "phase", phase, amplitude);
  if (amplitude_residual.has_value()) check_same(op, "amplitude_residual", *amplitude_residual, amplitude);
  if (phase_residual.has_value()) check_same(op, "phase_residual", *phase_residual, amplitude);
}

inline c10::optional<at::Tensor> contiguous(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt;
}

// The epilogue's operands: y [B, C, H, W], weight [Co, C], bias [Co] (optional), residual [B, Co, H, W],
// all of y's dtype (float32 or float64) and device.
inline void check_epilogue(const at::Tensor& y, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                           const at::Tensor& residual) {
  const char* op = "frequency_epilogue";
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

}  // namespace mcmri_fast::frequency
