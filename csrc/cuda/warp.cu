// CUDA kernels of the warp (the contract and the per-pixel arithmetic, shared with csrc/cpu/warp.cpp:
// csrc/warp.h). float32 / float64, contiguous [B, C, H, W] image and [B, 2, H, W] flow.
//   - forward: one thread per output pixel (b, i, j), grid-stride; its bilinear footprint is computed
//     once, then the thread runs over the C channels;
//   - backward: the same threads; the flow's gradient of a pixel is its own sum over the channels
//     (written once, no conflicts: deterministic), while the image's gradient is scattered into the four
//     corners of every sample, which neighbouring pixels share: atomic adds (gpuAtomicAdd), so the order
//     of the float sums, and the last bits of grad_image, vary from run to run.
// Nothing in it needs sm_80+ (gpuAtomicAdd on double has native atomics from sm_60).
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "../warp.h"
#include "grid_stride.cuh"

namespace mcmri_fast::cuda {
namespace {


template <typename T>
__global__ void warp_fwd_kernel(WarpSizes s, const T* __restrict__ image, const T* __restrict__ flow,
                                T* __restrict__ out) {
  const int64_t plane = s.H * s.W, total = s.B * plane;
  MCMRI_GRID_STRIDE(p, total) {
    const int64_t b = p / plane, ij = p % plane, i = ij / s.W, j = ij % s.W;
    const T flow_x = flow[(b * 2 + 0) * plane + ij], flow_y = flow[(b * 2 + 1) * plane + ij];
    const auto f = warp_footprint<T>(s, i, j, flow_x, flow_y);
    const T w0 = f.weight(0), w1 = f.weight(1), w2 = f.weight(2), w3 = f.weight(3);
    for (int64_t c = 0; c < s.C; ++c) {
      const int64_t base = (b * s.C + c) * plane;
      const T* src = image + base;
      out[base + ij] = w0 * src[f.offset[0]] + w1 * src[f.offset[1]] + w2 * src[f.offset[2]] + w3 * src[f.offset[3]];
    }
  }
}

// grad_image (zeroed beforehand) and grad_flow may each be null: not asked for.
template <typename T>
__global__ void warp_bwd_kernel(WarpSizes s, const T* __restrict__ grad, const T* __restrict__ image,
                                const T* __restrict__ flow, T* __restrict__ grad_image, T* __restrict__ grad_flow) {
  const int64_t plane = s.H * s.W, total = s.B * plane;
  MCMRI_GRID_STRIDE(p, total) {
    const int64_t b = p / plane, ij = p % plane, i = ij / s.W, j = ij % s.W;
    const T flow_x = flow[(b * 2 + 0) * plane + ij], flow_y = flow[(b * 2 + 1) * plane + ij];
    const auto f = warp_footprint<T>(s, i, j, flow_x, flow_y);
    T w[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) w[k] = f.weight(k);
    const T fx = f.fx, fy = f.fy;
    T gx = T(0), gy = T(0);
    for (int64_t c = 0; c < s.C; ++c) {
      const int64_t base = (b * s.C + c) * plane;
      const T g = grad[base + ij];
      if (grad_image != nullptr) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if (f.inside[k] != T(0)) gpuAtomicAdd(grad_image + base + f.offset[k], w[k] * g);
        }
      }
      if (grad_flow != nullptr) {
        const T* src = image + base;
        const T v0 = f.inside[0] * src[f.offset[0]], v1 = f.inside[1] * src[f.offset[1]];
        const T v2 = f.inside[2] * src[f.offset[2]], v3 = f.inside[3] * src[f.offset[3]];
        gx += g * ((T(1) - fy) * (v1 - v0) + fy * (v3 - v2));
        gy += g * ((T(1) - fx) * (v2 - v0) + fx * (v3 - v1));
      }
    }
    if (grad_flow != nullptr) {
      grad_flow[(b * 2 + 0) * plane + ij] = gx * f.grad_x;
      grad_flow[(b * 2 + 1) * plane + ij] = gy * f.grad_y;
    }
  }
}

at::Tensor warp_fwd(const at::Tensor& image, const at::Tensor& flow, int64_t padding, bool align_corners) {
  const auto s = check_warp_args("warp_fwd", image, flow, padding, align_corners);
  c10::cuda::CUDAGuard guard(image.device());
  auto out = at::empty_like(image, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "warp_fwd_cuda", [&] {
    warp_fwd_kernel<<<blocks_for(s.B * s.H * s.W), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, image.const_data_ptr<scalar_t>(), flow.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> warp_bwd(const at::Tensor& grad, const at::Tensor& image, const at::Tensor& flow,
                                            int64_t padding, bool align_corners, bool need_image, bool need_flow) {
  const auto s = check_warp_args("warp_bwd", image, flow, padding, align_corners, &grad);
  c10::cuda::CUDAGuard guard(image.device());
  auto grad_image = need_image ? at::zeros_like(image, at::MemoryFormat::Contiguous) : image.new_empty({0});
  auto grad_flow = need_flow ? at::empty_like(flow, at::MemoryFormat::Contiguous) : flow.new_empty({0});
  if (image.numel() == 0 || !(need_image || need_flow)) {
    if (need_flow) grad_flow.zero_();
    return {grad_image, grad_flow};
  }
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "warp_bwd_cuda", [&] {
    warp_bwd_kernel<<<blocks_for(s.B * s.H * s.W), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, grad.const_data_ptr<scalar_t>(), image.const_data_ptr<scalar_t>(), flow.const_data_ptr<scalar_t>(),
        need_image ? grad_image.mutable_data_ptr<scalar_t>() : nullptr,
        need_flow ? grad_flow.mutable_data_ptr<scalar_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {grad_image, grad_flow};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("warp_fwd", &warp_fwd);
  m.impl("warp_bwd", &warp_bwd);
}

}  // namespace mcmri_fast::cuda
