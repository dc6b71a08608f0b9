// CUDA kernels of the frequency-branch ops' pointwise passes (the CPU code in csrc/cpu/frequency_kernels.h
// is the reference). Memory-bound elementwise work over flat contiguous buffers: grid-stride loops of
// 256 threads, one element per thread per step (float2 / double2 loads of the complex buffers coalesce).
// The epilogue's backward reduces one row per block (shared-memory tree, fixed order: deterministic).
// No torch headers here: the binding is frequency_binding.cpp. Nothing in it needs sm_80+.
#include <cstdint>

#include <cuda_runtime.h>

#include "complex_vec.h"
#include "frequency_launch.h"

namespace mcmri_fast::cuda {
namespace {

constexpr int kThreads = 256;
// Enough blocks to fill any current GPU several times over; the grid-stride loops cover the rest.
constexpr int64_t kMaxBlocks = 65535;

__device__ __forceinline__ float atan2_of(float y, float x) { return atan2f(y, x); }
__device__ __forceinline__ double atan2_of(double y, double x) { return atan2(y, x); }
__device__ __forceinline__ void sincos_of(float p, float* s, float* c) { sincosf(p, s, c); }
__device__ __forceinline__ void sincos_of(double p, double* s, double* c) { sincos(p, s, c); }

template <typename T>
__device__ __forceinline__ T load_or_zero(const T* p, int64_t i) {
  return p != nullptr ? p[i] : T(0);
}

int blocks_for(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

#define FREQ_GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n);         \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

// z[i], its imaginary part +0 at the self-conjugate bins (the integer test only runs when bins are given).
template <typename T>
__device__ __forceinline__ vec_t<T> load_spectrum(const vec_t<T>* z, int64_t i, bool at_bin) {
  vec_t<T> v = z[i];
  if (at_bin) v.y = T(0);
  return v;
}

template <typename T>
__global__ void spectrum_to_polar_fwd_kernel(const vec_t<T>* __restrict__ z, T* __restrict__ amplitude,
                                             T* __restrict__ phase, int64_t n, frequency::SelfConjugateBins bins) {
  FREQ_GRID_STRIDE(i, n) {
    const vec_t<T> v = load_spectrum<T>(z, i, bins.active() && bins.contains(i));
    amplitude[i] = sqrt(v.x * v.x + v.y * v.y);
    phase[i] = atan2_of(v.y, v.x);
  }
}

template <typename T>
__global__ void spectrum_to_polar_bwd_kernel(const vec_t<T>* __restrict__ z, const T* __restrict__ grad_amplitude,
                                             const T* __restrict__ grad_phase, vec_t<T>* __restrict__ grad_z,
                                             int64_t n, frequency::SelfConjugateBins bins) {
  FREQ_GRID_STRIDE(i, n) {
    const bool at_bin = bins.active() && bins.contains(i);
    const vec_t<T> v = load_spectrum<T>(z, i, at_bin);
    const T r2 = v.x * v.x + v.y * v.y;
    vec_t<T> g;
    if (r2 == T(0)) {
      g.x = T(0);
      g.y = T(0);
    } else {
      const T s = load_or_zero(grad_amplitude, i) / sqrt(r2);
      const T t = load_or_zero(grad_phase, i) / r2;
      g.x = s * v.x - t * v.y;
      g.y = at_bin ? T(0) : s * v.y + t * v.x;  // the discarded imaginary part gets no gradient
    }
    grad_z[i] = g;
  }
}

template <typename T>
__device__ __forceinline__ void polar_operands(const T* amplitude, const T* phase, const T* amplitude_residual,
                                               const T* phase_residual, int64_t i, T& a, T& p) {
  a = amplitude[i];
  p = phase[i];
  if (amplitude_residual != nullptr) a += amplitude_residual[i];
  if (phase_residual != nullptr) p += phase_residual[i];
}

template <typename T>
__global__ void polar_to_spectrum_fwd_kernel(const T* __restrict__ amplitude, const T* __restrict__ phase,
                                             const T* __restrict__ amplitude_residual,
                                             const T* __restrict__ phase_residual, T eps, vec_t<T>* __restrict__ z,
                                             int64_t n) {
  FREQ_GRID_STRIDE(i, n) {
    T a, p, s, c;
    polar_operands(amplitude, phase, amplitude_residual, phase_residual, i, a, p);
    sincos_of(p, &s, &c);
    vec_t<T> out;
    out.x = (a * c + eps) + eps;  // eps twice on the real part, as the reference adds it
    out.y = a * s + eps;
    z[i] = out;
  }
}

template <typename T>
__global__ void polar_to_spectrum_bwd_kernel(const vec_t<T>* __restrict__ grad, const T* __restrict__ amplitude,
                                             const T* __restrict__ phase, const T* __restrict__ amplitude_residual,
                                             const T* __restrict__ phase_residual, T* __restrict__ grad_amplitude,
                                             T* __restrict__ grad_phase, int64_t n) {
  FREQ_GRID_STRIDE(i, n) {
    T a, p, s, c;
    polar_operands(amplitude, phase, amplitude_residual, phase_residual, i, a, p);
    sincos_of(p, &s, &c);
    const vec_t<T> g = grad[i];
    grad_amplitude[i] = g.x * c + g.y * s;
    grad_phase[i] = a * (g.y * c - g.x * s);
  }
}

template <typename T>
__global__ void epilogue_cleanup_kernel(T* __restrict__ out, const T* __restrict__ bias, T nonfinite,
                                        uint8_t* __restrict__ finite, int64_t Co, int64_t N, int64_t n) {
  FREQ_GRID_STRIDE(i, n) {
    const T v = out[i] + (bias != nullptr ? bias[(i / N) % Co] : T(0));
    const bool ok = isfinite(v);
    out[i] = ok ? v : nonfinite;
    if (finite != nullptr) finite[i] = ok ? 1 : 0;
  }
}

// One block per row: g' = g·finite over the row, and the row's sum of g'.
template <typename T>
__global__ void epilogue_mask_gradient_kernel(const T* __restrict__ grad, const uint8_t* __restrict__ finite,
                                              T* __restrict__ grad_masked, T* __restrict__ row_sums, int64_t rows,
                                              int64_t N) {
  __shared__ T partial[kThreads];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t base = row * N;
    T sum = 0;
    for (int64_t j = threadIdx.x; j < N; j += blockDim.x) {
      const T g = finite[base + j] ? grad[base + j] : T(0);
      grad_masked[base + j] = g;
      sum += g;
    }
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int stride = kThreads / 2; stride > 0; stride /= 2) {
      if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
      __syncthreads();
    }
    if (threadIdx.x == 0) row_sums[row] = partial[0];
    __syncthreads();  // partial is reused by the next row
  }
}

template <typename T>
__global__ void multiply_by_sign_kernel(const T* __restrict__ y, T* __restrict__ grad_y, int64_t n) {
  FREQ_GRID_STRIDE(i, n) {
    const T v = y[i];
    const T sign = v > T(0) ? T(1) : (v < T(0) ? T(-1) : T(0));  // nan compares false: 0, as torch.sign
    grad_y[i] = sign * grad_y[i];
  }
}

#undef FREQ_GRID_STRIDE

template <typename T>
cudaError_t spectrum_to_polar_fwd(const vec_t<T>* z, T* amplitude, T* phase, int64_t n,
                                  frequency::SelfConjugateBins bins, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  spectrum_to_polar_fwd_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(z, amplitude, phase, n, bins);
  return cudaGetLastError();
}

template <typename T>
cudaError_t spectrum_to_polar_bwd(const vec_t<T>* z, const T* grad_amplitude, const T* grad_phase, vec_t<T>* grad_z,
                                  int64_t n, frequency::SelfConjugateBins bins, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  spectrum_to_polar_bwd_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(z, grad_amplitude, grad_phase, grad_z, n,
                                                                          bins);
  return cudaGetLastError();
}

template <typename T>
cudaError_t polar_to_spectrum_fwd(const T* amplitude, const T* phase, const T* amplitude_residual,
                                  const T* phase_residual, T eps, vec_t<T>* z, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  polar_to_spectrum_fwd_kernel<T>
      <<<blocks_for(n), kThreads, 0, stream>>>(amplitude, phase, amplitude_residual, phase_residual, eps, z, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t polar_to_spectrum_bwd(const vec_t<T>* grad, const T* amplitude, const T* phase,
                                  const T* amplitude_residual, const T* phase_residual, T* grad_amplitude,
                                  T* grad_phase, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  polar_to_spectrum_bwd_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(
      grad, amplitude, phase, amplitude_residual, phase_residual, grad_amplitude, grad_phase, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t epilogue_cleanup(T* out, const T* bias, T nonfinite, uint8_t* finite, int64_t rows, int64_t Co,
                             int64_t N, cudaStream_t stream) {
  const int64_t n = rows * N;
  if (n == 0) return cudaSuccess;
  epilogue_cleanup_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(out, bias, nonfinite, finite, Co, N, n);
  return cudaGetLastError();
}

template <typename T>
cudaError_t epilogue_mask_gradient(const T* grad, const uint8_t* finite, T* grad_masked, T* row_sums, int64_t rows,
                                   int64_t N, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  const int blocks = static_cast<int>(rows < kMaxBlocks ? rows : kMaxBlocks);
  epilogue_mask_gradient_kernel<T><<<blocks, kThreads, 0, stream>>>(grad, finite, grad_masked, row_sums, rows, N);
  return cudaGetLastError();
}

template <typename T>
cudaError_t multiply_by_sign(const T* y, T* grad_y, int64_t n, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  multiply_by_sign_kernel<T><<<blocks_for(n), kThreads, 0, stream>>>(y, grad_y, n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_spectrum_to_polar_fwd(const float2* z, float* amplitude, float* phase, int64_t n,
                                         frequency::SelfConjugateBins bins, cudaStream_t stream) {
  return spectrum_to_polar_fwd<float>(z, amplitude, phase, n, bins, stream);
}
cudaError_t launch_spectrum_to_polar_fwd(const double2* z, double* amplitude, double* phase, int64_t n,
                                         frequency::SelfConjugateBins bins, cudaStream_t stream) {
  return spectrum_to_polar_fwd<double>(z, amplitude, phase, n, bins, stream);
}

cudaError_t launch_spectrum_to_polar_bwd(const float2* z, const float* grad_amplitude, const float* grad_phase,
                                         float2* grad_z, int64_t n, frequency::SelfConjugateBins bins,
                                         cudaStream_t stream) {
  return spectrum_to_polar_bwd<float>(z, grad_amplitude, grad_phase, grad_z, n, bins, stream);
}
cudaError_t launch_spectrum_to_polar_bwd(const double2* z, const double* grad_amplitude, const double* grad_phase,
                                         double2* grad_z, int64_t n, frequency::SelfConjugateBins bins,
                                         cudaStream_t stream) {
  return spectrum_to_polar_bwd<double>(z, grad_amplitude, grad_phase, grad_z, n, bins, stream);
}

cudaError_t launch_polar_to_spectrum_fwd(const float* amplitude, const float* phase, const float* amplitude_residual,
                                         const float* phase_residual, float eps, float2* z, int64_t n,
                                         cudaStream_t stream) {
  return polar_to_spectrum_fwd<float>(amplitude, phase, amplitude_residual, phase_residual, eps, z, n, stream);
}
cudaError_t launch_polar_to_spectrum_fwd(const double* amplitude, const double* phase,
                                         const double* amplitude_residual, const double* phase_residual, double eps,
                                         double2* z, int64_t n, cudaStream_t stream) {
  return polar_to_spectrum_fwd<double>(amplitude, phase, amplitude_residual, phase_residual, eps, z, n, stream);
}

cudaError_t launch_polar_to_spectrum_bwd(const float2* grad, const float* amplitude, const float* phase,
                                         const float* amplitude_residual, const float* phase_residual,
                                         float* grad_amplitude, float* grad_phase, int64_t n, cudaStream_t stream) {
  return polar_to_spectrum_bwd<float>(grad, amplitude, phase, amplitude_residual, phase_residual, grad_amplitude,
                                      grad_phase, n, stream);
}
cudaError_t launch_polar_to_spectrum_bwd(const double2* grad, const double* amplitude, const double* phase,
                                         const double* amplitude_residual, const double* phase_residual,
                                         double* grad_amplitude, double* grad_phase, int64_t n, cudaStream_t stream) {
  return polar_to_spectrum_bwd<double>(grad, amplitude, phase, amplitude_residual, phase_residual, grad_amplitude,
                                       grad_phase, n, stream);
}

cudaError_t launch_epilogue_cleanup(float* out, const float* bias, float nonfinite, uint8_t* finite, int64_t rows,
                                    int64_t Co, int64_t N, cudaStream_t stream) {
  return epilogue_cleanup<float>(out, bias, nonfinite, finite, rows, Co, N, stream);
}
cudaError_t launch_epilogue_cleanup(double* out, const double* bias, double nonfinite, uint8_t* finite, int64_t rows,
                                    int64_t Co, int64_t N, cudaStream_t stream) {
  return epilogue_cleanup<double>(out, bias, nonfinite, finite, rows, Co, N, stream);
}

cudaError_t launch_epilogue_mask_gradient(const float* grad, const uint8_t* finite, float* grad_masked,
                                          float* row_sums, int64_t rows, int64_t N, cudaStream_t stream) {
  return epilogue_mask_gradient<float>(grad, finite, grad_masked, row_sums, rows, N, stream);
}
cudaError_t launch_epilogue_mask_gradient(const double* grad, const uint8_t* finite, double* grad_masked,
                                          double* row_sums, int64_t rows, int64_t N, cudaStream_t stream) {
  return epilogue_mask_gradient<double>(grad, finite, grad_masked, row_sums, rows, N, stream);
}

cudaError_t launch_multiply_by_sign(const float* y, float* grad_y, int64_t n, cudaStream_t stream) {
  return multiply_by_sign<float>(y, grad_y, n, stream);
}
cudaError_t launch_multiply_by_sign(const double* y, double* grad_y, int64_t n, cudaStream_t stream) {
  return multiply_by_sign<double>(y, grad_y, n, stream);
}

}  // namespace mcmri_fast::cuda
