// The table of the frequency ops' pointwise CPU kernels (frequency_kernels.h) of one instruction set.
// Free of ATen headers: avx2_kernels.cpp, compiled for AVX2, fills one; frequency.cpp, compiled for
// the baseline, fills the other and picks between them at run time (see cpu_isa.h).
#pragma once
#include <cstdint>

namespace mcmri_fast::cpu {

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

// The AVX2 build (avx2_kernels.cpp); only call it where use_avx2_kernels().
template <typename scalar_t>
const FrequencyKernels<scalar_t>& frequency_kernels_avx2();

}  // namespace mcmri_fast::cpu

// Fills a FrequencyKernels<scalar_t> with the functions of namespace `isa` (in an including .cpp file).
#define MCMRI_FAST_FREQUENCY_KERNEL_TABLE(isa, scalar_t)                                                     \
  ::mcmri_fast::cpu::FrequencyKernels<scalar_t> {                                                            \
    &isa::spectrum_to_polar<scalar_t>, &isa::spectrum_to_polar_backward<scalar_t>,                           \
        &isa::polar_to_spectrum<scalar_t>, &isa::polar_to_spectrum_backward<scalar_t>,                       \
        &isa::epilogue_cleanup<scalar_t>, &isa::epilogue_mask_gradient<scalar_t>,                            \
        &isa::multiply_by_sign<scalar_t>, &isa::absolute<scalar_t>                                           \
  }
