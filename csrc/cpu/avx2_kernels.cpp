// The AVX2 + FMA + F16C build of every op's CPU vector kernels (the <op>_kernels.h headers; see
// cpu_isa.h for the scheme). The extension is compiled for the baseline instruction set, so this file
// enables AVX2 itself and selects ATen's AVX2 Vectorized (Sleef's exp, atan2, sin, cos); the ops call
// these tables only where use_avx2_kernels() says the CPU has them.
// As in ATen's own per-capability files, the inline functions of the c10 headers included here are
// compiled for AVX2 too; they are meant to inline (the hot code is all in namespaces of this build), and
// the parallel loops stay in the ops' baseline files, which call these kernels on their chunks.
#include "cpu_isa.h"

#ifdef MCMRI_CPU_AVX2_BUILD
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
#include "channel_attention_kernels.h"
#include "depthwise_conv_kernels.h"

#include "channel_attention_kernel_table.h"
#include "depthwise_conv_kernel_table.h"

namespace mcmri_fast::cpu {

template <>
const ChannelAttentionKernels<float>& channel_attention_kernels_avx2<float>() {
  static const auto table = MCMRI_FAST_CHANNEL_ATTENTION_KERNEL_TABLE(avx2, float);
  return table;
}

template <>
const ChannelAttentionKernels<double>& channel_attention_kernels_avx2<double>() {
  static const auto table = MCMRI_FAST_CHANNEL_ATTENTION_KERNEL_TABLE(avx2, double);
  return table;
}

template <>
const DepthwiseConvKernels<float>& depthwise_conv_kernels_avx2<float>() {
  static const auto table = MCMRI_FAST_DEPTHWISE_CONV_KERNEL_TABLE(avx2, float);
  return table;
}

template <>
const DepthwiseConvKernels<double>& depthwise_conv_kernels_avx2<double>() {
  static const auto table = MCMRI_FAST_DEPTHWISE_CONV_KERNEL_TABLE(avx2, double);
  return table;
}

template <>
const DepthwiseConvKernels<c10::Half>& depthwise_conv_kernels_avx2<c10::Half>() {
  static const auto table = MCMRI_FAST_DEPTHWISE_CONV_KERNEL_TABLE(avx2, c10::Half);
  return table;
}

template <>
const DepthwiseConvKernels<c10::BFloat16>& depthwise_conv_kernels_avx2<c10::BFloat16>() {
  static const auto table = MCMRI_FAST_DEPTHWISE_CONV_KERNEL_TABLE(avx2, c10::BFloat16);
  return table;
}

}  // namespace mcmri_fast::cpu
#endif
