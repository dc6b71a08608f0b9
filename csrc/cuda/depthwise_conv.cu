// CUDA kernels of the depthwise 3×3 convolution (the CPU code in csrc/cpu/depthwise_conv.cpp is the
// reference). One block per tile of kDepthwiseTileW × kDepthwiseTileH outputs of one plane (b, c), one
// thread per output:
//   - the stencil reads its 9 neighbours through the read-only cache (the neighbouring threads share
//     them; the zero padding is a bounds test); with kRotate the taps are rotated by 180° (grad_x);
//   - the tap sums: each thread forms its 10 products (grad · x shifted by the 9 taps, and grad), the
//     block reduces them in shared memory in a fixed tree order into one row of partial sums, and a
//     second kernel adds the rows of each channel in order. No atomics: deterministic;
//   - float16 / bfloat16 are computed in float, float64 in double.
// No torch headers here: the binding is depthwise_conv_binding.cpp. Nothing in it needs sm_80+.
#include <cstdint>

#include <cuda_runtime.h>

#include "compute_type.cuh"
#include "depthwise_conv_launch.h"

namespace mcmri_fast::cuda {
namespace {

constexpr int kThreads = kDepthwiseTileW * kDepthwiseTileH;
static_assert((kThreads & (kThreads - 1)) == 0, "the tree reduction needs a power-of-two block");
constexpr int kSums = 10;
constexpr int kReduceThreads = 128;

// This block's plane (b, c) and the output (y, x) of this thread.
struct TilePosition {
  int64_t plane, y, x;
};
__device__ __forceinline__ TilePosition position_of(const DepthwiseConvShape& s) {
  const int64_t tiles_w = (s.W + kDepthwiseTileW - 1) / kDepthwiseTileW;
  const int64_t tiles_h = (s.H + kDepthwiseTileH - 1) / kDepthwiseTileH;
  const int64_t block = blockIdx.x, tiles = tiles_h * tiles_w;
  const int64_t plane = block / tiles, tile = block - plane * tiles;
  const int64_t tile_y = tile / tiles_w, tile_x = tile - tile_y * tiles_w;
  return {plane, tile_y * kDepthwiseTileH + threadIdx.y, tile_x * kDepthwiseTileW + threadIdx.x};
}

// in[plane, y + dy, x + dx], zero outside the plane (the padding).
template <typename T>
__device__ __forceinline__ compute_t<T> shifted(const T* __restrict__ plane, const DepthwiseConvShape& s, int64_t y,
                                                int64_t x, int dy, int dx) {
  const int64_t r = y + dy, q = x + dx;
  return r >= 0 && r < s.H && q >= 0 && q < s.W ? to_compute(__ldg(plane + r * s.W + q)) : compute_t<T>(0);
}

template <typename T, bool kRotate>
__global__ void __launch_bounds__(kThreads)
    depthwise_conv3x3_fwd_kernel(DepthwiseConvShape s, const T* __restrict__ in, const T* __restrict__ taps,
                                 const T* __restrict__ bias, T* __restrict__ out) {
  const TilePosition p = position_of(s);
  if (p.y >= s.H || p.x >= s.W) return;
  const int64_t c = p.plane % s.C;
  const T* plane = in + p.plane * s.H * s.W;
  compute_t<T> acc = bias == nullptr ? compute_t<T>(0) : to_compute(bias[c]);
#pragma unroll
  for (int k = 0; k < 9; ++k) {
    const compute_t<T> tap = to_compute(taps[9 * c + (kRotate ? 8 - k : k)]);
    acc += tap * shifted(plane, s, p.y, p.x, k / 3 - 1, k % 3 - 1);
  }
  out[p.plane * s.H * s.W + p.y * s.W + p.x] = from_compute<T>(acc);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    depthwise_conv3x3_bwd_kernel(DepthwiseConvShape s, const T* __restrict__ grad, const T* __restrict__ x,
                                 compute_t<T>* __restrict__ partial) {
  using A = compute_t<T>;
  __shared__ A products[kSums][kThreads];
  const TilePosition p = position_of(s);
  const int thread = threadIdx.y * kDepthwiseTileW + threadIdx.x;
  const bool inside = p.y < s.H && p.x < s.W;
  const int64_t offset = p.plane * s.H * s.W;
  const A g = inside ? to_compute(grad[offset + p.y * s.W + p.x]) : A(0);
#pragma unroll
  for (int k = 0; k < 9; ++k) {
    products[k][thread] = inside ? g * shifted(x + offset, s, p.y, p.x, k / 3 - 1, k % 3 - 1) : A(0);
  }
  products[9][thread] = g;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (thread < half) {
#pragma unroll
      for (int k = 0; k < kSums; ++k) products[k][thread] += products[k][thread + half];
    }
    __syncthreads();
  }
  if (thread < kSums) partial[int64_t(blockIdx.x) * kSums + thread] = products[thread][0];
}

// One thread per sums[c, k]: the rows (b, c, tile) of partial added over b and the tiles, in order.
template <typename A>
__global__ void depthwise_conv3x3_reduce_kernel(DepthwiseConvShape s, int64_t tiles, const A* __restrict__ partial,
                                                A* __restrict__ sums) {
  const int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (index >= s.C * kSums) return;
  const int64_t c = index / kSums, k = index - c * kSums;
  A total(0);
  for (int64_t b = 0; b < s.B; ++b) {
    const A* rows = partial + (b * s.C + c) * tiles * kSums + k;
    for (int64_t t = 0; t < tiles; ++t) total += rows[t * kSums];
  }
  sums[index] = total;
}

bool valid(const DepthwiseConvShape& s) { return s.B >= 0 && s.C >= 0 && s.H >= 0 && s.W >= 0; }

template <typename T>
cudaError_t launch_stencil(const DepthwiseConvShape& s, const T* in, const T* taps, const T* bias, bool rotate, T* out,
                           cudaStream_t stream) {
  if (!valid(s)) return cudaErrorInvalidValue;
  const int64_t blocks = depthwise_conv3x3_partial_rows(s);
  if (blocks == 0) return cudaSuccess;
  if (blocks > INT32_MAX) return cudaErrorInvalidConfiguration;
  const dim3 block(kDepthwiseTileW, kDepthwiseTileH), grid(static_cast<unsigned>(blocks));
  if (rotate) {
    depthwise_conv3x3_fwd_kernel<T, true><<<grid, block, 0, stream>>>(s, in, taps, bias, out);
  } else {
    depthwise_conv3x3_fwd_kernel<T, false><<<grid, block, 0, stream>>>(s, in, taps, bias, out);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_tap_sums(const DepthwiseConvShape& s, const T* grad, const T* x, compute_t<T>* partial,
                            compute_t<T>* sums, cudaStream_t stream) {
  if (!valid(s)) return cudaErrorInvalidValue;
  if (s.C == 0) return cudaSuccess;
  const int64_t rows = depthwise_conv3x3_partial_rows(s);
  if (rows > INT32_MAX) return cudaErrorInvalidConfiguration;
  if (rows > 0) {
    depthwise_conv3x3_bwd_kernel<T>
        <<<static_cast<unsigned>(rows), dim3(kDepthwiseTileW, kDepthwiseTileH), 0, stream>>>(s, grad, x, partial);
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  // With no rows (an empty batch or map) the reduction writes zeros.
  const int64_t tiles = s.B * s.C == 0 ? 0 : rows / (s.B * s.C);
  const int64_t threads = s.C * kSums;
  depthwise_conv3x3_reduce_kernel<compute_t<T>>
      <<<static_cast<unsigned>((threads + kReduceThreads - 1) / kReduceThreads), kReduceThreads, 0, stream>>>(
          s, tiles, partial, sums);
  return cudaGetLastError();
}

}  // namespace

#define MCMRI_DEPTHWISE_CONV_DEFINE(T, A)                                                                      \
  MCMRI_DEPTHWISE_CONV_STENCIL(T) { return launch_stencil<T>(s, in, taps, bias, rotate, out, stream); }        \
  MCMRI_DEPTHWISE_CONV_TAP_SUMS(T, A) { return launch_tap_sums<T>(s, grad, x, partial, sums, stream); }
MCMRI_DEPTHWISE_CONV_DEFINE(float, float)
MCMRI_DEPTHWISE_CONV_DEFINE(double, double)
MCMRI_DEPTHWISE_CONV_DEFINE(__half, float)
MCMRI_DEPTHWISE_CONV_DEFINE(__nv_bfloat16, float)
#undef MCMRI_DEPTHWISE_CONV_DEFINE

}  // namespace mcmri_fast::cuda
