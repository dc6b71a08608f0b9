// The CUDA type of an ATen scalar type, for the host code that hands tensors to kernels reading half
// precision: c10::Half and c10::BFloat16 have the layout of __half and __nv_bfloat16. cuda_ptr /
// cuda_cptr give a tensor's data as that type; vec_ptr / vec_cptr a complex tensor's as float2 / double2.
#pragma once
#include <ATen/ATen.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "complex_vec.h"

namespace mcmri_fast::cuda {

template <typename scalar_t>
using cuda_t = std::conditional_t<
    std::is_same_v<scalar_t, at::Half>, __half,
    std::conditional_t<std::is_same_v<scalar_t, at::BFloat16>, __nv_bfloat16, scalar_t>>;
static_assert(sizeof(at::Half) == sizeof(__half) && alignof(at::Half) == alignof(__half));
static_assert(sizeof(at::BFloat16) == sizeof(__nv_bfloat16) && alignof(at::BFloat16) == alignof(__nv_bfloat16));

template <typename scalar_t>
cuda_t<scalar_t>* cuda_ptr(const at::Tensor& t) {
  return static_cast<cuda_t<scalar_t>*>(t.mutable_data_ptr());
}
template <typename scalar_t>
const cuda_t<scalar_t>* cuda_cptr(const at::Tensor& t) {
  return static_cast<const cuda_t<scalar_t>*>(t.const_data_ptr());
}

static_assert(sizeof(c10::complex<float>) == sizeof(float2) && alignof(c10::complex<float>) >= alignof(float2));
static_assert(sizeof(c10::complex<double>) == sizeof(double2) && alignof(c10::complex<double>) >= alignof(double2));

template <typename scalar_t>
vec_t<scalar_t>* vec_ptr(const at::Tensor& t) {
  return static_cast<vec_t<scalar_t>*>(t.mutable_data_ptr());
}
template <typename scalar_t>
const vec_t<scalar_t>* vec_cptr(const at::Tensor& t) {
  return static_cast<const vec_t<scalar_t>*>(t.const_data_ptr());
}

}  // namespace mcmri_fast::cuda
