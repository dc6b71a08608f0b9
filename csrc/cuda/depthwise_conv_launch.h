// Launchers of the CUDA kernels of the depthwise 3×3 convolution (csrc/cuda/depthwise_conv.cu). Plain C++
// with raw pointers, so that the .cu file compiles without the torch headers; the torch binding
// (depthwise_conv_binding.cpp) checks the tensors, makes them contiguous and calls these.
//
// x, grad, out [B, C, H, W] and taps [C, 9] (row-major 3×3 per channel), bias [C] are contiguous.
// __half / __nv_bfloat16 have the layout of c10::Half / c10::BFloat16; they are computed in float, and
// double in double: the accumulator type A below.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace mcmri_fast::cuda {

struct DepthwiseConvShape {
  int64_t B, C, H, W;
};

// The tiles of one output block: kDepthwiseTileW × kDepthwiseTileH outputs, one per thread.
constexpr int kDepthwiseTileW = 32;
constexpr int kDepthwiseTileH = 8;

// The number of rows of the partial tap sums: one per (plane, tile).
inline int64_t depthwise_conv3x3_partial_rows(const DepthwiseConvShape& s) {
  const int64_t tiles_h = (s.H + kDepthwiseTileH - 1) / kDepthwiseTileH;
  const int64_t tiles_w = (s.W + kDepthwiseTileW - 1) / kDepthwiseTileW;
  return s.B * s.C * tiles_h * tiles_w;
}

// out = bias + the 3×3 stencil of taps over in (zero padding 1); with rotate the taps are rotated by 180°
// (the backward to x, from grad). bias may be null. Returns the launch error (cudaGetLastError),
// cudaSuccess when there is nothing to do.
#define MCMRI_DEPTHWISE_CONV_STENCIL(T)                                                                          \
  cudaError_t launch_depthwise_conv3x3_stencil(const DepthwiseConvShape& s, const T* in, const T* taps,          \
                                               const T* bias, bool rotate, T* out, cudaStream_t stream)
MCMRI_DEPTHWISE_CONV_STENCIL(float);
MCMRI_DEPTHWISE_CONV_STENCIL(double);
MCMRI_DEPTHWISE_CONV_STENCIL(__half);
MCMRI_DEPTHWISE_CONV_STENCIL(__nv_bfloat16);

// sums [C, 10] (type A): sums[c, 3i + j] = Σ_b Σ_{y,x} grad[b, c, y, x] x[b, c, y + i − 1, x + j − 1] and
// sums[c, 9] = Σ grad[b, c]. Each block reduces its tile into one row of partial
// [depthwise_conv3x3_partial_rows(s), 10], then one thread per sum adds the rows of its channel in order:
// no atomics, deterministic.
#define MCMRI_DEPTHWISE_CONV_TAP_SUMS(T, A)                                                                      \
  cudaError_t launch_depthwise_conv3x3_tap_sums(const DepthwiseConvShape& s, const T* grad, const T* x,          \
                                                A* partial, A* sums, cudaStream_t stream)
MCMRI_DEPTHWISE_CONV_TAP_SUMS(float, float);
MCMRI_DEPTHWISE_CONV_TAP_SUMS(double, double);
MCMRI_DEPTHWISE_CONV_TAP_SUMS(__half, float);
MCMRI_DEPTHWISE_CONV_TAP_SUMS(__nv_bfloat16, float);

}  // namespace mcmri_fast::cuda
