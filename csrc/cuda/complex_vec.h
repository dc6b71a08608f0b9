// vec_t<T>: a complex float / double as float2 / double2, the layout of c10::complex<float / double>
// (interleaved re, im). One definition for the kernels (data_consistency.cu, frequency.cu) and for
// the host code that hands them complex tensors (cuda_types.h).
#pragma once
#include <vector_types.h>

namespace mcmri_fast::cuda {

template <typename T>
struct VecOf;
template <>
struct VecOf<float> {
  using type = float2;
};
template <>
struct VecOf<double> {
  using type = double2;
};
template <typename T>
using vec_t = typename VecOf<T>::type;

}  // namespace mcmri_fast::cuda
