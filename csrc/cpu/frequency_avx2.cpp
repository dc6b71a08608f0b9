// The AVX2 + FMA build of the frequency ops' pointwise kernels (see frequency_kernels.h). The extension
// is compiled for the baseline instruction set, so this file enables AVX2 and FMA itself and selects
// ATen's AVX2 Vectorized (Sleef atan2/sin/cos); frequency.cpp calls it only on CPUs that have both.
// As in ATen's own per-capability files, the inline functions of the c10 headers included here are
// compiled for AVX2 too; they are meant to inline (the hot code is all in namespaces of this build).
// Other compilers (clang has no GCC target pragma) and architectures use the baseline build only.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)  // GCC: its target pragma
#pragma GCC target("avx2,fma,f16c")
// GCC's target pragma does not define the feature macros that ATen's and Sleef's headers test.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
// ATen's BFloat16 lambdas pass __m256 by value; nothing here calls them across translation units.
#pragma GCC diagnostic ignored "-Wpsabi"
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define FREQUENCY_ISA avx2
#include "frequency_kernels.h"
#include "frequency_kernel_table.h"

namespace mcmri_fast::cpu {

template <>
const FrequencyKernels<float>& frequency_kernels_avx2<float>() {
  static const auto table = MCMRI_FAST_FREQUENCY_KERNEL_TABLE(avx2, float);
  return table;
}

template <>
const FrequencyKernels<double>& frequency_kernels_avx2<double>() {
  static const auto table = MCMRI_FAST_FREQUENCY_KERNEL_TABLE(avx2, double);
  return table;
}

}  // namespace mcmri_fast::cpu
#endif
