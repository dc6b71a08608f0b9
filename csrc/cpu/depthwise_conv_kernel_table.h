// The table of the depthwise 3×3 convolution's CPU kernels (depthwise_conv_kernels.h) of one instruction
// set. Free of ATen headers: avx2_kernels.cpp, compiled for AVX2, fills one; depthwise_conv.cpp, compiled
// for the baseline, fills the other and picks between them at run time (see cpu_isa.h).
#pragma once
#include <cstdint>
#include <type_traits>

namespace mcmri_fast::cpu {

// The compute type: float64 for float64, float32 otherwise (float16 / bfloat16 widen to it).
template <typename scalar_t>
using depthwise_compute_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Taps are [C, 9] in the compute type (row-major 3×3 per channel); planes are the B·C maps [H, W] of a
// contiguous [B, C, H, W].
template <typename scalar_t>
struct DepthwiseConvKernels {
  using compute_t = depthwise_compute_t<scalar_t>;
  // out[p] = bias[c] + the 3×3 stencil of taps[c] over x[p] (zero padding), planes p = (b, c) in
  // [begin, end); bias may be null. With the taps rotated by 180° this is grad_x from grad.
  void (*forward_planes)(int64_t C, int64_t H, int64_t W, const scalar_t* x, const compute_t* taps,
                         const compute_t* bias, scalar_t* out, int64_t begin, int64_t end);
  // Channels c in [begin, end), all batches, one pass over grad and x: sums[c, 3i + j] =
  // Σ_b Σ_{y,x} grad[b, c, y, x] x[b, c, y + i − 1, x + j − 1] and sums[c, 9] = Σ grad[b, c]; if grad_x is
  // not null, also grad_x = the stencil of rotated_taps (the taps rotated by 180°) over grad.
  void (*backward_channels)(int64_t B, int64_t C, int64_t H, int64_t W, const scalar_t* grad, const scalar_t* x,
                            const compute_t* rotated_taps, scalar_t* grad_x, double* sums, int64_t begin,
                            int64_t end);
};

// The AVX2 build (avx2_kernels.cpp); only call it where use_avx2_kernels().
template <typename scalar_t>
const DepthwiseConvKernels<scalar_t>& depthwise_conv_kernels_avx2();

}  // namespace mcmri_fast::cpu

// Fills a DepthwiseConvKernels<scalar_t> with the functions of namespace `isa` (in an including .cpp file).
#define MCMRI_FAST_DEPTHWISE_CONV_KERNEL_TABLE(isa, scalar_t)                                              \
  ::mcmri_fast::cpu::DepthwiseConvKernels<scalar_t> {                                                      \
    &isa::depthwise_conv3x3_forward_planes<scalar_t>, &isa::depthwise_conv3x3_backward_channels<scalar_t> \
  }
