// The run-time choice between the baseline, AVX2 and AVX-512 code of the CPU kernels (see cpu_isa.h).
#include "cpu_isa.h"

#include <ATen/Version.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <string>

namespace mcmri_fast::cpu {
namespace {

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

// The highest instruction set of this build that the CPU has.
KernelIsa cpu_supported() {
#ifdef MCMRI_CPU_AVX512_BUILD
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      __builtin_cpu_supports("f16c")) {
    return KernelIsa::avx512;
  }
#endif
#ifdef MCMRI_CPU_AVX2_BUILD
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return KernelIsa::avx2;
  }
#endif
  return KernelIsa::baseline;
}

KernelIsa cap() {
  const char* variable = std::getenv("MCMRI_FAST_CPU_ISA");
  if (variable != nullptr && *variable != '\0') {
    const std::string value = lower(variable);
    if (value == "baseline") return KernelIsa::baseline;
    if (value == "avx2") return KernelIsa::avx2;
    if (value == "avx512") return KernelIsa::avx512;
    TORCH_CHECK(false, "MCMRI_FAST_CPU_ISA must be baseline, avx2 or avx512, got '", variable, "'");
  }
  const std::string capability = at::get_cpu_capability();  // "DEFAULT", "AVX2", "AVX512", ... (ZVECTOR, VSX)
  if (capability == "AVX512") return KernelIsa::avx512;
  if (capability == "AVX2") return KernelIsa::avx2;
  return KernelIsa::baseline;
}

}  // namespace

KernelIsa kernel_isa() {
  // a bad MCMRI_FAST_CPU_ISA throws out of the initialiser, so every call raises, not only the first
  static const KernelIsa isa = std::min(cpu_supported(), cap());
  return isa;
}

const char* kernel_isa_name() {
  switch (kernel_isa()) {
    case KernelIsa::avx512:
      return "avx512";
    case KernelIsa::avx2:
      return "avx2";
    default:
      return "baseline";
  }
}

}  // namespace mcmri_fast::cpu
