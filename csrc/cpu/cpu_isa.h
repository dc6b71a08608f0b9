// Which instruction set the native CPU kernels run on in this process. The extension is compiled for
// the baseline x86 ISA, so it loads on any x86-64 CPU; the ops' vector kernels are built a second time
// for AVX2 (isa_builds.h) and the 3×3 convolution's Winograd kernel for AVX2 and AVX-512, and the
// build picked at run time is the one kernel_isa() names. Only GCC on x86-64 has these builds: clang
// has no GCC target pragma, and other architectures use the baseline build.
#pragma once
#include <initializer_list>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MCMRI_CPU_AVX2_BUILD 1
// The AVX-512 code (conv3x3_winograd_avx512.cpp, raw intrinsics under a target pragma) has the same
// requirement.
#define MCMRI_CPU_AVX512_BUILD 1
#endif

namespace mcmri_fast::cpu {

// The instruction sets the library's own kernels are built for, in increasing order.
enum class KernelIsa { baseline = 0, avx2 = 1, avx512 = 2 };

// The instruction set the kernels run on in this process, decided once: the highest one that the CPU
// has, this build has (AVX2 and AVX-512 only with GCC on x86-64) and the cap allows. The cap is
// MCMRI_FAST_CPU_ISA (baseline, avx2 or avx512) where it is set, else ATen's CPU capability (which
// honours ATEN_CPU_CAPABILITY), so capping ATen caps these kernels too. A bad MCMRI_FAST_CPU_ISA raises.
KernelIsa kernel_isa();
// Its name: "baseline", "avx2" or "avx512".
const char* kernel_isa_name();

// One instruction set's build of a kernel table: its getter may run code compiled for that instruction
// set, so it is called only in a process that runs it.
template <typename Table>
struct IsaBuild {
  KernelIsa isa;
  const Table& (*get)();
};

// The one choice of a kernel table by instruction set: the table of the first of `builds` (listed from
// the highest instruction set down) that kernel_isa() allows, nullptr where none does.
template <typename Table>
const Table* pick_isa_build(std::initializer_list<IsaBuild<Table>> builds) {
  for (const IsaBuild<Table>& build : builds) {
    if (kernel_isa() >= build.isa) return &build.get();
  }
  return nullptr;
}

}  // namespace mcmri_fast::cpu
