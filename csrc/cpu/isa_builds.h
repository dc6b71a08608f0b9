// How a CPU op file compiles its vector kernels once per instruction set (which one runs: cpu_isa.h).
// The extension is compiled for the baseline x86 ISA (no -mavx2, so it loads on any x86-64 CPU), where
// at::vec::Vectorized falls back to its lane-by-lane implementation and std:: math. So setup.py compiles
// every csrc/cpu/<op>.cpp that includes this header twice:
//   - as itself: the baseline build, MCMRI_CPU_ISA = base, MCMRI_CPU_BASELINE_PASS defined;
//   - on x86-64 with GCC, through a file it generates (build/avx2/<op>.cpp) that defines
//     MCMRI_CPU_AVX2_PASS and includes the op's file: MCMRI_CPU_ISA = avx2, compiled for AVX2 + FMA + F16C,
//     where Vectorized is ATen's AVX2 implementation and its transcendentals are Sleef's.
// The op's file, in this order:
//   #include "isa_builds.h"            (first: the AVX2 build must be set up before any ATen header)
//   the kernels and their table, in namespace mcmri_fast::cpu::MCMRI_CPU_ISA, with the table's getter
//     instantiated by MCMRI_CPU_FLOAT_KERNELS / MCMRI_CPU_FLOAT_AND_HALF_KERNELS (the dtypes it serves);
//   #ifdef MCMRI_CPU_BASELINE_PASS: the op (checks, parallel loops, TORCH_LIBRARY_IMPL), which calls the
//     kernels of this process's ISA through the picker MCMRI_CPU_PICK_KERNELS defines.
// Only the kernels are built for AVX2: the inline functions of the c10 headers they include are
// compiled for AVX2 too and meant to inline, and the parallel loops stay in the baseline build.
#pragma once
#include "cpu_isa.h"

#ifdef MCMRI_CPU_AVX2_PASS
#pragma GCC target("avx2,fma,f16c")
// GCC's target pragma does not define the feature macros that ATen's and Sleef's headers test.
#define __AVX__ 1
#define __AVX2__ 1
#define __FMA__ 1
#define __F16C__ 1
// ATen's BFloat16 lambdas pass __m256 by value; nothing here calls them across translation units.
#pragma GCC diagnostic ignored "-Wpsabi"
// Set before any ATen header, as ATen's own per-capability kernels do: every Vectorized symbol then
// lives in its own inline namespace, so this build and the baseline one never share (ODR-merge) code
// compiled for different instruction sets.
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#define MCMRI_CPU_ISA avx2
#else
#define MCMRI_CPU_ISA base
#define MCMRI_CPU_BASELINE_PASS 1
#endif

// Instantiates the kernel table getter `template <typename scalar_t> const Table<scalar_t>& getter()` of
// this build for the dtypes of AT_DISPATCH_FLOATING_TYPES (and AND2(kHalf, kBFloat16)).
#define MCMRI_CPU_FLOAT_KERNELS(getter, Table)       \
  template const Table<float>& getter<float>();      \
  template const Table<double>& getter<double>();
#define MCMRI_CPU_FLOAT_AND_HALF_KERNELS(getter, Table)          \
  MCMRI_CPU_FLOAT_KERNELS(getter, Table)                         \
  template const Table<c10::Half>& getter<c10::Half>();          \
  template const Table<c10::BFloat16>& getter<c10::BFloat16>();

// In namespace mcmri_fast::cpu of the baseline build: getter<scalar_t>(), the table of the build this
// process runs (the AVX2 one where kernel_isa() allows it, else the baseline one: pick_isa_build).
#ifdef MCMRI_CPU_AVX2_BUILD
#define MCMRI_CPU_PICK_KERNELS(getter, Table)                                                         \
  namespace avx2 {                                                                                    \
  template <typename scalar_t>                                                                        \
  const Table<scalar_t>& getter();                                                                    \
  }                                                                                                   \
  template <typename scalar_t>                                                                        \
  const Table<scalar_t>& getter() {                                                                   \
    return *pick_isa_build<Table<scalar_t>>(                                                          \
        {{KernelIsa::avx2, &avx2::getter<scalar_t>}, {KernelIsa::baseline, &base::getter<scalar_t>}}); \
  }
#else
#define MCMRI_CPU_PICK_KERNELS(getter, Table) \
  template <typename scalar_t>                \
  const Table<scalar_t>& getter() {           \
    return base::getter<scalar_t>();          \
  }
#endif
