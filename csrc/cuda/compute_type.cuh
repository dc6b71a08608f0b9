// The compute type of the CUDA kernels that read half-precision inputs: float16 / bfloat16 (and
// float32) are computed in float, float64 in double; to_compute / from_compute convert on load and
// store (round to nearest on the way back). Shared by the .cu files of the elementwise and stencil ops.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace mcmri_fast::cuda {

template <typename T>
struct ComputeOf {
  using type = float;
};
template <>
struct ComputeOf<double> {
  using type = double;
};
template <typename T>
using compute_t = typename ComputeOf<T>::type;

__device__ __forceinline__ float to_compute(float x) { return x; }
__device__ __forceinline__ double to_compute(double x) { return x; }
__device__ __forceinline__ float to_compute(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_compute(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_compute(compute_t<T> x);
template <>
__device__ __forceinline__ float from_compute<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ double from_compute<double>(double x) {
  return x;
}
template <>
__device__ __forceinline__ __half from_compute<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_compute<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

}  // namespace mcmri_fast::cuda
