// The one SIMD scheme of the native CPU kernels. The extension is compiled for the baseline x86 ISA
// (no -mavx2, so it loads on any x86-64 CPU), where at::vec::Vectorized falls back to its generic
// lane-by-lane implementation and std:: math. So each op's vector kernels live in a header,
// <op>_kernels.h, written once in namespace mcmri_fast::cpu::MCMRI_CPU_ISA and compiled twice:
//   - by the op's own .cpp with MCMRI_CPU_ISA = base (the baseline build, always present);
//   - by avx2_kernels.cpp with MCMRI_CPU_ISA = avx2, for AVX2 + FMA + F16C, where Vectorized is ATen's
//     AVX2 implementation and its transcendentals are Sleef's vectorised ones.
// Each build fills a table of function pointers (<op>_kernel_table.h, free of ATen headers); the op's
// .cpp picks the table once per dtype with use_avx2_kernels(). avx2_kernels.cpp includes every op's
// header into the one namespace, so their function names carry the op's name where they could clash.
// Only GCC on x86-64 has the AVX2 build: clang has no GCC target pragma, and other architectures use
// the baseline build.
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

#ifdef MCMRI_CPU_AVX2_BUILD
// Whether to run the AVX2 build: kernel_isa() is AVX2 or above (the CPU then has AVX2, FMA and F16C,
// the float16 conversions).
inline bool use_avx2_kernels() { return kernel_isa() >= KernelIsa::avx2; }
#endif

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
