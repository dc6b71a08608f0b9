// CUDA kernels of the frequency-branch ops (the contract: csrc/frequency.h; csrc/cpu/frequency.cpp computes
// the same on the CPU). Memory-bound elementwise work over flat contiguous buffers: grid-stride loops of
// 256 threads, one element per thread per step (float2 / double2 loads of the complex buffers coalesce).
// The epilogue's 1x1 convolution is ATen's (cuBLAS) GEMM, with these kernels for the pointwise passes
// around it; its backward reduces one row per block (shared-memory tree, fixed order: deterministic).
// Nothing in it needs sm_80+.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <vector>

#include "../frequency.h"
#include "complex_vec.h"
#include "cuda_types.h"

namespace mcmri_fast::cuda {
namespace {

using frequency::optional_data;

static_assert(sizeof(bool) == sizeof(uint8_t));

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

std::tuple<at::Tensor, at::Tensor> freq_spectrum_to_polar(const at::Tensor& spectrum_in,
                                                          c10::optional<int64_t> signal_width) {
  const auto bins = frequency::check_spectrum_to_polar("spectrum_to_polar", spectrum_in, signal_width);
  c10::cuda::CUDAGuard guard(spectrum_in.device());
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto real_options = spectrum.options().dtype(c10::toRealValueType(spectrum.scalar_type()));
  auto amplitude = at::empty(spectrum.sizes(), real_options);
  auto phase = at::empty(spectrum.sizes(), real_options);
  const int64_t n = spectrum.numel();
  if (n == 0) return {amplitude, phase};
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_spectrum_to_polar_cuda", [&] {
    spectrum_to_polar_fwd_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        vec_cptr<scalar_t>(spectrum), amplitude.mutable_data_ptr<scalar_t>(), phase.mutable_data_ptr<scalar_t>(), n,
        bins);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {amplitude, phase};
}

at::Tensor freq_spectrum_to_polar_backward(const at::Tensor& spectrum_in,
                                           const c10::optional<at::Tensor>& grad_amplitude_in,
                                           const c10::optional<at::Tensor>& grad_phase_in,
                                           c10::optional<int64_t> signal_width) {
  const auto bins = frequency::check_spectrum_to_polar("spectrum_to_polar_backward", spectrum_in, signal_width,
                                                       grad_amplitude_in, grad_phase_in);
  c10::cuda::CUDAGuard guard(spectrum_in.device());
  const auto spectrum = spectrum_in.resolve_conj().contiguous();
  const auto grad_amplitude = frequency::contiguous(grad_amplitude_in);  // a stride-0 gradient is materialised here
  const auto grad_phase = frequency::contiguous(grad_phase_in);
  auto grad_spectrum = at::empty(spectrum.sizes(), spectrum.options());
  const int64_t n = spectrum.numel();
  if (n == 0) return grad_spectrum;
  AT_DISPATCH_FLOATING_TYPES(c10::toRealValueType(spectrum.scalar_type()), "freq_spectrum_to_polar_backward_cuda", [&] {
    spectrum_to_polar_bwd_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        vec_cptr<scalar_t>(spectrum), optional_data<scalar_t>(grad_amplitude), optional_data<scalar_t>(grad_phase),
        vec_ptr<scalar_t>(grad_spectrum), n, bins);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_spectrum;
}

at::Tensor freq_polar_to_spectrum(const at::Tensor& amplitude_in, const at::Tensor& phase_in,
                                  const c10::optional<at::Tensor>& amplitude_residual_in,
                                  const c10::optional<at::Tensor>& phase_residual_in, double eps) {
  frequency::check_polar_inputs("polar_to_spectrum", amplitude_in, phase_in, amplitude_residual_in, phase_residual_in);
  c10::cuda::CUDAGuard guard(amplitude_in.device());
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = frequency::contiguous(amplitude_residual_in);
  const auto phase_residual = frequency::contiguous(phase_residual_in);
  auto spectrum = at::empty(amplitude.sizes(), amplitude.options().dtype(c10::toComplexType(amplitude.scalar_type())));
  const int64_t n = amplitude.numel();
  if (n == 0) return spectrum;
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_polar_to_spectrum_cuda", [&] {
    polar_to_spectrum_fwd_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        amplitude.const_data_ptr<scalar_t>(), phase.const_data_ptr<scalar_t>(),
        optional_data<scalar_t>(amplitude_residual), optional_data<scalar_t>(phase_residual),
        static_cast<scalar_t>(eps), vec_ptr<scalar_t>(spectrum), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return spectrum;
}

std::tuple<at::Tensor, at::Tensor> freq_polar_to_spectrum_backward(
    const at::Tensor& grad_in, const at::Tensor& amplitude_in, const at::Tensor& phase_in,
    const c10::optional<at::Tensor>& amplitude_residual_in, const c10::optional<at::Tensor>& phase_residual_in) {
  frequency::check_polar_inputs("polar_to_spectrum_backward", amplitude_in, phase_in, amplitude_residual_in,
                                phase_residual_in, &grad_in);
  c10::cuda::CUDAGuard guard(amplitude_in.device());
  const auto grad = grad_in.resolve_conj().contiguous();
  const auto amplitude = amplitude_in.contiguous(), phase = phase_in.contiguous();
  const auto amplitude_residual = frequency::contiguous(amplitude_residual_in);
  const auto phase_residual = frequency::contiguous(phase_residual_in);
  auto grad_amplitude = at::empty(amplitude.sizes(), amplitude.options());
  auto grad_phase = at::empty(amplitude.sizes(), amplitude.options());
  const int64_t n = amplitude.numel();
  if (n == 0) return {grad_amplitude, grad_phase};
  AT_DISPATCH_FLOATING_TYPES(amplitude.scalar_type(), "freq_polar_to_spectrum_backward_cuda", [&] {
    polar_to_spectrum_bwd_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        vec_cptr<scalar_t>(grad), amplitude.const_data_ptr<scalar_t>(), phase.const_data_ptr<scalar_t>(),
        optional_data<scalar_t>(amplitude_residual), optional_data<scalar_t>(phase_residual),
        grad_amplitude.mutable_data_ptr<scalar_t>(), grad_phase.mutable_data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_amplitude, grad_phase};
}

std::tuple<at::Tensor, at::Tensor> freq_epilogue(const at::Tensor& y_in, const at::Tensor& weight,
                                                 const c10::optional<at::Tensor>& bias_in,
                                                 const at::Tensor& residual, double nonfinite, bool keep_mask) {
  frequency::check_epilogue("frequency_epilogue", y_in, weight, bias_in, residual);
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
  const int64_t n = B * Co * N;
  if (n > 0) {
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_cuda", [&] {
      epilogue_cleanup_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          out.mutable_data_ptr<scalar_t>(), optional_data<scalar_t>(bias), static_cast<scalar_t>(nonfinite),
          keep_mask ? reinterpret_cast<uint8_t*>(finite.mutable_data_ptr<bool>()) : nullptr, Co, N, n);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {out.view({B, Co, y.size(2), y.size(3)}), finite};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> freq_epilogue_backward(
    const at::Tensor& grad_in, const at::Tensor& y_in, const at::Tensor& weight, const at::Tensor& finite_in,
    bool need_y_grad, bool need_weight_grad, bool need_bias_grad) {
  frequency::check_epilogue_backward(grad_in, y_in, weight, finite_in);
  c10::cuda::CUDAGuard guard(y_in.device());
  const auto y = y_in.contiguous(), grad = grad_in.contiguous(), finite = finite_in.contiguous();
  const int64_t B = y.size(0), C = y.size(1), Co = weight.size(0), N = y.size(2) * y.size(3);
  auto grad_masked = at::empty({B, Co, N}, grad.options());
  auto row_sums = at::empty({B, Co}, grad.options());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  // g' = g·isfinite(pre-cleanup value) and its per-row sums for the bias, in one pass.
  const int64_t rows = B * Co;
  if (rows > 0) {
    const int blocks = static_cast<int>(rows < kMaxBlocks ? rows : kMaxBlocks);
    AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_backward_cuda", [&] {
      epilogue_mask_gradient_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), reinterpret_cast<const uint8_t*>(finite.const_data_ptr<bool>()),
          grad_masked.mutable_data_ptr<scalar_t>(), row_sums.mutable_data_ptr<scalar_t>(), rows, N);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
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
    const int64_t n = y.numel();
    if (n > 0) {
      AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "freq_epilogue_sign_cuda", [&] {
        multiply_by_sign_kernel<scalar_t><<<blocks_for(n), kThreads, 0, stream>>>(
            y.const_data_ptr<scalar_t>(), grad_y.mutable_data_ptr<scalar_t>(), n);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    }
    grad_y = grad_y.view(y.sizes());
  }
  return {grad_y, grad_weight, grad_bias, grad_masked.view(grad.sizes())};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("freq_spectrum_to_polar", &freq_spectrum_to_polar);
  m.impl("freq_spectrum_to_polar_backward", &freq_spectrum_to_polar_backward);
  m.impl("freq_polar_to_spectrum", &freq_polar_to_spectrum);
  m.impl("freq_polar_to_spectrum_backward", &freq_polar_to_spectrum_backward);
  m.impl("freq_epilogue", &freq_epilogue);
  m.impl("freq_epilogue_backward", &freq_epilogue_backward);
}

}  // namespace mcmri_fast::cuda
