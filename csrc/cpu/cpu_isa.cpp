// The run-time choice between the baseline, AVX2 and AVX-512 code of the CPU kernels (see cpu_isa.h).
#include "cpu_isa.h"

#ifdef MCMRI_CPU_AVX2_BUILD
#include <ATen/Version.h>

#include <string>

namespace mcmri_fast::cpu {

bool use_avx2_kernels() {
  static const bool avx2 = [] {
    const std::string capability = at::get_cpu_capability();  // "DEFAULT", "AVX2", "AVX512", ...
    return (capability == "AVX2" || capability == "AVX512") && __builtin_cpu_supports("avx2") &&
           __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  }();
  return avx2;
}

#ifdef MCMRI_CPU_AVX512_BUILD
bool use_avx512_kernels() {
  static const bool avx512 = at::get_cpu_capability() == "AVX512" && __builtin_cpu_supports("avx512f");
  return avx512;
}
#endif

}  // namespace mcmri_fast::cpu
#endif
