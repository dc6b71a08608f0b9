// CUDA kernels of the depthwise 3×3 convolution (the contract: csrc/depthwise_conv.h;
// csrc/cpu/depthwise_conv.cpp computes the same on the CPU). One block per tile of kTileW × kTileH
// outputs of one plane (b, c), one thread per output:
//   - the stencil reads its 9 neighbours through the read-only cache (the neighbouring threads share
//     them; the zero padding is a bounds test); with kRotate the taps are rotated by 180° (grad_x);
//   - the tap sums: each thread forms its 10 products (grad · x shifted by the 9 taps, and grad), the
//     block reduces them in shared memory in a fixed tree order into one row of partial sums, and a
//     second kernel adds the rows of each channel in order. No atomics: deterministic;
//   - float16 / bfloat16 are computed in float, float64 in double.
// Nothing in it needs sm_80+.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <type_traits>

#include "../depthwise_conv.h"
#include "compute_type.cuh"
#include "cuda_types.h"

namespace mcmri_fast::cuda {
namespace {

// The tiles of one output block: kTileW × kTileH outputs, one per thread.
constexpr int kTileW = 32;
constexpr int kTileH = 8;
constexpr int kThreads = kTileW * kTileH;
static_assert((kThreads & (kThreads - 1)) == 0, "the tree reduction needs a power-of-two block");
constexpr int kSums = 10;
constexpr int kReduceThreads = 128;

// The number of blocks of a pass over the maps, and of rows of the partial tap sums: one per (plane, tile).
int64_t tile_count(const DepthwiseConvSizes& s) {
  const int64_t tiles_h = (s.H + kTileH - 1) / kTileH;
  const int64_t tiles_w = (s.W + kTileW - 1) / kTileW;
  return s.B * s.C * tiles_h * tiles_w;
}

// This block's plane (b, c) and the output (y, x) of this thread.
struct TilePosition {
  int64_t plane, y, x;
};
__device__ __forceinline__ TilePosition position_of(const DepthwiseConvSizes& s) {
  const int64_t tiles_w = (s.W + kTileW - 1) / kTileW;
  const int64_t tiles_h = (s.H + kTileH - 1) / kTileH;
  const int64_t block = blockIdx.x, tiles = tiles_h * tiles_w;
  const int64_t plane = block / tiles, tile = block - plane * tiles;
  const int64_t tile_y = tile / tiles_w, tile_x = tile - tile_y * tiles_w;
  return {plane, tile_y * kTileH + threadIdx.y, tile_x * kTileW + threadIdx.x};
}

// in[plane, y + dy, x + dx], zero outside the plane (the padding).
template <typename T>
__device__ __forceinline__ compute_t<T> shifted(const T* __restrict__ plane, const DepthwiseConvSizes& s, int64_t y,
                                                int64_t x, int dy, int dx) {
  const int64_t r = y + dy, q = x + dx;
  return r >= 0 && r < s.H && q >= 0 && q < s.W ? to_compute(__ldg(plane + r * s.W + q)) : compute_t<T>(0);
}

// out = bias + the 3×3 stencil of taps [C, 9] (row-major 3×3 per channel) over in; bias may be null.
template <typename T, bool kRotate>
__global__ void __launch_bounds__(kThreads)
    depthwise_conv3x3_fwd_kernel(DepthwiseConvSizes s, const T* __restrict__ in, const T* __restrict__ taps,
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

// Row blockIdx.x of partial [tile_count, 10]: the tile's 9 sums of grad · x shifted by the taps, and of grad.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    depthwise_conv3x3_bwd_kernel(DepthwiseConvSizes s, const T* __restrict__ grad, const T* __restrict__ x,
                                 compute_t<T>* __restrict__ partial) {
  using A = compute_t<T>;
  __shared__ A products[kSums][kThreads];
  const TilePosition p = position_of(s);
  const int thread = threadIdx.y * kTileW + threadIdx.x;
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
__global__ void depthwise_conv3x3_reduce_kernel(DepthwiseConvSizes s, int64_t tiles, const A* __restrict__ partial,
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

// out = bias + the stencil of taps (weight's taps, contiguous) over in; with rotate the taps are rotated
// by 180° (the backward to x, from grad).
void stencil(const DepthwiseConvSizes& s, const at::Tensor& in, const at::Tensor& taps, const at::Tensor* bias,
             bool rotate, at::Tensor& out) {
  const int64_t blocks = tile_count(s);
  if (blocks == 0) return;
  TORCH_CHECK(blocks <= INT32_MAX, "depthwise_conv3x3: ", blocks, " tiles are too many for the CUDA grid");
  const dim3 block(kTileW, kTileH), grid(static_cast<unsigned>(blocks));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "depthwise_conv3x3_cuda", [&] {
    using T = cuda_t<scalar_t>;
    const T* bias_ptr = bias == nullptr ? nullptr : cuda_cptr<scalar_t>(*bias);
    if (rotate) {
      depthwise_conv3x3_fwd_kernel<T, true><<<grid, block, 0, stream>>>(s, cuda_cptr<scalar_t>(in),
                                                                        cuda_cptr<scalar_t>(taps), bias_ptr,
                                                                        cuda_ptr<scalar_t>(out));
    } else {
      depthwise_conv3x3_fwd_kernel<T, false><<<grid, block, 0, stream>>>(s, cuda_cptr<scalar_t>(in),
                                                                         cuda_cptr<scalar_t>(taps), bias_ptr,
                                                                         cuda_ptr<scalar_t>(out));
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The accumulation dtype of the tap sums: float64 for float64, float32 otherwise.
at::ScalarType compute_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

// sums [C, 10]: sums[c, 3i + j] = Σ_b Σ_{y,x} grad[b, c, y, x] x[b, c, y + i − 1, x + j − 1] and sums[c, 9] =
// Σ grad[b, c], through one row of partial sums per tile.
at::Tensor tap_sums(const DepthwiseConvSizes& s, const at::Tensor& grad, const at::Tensor& x) {
  const auto accumulate = x.options().dtype(compute_dtype(x.scalar_type()));
  const int64_t rows = tile_count(s);
  TORCH_CHECK(rows <= INT32_MAX, "depthwise_conv3x3_bwd: ", rows, " tiles are too many for the CUDA grid");
  auto partial = at::empty({rows, kSums}, accumulate);
  auto sums = at::empty({s.C, kSums}, accumulate);
  if (s.C == 0) return sums;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_conv3x3_bwd_cuda", [&] {
    using A = compute_t<cuda_t<scalar_t>>;
    if (rows > 0) {
      depthwise_conv3x3_bwd_kernel<<<static_cast<unsigned>(rows), dim3(kTileW, kTileH), 0, stream>>>(
          s, cuda_cptr<scalar_t>(grad), cuda_cptr<scalar_t>(x), partial.mutable_data_ptr<A>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    // With no rows (an empty batch or map) the reduction writes zeros.
    const int64_t tiles = s.B * s.C == 0 ? 0 : rows / (s.B * s.C);
    const int64_t threads = s.C * kSums;
    depthwise_conv3x3_reduce_kernel<A>
        <<<static_cast<unsigned>((threads + kReduceThreads - 1) / kReduceThreads), kReduceThreads, 0, stream>>>(
            s, tiles, partial.const_data_ptr<A>(), sums.mutable_data_ptr<A>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return sums;
}

at::Tensor depthwise_conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_fwd", x, weight, bias ? &*bias : nullptr);
  c10::cuda::CUDAGuard guard(x.device());
  const auto x_c = x.contiguous(), taps = weight.contiguous();
  const std::optional<at::Tensor> bias_c = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  stencil(s, x_c, taps, bias_c ? &*bias_c : nullptr, /*rotate=*/false, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& weight, bool need_x,
                                                                     bool need_weight, bool need_bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_bwd", x, weight, nullptr, &grad);
  c10::cuda::CUDAGuard guard(x.device());
  // Each gradient not asked for is an empty tensor of its own (custom-op outputs may not alias).
  const auto none = [&] { return x.new_empty({0}); };
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernels read rows contiguously.
  const auto grad_c = grad.contiguous();
  auto grad_x = none(), grad_weight = none(), grad_bias = none();
  if (need_x) {
    grad_x = at::empty_like(grad_c, at::MemoryFormat::Contiguous);
    if (grad_x.numel() > 0) stencil(s, grad_c, weight.contiguous(), nullptr, /*rotate=*/true, grad_x);
  }
  if (need_weight || need_bias) {
    const auto sums = tap_sums(s, grad_c, x.contiguous());
    // Copies, never views of sums: with C = 1 both would alias it.
    if (need_weight) {
      grad_weight = sums.narrow(1, 0, 9).reshape(weight.sizes()).to(weight.scalar_type(), false, /*copy=*/true);
    }
    if (need_bias) grad_bias = sums.select(1, 9).to(x.scalar_type(), false, /*copy=*/true);
  }
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("depthwise_conv3x3_fwd", &depthwise_conv3x3_fwd);
  m.impl("depthwise_conv3x3_bwd", &depthwise_conv3x3_bwd);
}

}  // namespace mcmri_fast::cuda
