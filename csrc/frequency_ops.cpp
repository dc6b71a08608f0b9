// Schemas of the frequency-branch ops (FSMNet's FreBlock; see mcmri_fast/ops/frequency.py) and the
// registration of their CPU and CUDA implementations. All tensors of one call share a device and a
// precision (float32 / complex64 or float64 / complex128); any strides are accepted (made contiguous).
#include <ATen/ATen.h>
#include <torch/library.h>

#include "cpu/frequency.h"
#ifdef MCMRI_FAST_WITH_CUDA
#include "cuda/frequency_binding.h"
#endif

TORCH_LIBRARY_FRAGMENT(mcmri_fast, m) {
  // (|z|, atan2(Im z, Re z)) of a complex tensor; backward: grad_z = (z/|z|)(g_a + i g_p/|z|), 0 at z = 0,
  // an absent gradient counting as zero. With signal_width, Im z counts as +0 at the self-conjugate bins
  // of the rfft2 half spectrum (csrc/frequency_bins.h) and gets no gradient there.
  m.def("freq_spectrum_to_polar(Tensor spectrum, int? signal_width) -> (Tensor, Tensor)");
  m.def(
      "freq_spectrum_to_polar_backward(Tensor spectrum, Tensor? grad_amplitude, Tensor? grad_phase, "
      "int? signal_width) -> Tensor");
  // z = a cos p + 2 eps + i (a sin p + eps), a = amplitude (+ amplitude_residual), p = phase (+ phase_residual);
  // backward: (grad_a, grad_p) = (g_re cos p + g_im sin p, a (g_im cos p - g_re sin p)), the residuals' too.
  m.def(
      "freq_polar_to_spectrum(Tensor amplitude, Tensor phase, Tensor? amplitude_residual, Tensor? phase_residual, "
      "float eps) -> Tensor");
  m.def(
      "freq_polar_to_spectrum_backward(Tensor grad, Tensor amplitude, Tensor phase, Tensor? amplitude_residual, "
      "Tensor? phase_residual) -> (Tensor, Tensor)");
  // out = nan_to_num(W |y| + bias + residual, nonfinite) with y [B, C, H, W], weight [Co, C], bias [Co],
  // residual [B, Co, H, W]; returns (out, finite), finite the bool mask of the finite pre-cleanup values
  // when keep_mask (empty otherwise). The backward returns (grad_y, grad_weight, grad_bias, grad_residual),
  // the first three empty unless asked for.
  m.def(
      "freq_epilogue(Tensor y, Tensor weight, Tensor? bias, Tensor residual, float nonfinite, bool keep_mask) "
      "-> (Tensor, Tensor)");
  m.def(
      "freq_epilogue_backward(Tensor grad, Tensor y, Tensor weight, Tensor finite, bool need_y_grad, "
      "bool need_weight_grad, bool need_bias_grad) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("freq_spectrum_to_polar", &mcmri_fast::cpu::freq_spectrum_to_polar);
  m.impl("freq_spectrum_to_polar_backward", &mcmri_fast::cpu::freq_spectrum_to_polar_backward);
  m.impl("freq_polar_to_spectrum", &mcmri_fast::cpu::freq_polar_to_spectrum);
  m.impl("freq_polar_to_spectrum_backward", &mcmri_fast::cpu::freq_polar_to_spectrum_backward);
  m.impl("freq_epilogue", &mcmri_fast::cpu::freq_epilogue);
  m.impl("freq_epilogue_backward", &mcmri_fast::cpu::freq_epilogue_backward);
}

#ifdef MCMRI_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("freq_spectrum_to_polar", &mcmri_fast::cuda::freq_spectrum_to_polar);
  m.impl("freq_spectrum_to_polar_backward", &mcmri_fast::cuda::freq_spectrum_to_polar_backward);
  m.impl("freq_polar_to_spectrum", &mcmri_fast::cuda::freq_polar_to_spectrum);
  m.impl("freq_polar_to_spectrum_backward", &mcmri_fast::cuda::freq_polar_to_spectrum_backward);
  m.impl("freq_epilogue", &mcmri_fast::cuda::freq_epilogue);
  m.impl("freq_epilogue_backward", &mcmri_fast::cuda::freq_epilogue_backward);
}
#endif
