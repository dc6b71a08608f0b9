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

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MCMRI_CPU_AVX2_BUILD 1
// The AVX-512 code (the Winograd kernel of conv3x3_winograd.cpp, raw intrinsics under a target pragma)
// has the same requirement.
#define MCMRI_CPU_AVX512_BUILD 1
#endif

namespace mcmri_fast::cpu {

#ifdef MCMRI_CPU_AVX2_BUILD
// Whether to run the AVX2 build: the CPU has AVX2, FMA and F16C (the float16 conversions) and ATen's
// CPU capability allows AVX2 (it honours ATEN_CPU_CAPABILITY, so ATEN_CPU_CAPABILITY=default forces
// the baseline build, e.g. to test it).
bool use_avx2_kernels();
#endif

#ifdef MCMRI_CPU_AVX512_BUILD
// Whether to run AVX-512 code: the CPU has AVX-512F and ATen's CPU capability is AVX512
// (ATEN_CPU_CAPABILITY=avx2 or default turns it off, as it does ATen's own AVX-512 kernels).
bool use_avx512_kernels();
#endif

}  // namespace mcmri_fast::cpu
