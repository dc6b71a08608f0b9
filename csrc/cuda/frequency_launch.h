// Launchers of the CUDA kernels of the frequency-branch ops (csrc/cuda/frequency.cu). Plain C++ with raw
// pointers, so that the .cu file compiles without the torch headers; the torch binding
// (frequency_binding.cpp) checks the tensors, runs the GEMMs of the epilogue (cuBLAS through ATen) and
// calls these for the pointwise passes around them.
//
// All buffers are contiguous. Complex data are float2 / double2 (interleaved re, im: the layout of
// c10::complex<float / double>). Optional inputs are nullptr when absent (counted as zero). Every
// launcher returns the launch error (cudaGetLastError), cudaSuccess when there is nothing to do.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "../frequency_bins.h"

namespace mcmri_fast::cuda {

// amplitude[i] = |z[i]|, phase[i] = atan2(Im z[i], Re z[i]), i < n; Im z counts as +0 at the self-conjugate
// bins when bins.active().
cudaError_t launch_spectrum_to_polar_fwd(const float2* z, float* amplitude, float* phase, int64_t n,
                                         frequency::SelfConjugateBins bins, cudaStream_t stream);
cudaError_t launch_spectrum_to_polar_fwd(const double2* z, double* amplitude, double* phase, int64_t n,
                                         frequency::SelfConjugateBins bins, cudaStream_t stream);

// grad_z = (z/|z|)(g_a + i g_p/|z|), 0 where z == 0; grad_amplitude / grad_phase may be nullptr. At the
// self-conjugate bins (bins.active()) z counts as (Re z, +0) and Im grad_z is 0.
cudaError_t launch_spectrum_to_polar_bwd(const float2* z, const float* grad_amplitude, const float* grad_phase,
                                         float2* grad_z, int64_t n, frequency::SelfConjugateBins bins,
                                         cudaStream_t stream);
cudaError_t launch_spectrum_to_polar_bwd(const double2* z, const double* grad_amplitude, const double* grad_phase,
                                         double2* grad_z, int64_t n, frequency::SelfConjugateBins bins,
                                         cudaStream_t stream);

// z = a cos p + 2 eps + i (a sin p + eps), a = amplitude (+ amplitude_residual), p = phase (+ phase_residual).
cudaError_t launch_polar_to_spectrum_fwd(const float* amplitude, const float* phase, const float* amplitude_residual,
                                         const float* phase_residual, float eps, float2* z, int64_t n,
                                         cudaStream_t stream);
cudaError_t launch_polar_to_spectrum_fwd(const double* amplitude, const double* phase,
                                         const double* amplitude_residual, const double* phase_residual, double eps,
                                         double2* z, int64_t n, cudaStream_t stream);

// grad_amplitude = g_re cos p + g_im sin p, grad_phase = a (g_im cos p - g_re sin p).
cudaError_t launch_polar_to_spectrum_bwd(const float2* grad, const float* amplitude, const float* phase,
                                         const float* amplitude_residual, const float* phase_residual,
                                         float* grad_amplitude, float* grad_phase, int64_t n, cudaStream_t stream);
cudaError_t launch_polar_to_spectrum_bwd(const double2* grad, const double* amplitude, const double* phase,
                                         const double* amplitude_residual, const double* phase_residual,
                                         double* grad_amplitude, double* grad_phase, int64_t n, cudaStream_t stream);

// The epilogue after its GEMM, in place on out [rows = B * Co, N]: v = out + bias[row % Co] (bias may be
// nullptr); finite = isfinite(v) (written when finite != nullptr, uint8 0/1, the layout of bool);
// out = v, or `nonfinite` where v is not finite.
cudaError_t launch_epilogue_cleanup(float* out, const float* bias, float nonfinite, uint8_t* finite, int64_t rows,
                                    int64_t Co, int64_t N, cudaStream_t stream);
cudaError_t launch_epilogue_cleanup(double* out, const double* bias, double nonfinite, uint8_t* finite, int64_t rows,
                                    int64_t Co, int64_t N, cudaStream_t stream);

// The epilogue's backward pointwise pass over [rows, N]: grad_masked = grad·finite, and per row the sum
// of grad_masked (the bias gradient's partial sums, one block per row: deterministic) into row_sums [rows].
cudaError_t launch_epilogue_mask_gradient(const float* grad, const uint8_t* finite, float* grad_masked,
                                          float* row_sums, int64_t rows, int64_t N, cudaStream_t stream);
cudaError_t launch_epilogue_mask_gradient(const double* grad, const uint8_t* finite, double* grad_masked,
                                          double* row_sums, int64_t rows, int64_t N, cudaStream_t stream);

// grad_y <- sign(y) grad_y in place (0 at y == 0 and at nan, as torch.sign).
cudaError_t launch_multiply_by_sign(const float* y, float* grad_y, int64_t n, cudaStream_t stream);
cudaError_t launch_multiply_by_sign(const double* y, double* grad_y, int64_t n, cudaStream_t stream);

}  // namespace mcmri_fast::cuda
