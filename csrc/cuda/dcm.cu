// CUDA kernels of IMA's DCM data-consistency step (the contract: csrc/dcm.h; csrc/cpu/dcm.cpp computes the
// same on the CPU): memory-bound passes around cuFFT.
//   - prologue, epilogue, blend, split: one thread per element, grid-stride; complex spectra as float2 /
//     double2;
//   - backward: blocks of kThreads threads over chunks of kChunk elements of one plane (b, c); each thread
//     writes the gradients of its elements and the block reduces its chunk's three sums in shared memory
//     (a fixed tree: deterministic), one partial per (plane, chunk), which torch then sums in order.
// Nothing in it needs sm_80+.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../dcm.h"
#include "cuda_types.h"
#include "grid_stride.cuh"

namespace mcmri_fast::cuda {
namespace {

constexpr int kItems = 8;  // elements per thread and chunk of the backward
constexpr int64_t kChunk = int64_t(kThreads) * kItems;

template <typename T>
__global__ void prologue_kernel(int64_t n, const T* __restrict__ x, const T* __restrict__ z, const T* __restrict__ g,
                                const T* __restrict__ r, const T* __restrict__ coef, T* __restrict__ out) {
  const T alpha = coef[1], lambda = coef[2];
  MCMRI_GRID_STRIDE(e, n) {
    out[e] = z[e] - x[e];
    out[n + e] = alpha * (x[e] - g[e]) + lambda * r[e];
  }
}

template <typename T>
__global__ void epilogue_kernel(int64_t n, const T* __restrict__ y, const T* __restrict__ x, const T* __restrict__ g,
                                const T* __restrict__ r, const T* __restrict__ coef, T* __restrict__ out) {
  const T mu = coef[0], alpha = coef[1], lambda = coef[2];
  MCMRI_GRID_STRIDE(e, n) { out[e] = x[e] - mu * (alpha * (x[e] - g[e]) + lambda * r[e]) + y[e]; }
}

// The offset in a mask [Bm, Hm, Wh] of spectrum element e of [B, C, H, Wh].
__device__ __forceinline__ int64_t mask_offset(const DcmSizes& s, int64_t e) {
  const int64_t j = e % s.Wh, row = e / s.Wh, i = row % s.H, b = row / (s.C * s.H);
  return ((s.Bm == 1 ? 0 : b) * s.Hm + (s.Hm == 1 ? 0 : i)) * s.Wh + j;
}

template <typename T>
__global__ void blend_kernel(DcmSizes s, int64_t n, const vec_t<T>* __restrict__ spec, const T* __restrict__ mask0,
                             const T* __restrict__ mask_u, const T* __restrict__ coef, vec_t<T>* __restrict__ out) {
  const T mu = coef[0];
  MCMRI_GRID_STRIDE(e, n) {
    const int64_t m = mask_offset(s, e);
    const T w0 = mask0[m], wu = mu * mask_u[m];
    const vec_t<T> a = spec[e], d = spec[n + e];
    out[e] = {w0 * a.x + wu * d.x, w0 * a.y + wu * d.y};
  }
}

template <typename T>
__global__ void split_kernel(DcmSizes s, int64_t n, const vec_t<T>* __restrict__ spec, const T* __restrict__ mask0,
                             const T* __restrict__ mask_u, vec_t<T>* __restrict__ out) {
  MCMRI_GRID_STRIDE(e, n) {
    const int64_t m = mask_offset(s, e);
    const T w0 = mask0[m], wu = mask_u[m];
    const vec_t<T> v = spec[e];
    out[e] = {w0 * v.x, w0 * v.y};
    out[n + e] = {wu * v.x, wu * v.y};
  }
}

// blockIdx.x: the chunk of the plane; planes step by gridDim.y.
template <typename T>
__global__ void backward_kernel(int64_t planes, int64_t plane, int64_t chunks, const T* __restrict__ grad,
                                const T* __restrict__ proj, const T* __restrict__ x, const T* __restrict__ g,
                                const T* __restrict__ r, const T* __restrict__ coef, T* __restrict__ grad_x,
                                T* __restrict__ grad_z, T* __restrict__ grad_g, T* __restrict__ grad_r,
                                T* __restrict__ partials) {
  __shared__ T sums[3][kThreads];
  const int64_t n = planes * plane;
  const T mu = coef[0], alpha = coef[1], lambda = coef[2];
  for (int64_t bc = blockIdx.y; bc < planes; bc += gridDim.y) {
    T sum_mu = 0, sum_alpha = 0, sum_lambda = 0;
    const int64_t start = blockIdx.x * kChunk;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = start + int64_t(k) * kThreads + threadIdx.x;
      if (j < plane) {
        const int64_t e = bc * plane + j;
        const T gr = grad[e], p0 = proj[e], w = proj[n + e] - gr, e_mu = mu * w, diff = x[e] - g[e];
        grad_x[e] = gr - p0 + alpha * e_mu;
        grad_z[e] = p0;
        grad_g[e] = -alpha * e_mu;
        grad_r[e] = lambda * e_mu;
        sum_mu += (alpha * diff + lambda * r[e]) * w;
        sum_alpha += diff * e_mu;
        sum_lambda += r[e] * e_mu;
      }
    }
    sums[0][threadIdx.x] = sum_mu;
    sums[1][threadIdx.x] = sum_alpha;
    sums[2][threadIdx.x] = sum_lambda;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) {
        for (int q = 0; q < 3; ++q) sums[q][threadIdx.x] += sums[q][threadIdx.x + half];
      }
      __syncthreads();
    }
    if (threadIdx.x < 3) partials[(bc * chunks + blockIdx.x) * 3 + threadIdx.x] = sums[threadIdx.x][0];
    __syncthreads();  // sums is reused by the next plane
  }
}

std::vector<int64_t> pair_shape(at::IntArrayRef sizes) {
  std::vector<int64_t> shape{2};
  shape.insert(shape.end(), sizes.begin(), sizes.end());
  return shape;
}

at::Tensor dcm_prologue(const at::Tensor& x, const at::Tensor& z, const at::Tensor& g, const at::Tensor& r,
                        const at::Tensor& coef) {
  check_dcm_images("dcm_prologue", x, {&z, &g, &r}, {"z", "g", "r"}, coef);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty(pair_shape(x.sizes()), x.options());
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcm_prologue_cuda", [&] {
    prologue_kernel<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        n, x.const_data_ptr<scalar_t>(), z.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        r.const_data_ptr<scalar_t>(), coef.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor dcm_epilogue(const at::Tensor& y, const at::Tensor& x, const at::Tensor& g, const at::Tensor& r,
                        const at::Tensor& coef) {
  check_dcm_images("dcm_epilogue", x, {&y, &g, &r}, {"y", "g", "r"}, coef);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcm_epilogue_cuda", [&] {
    epilogue_kernel<<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        n, y.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
        r.const_data_ptr<scalar_t>(), coef.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor dcm_blend(const at::Tensor& spec, const at::Tensor& mask0, const at::Tensor& mask_u, const at::Tensor& coef) {
  const auto s = check_dcm_blend_args("dcm_blend", spec, mask0, mask_u, coef);
  c10::cuda::CUDAGuard guard(spec.device());
  auto out = at::empty(spec.sizes().slice(1), spec.options());
  const int64_t n = out.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "dcm_blend_cuda", [&] {
    blend_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, n, vec_cptr<scalar_t>(spec), mask0.const_data_ptr<scalar_t>(), mask_u.const_data_ptr<scalar_t>(),
        coef.const_data_ptr<scalar_t>(), vec_ptr<scalar_t>(out));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor dcm_split(const at::Tensor& spec, const at::Tensor& mask0, const at::Tensor& mask_u) {
  const auto s = check_dcm_spectrum_args("dcm_split", spec, false, mask0, mask_u);
  c10::cuda::CUDAGuard guard(spec.device());
  auto out = at::empty(pair_shape(spec.sizes()), spec.options());
  const int64_t n = spec.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(mask0.scalar_type(), "dcm_split_cuda", [&] {
    split_kernel<scalar_t><<<blocks_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, n, vec_cptr<scalar_t>(spec), mask0.const_data_ptr<scalar_t>(), mask_u.const_data_ptr<scalar_t>(),
        vec_ptr<scalar_t>(out));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> dcm_backward(
    const at::Tensor& grad, const at::Tensor& proj, const at::Tensor& x, const at::Tensor& g, const at::Tensor& r,
    const at::Tensor& coef) {
  const auto s = check_dcm_backward_args("dcm_backward", grad, proj, x, g, r, coef);
  c10::cuda::CUDAGuard guard(x.device());
  auto grad_x = at::empty_like(x), grad_z = at::empty_like(x), grad_g = at::empty_like(x), grad_r = at::empty_like(x);
  const int64_t planes = s.B * s.C, plane = s.H * s.W, chunks = std::max<int64_t>((plane + kChunk - 1) / kChunk, 1);
  TORCH_CHECK(chunks <= 0x7fffffff, "dcm_backward: a plane of ", plane, " elements is too large");
  auto partials = at::zeros({planes, chunks, 3}, x.options());
  if (x.numel() > 0) {
    const dim3 grid(unsigned(chunks), unsigned(std::min(planes, kMaxBlocks)));
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcm_backward_cuda", [&] {
      backward_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          planes, plane, chunks, grad.const_data_ptr<scalar_t>(), proj.const_data_ptr<scalar_t>(),
          x.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(), r.const_data_ptr<scalar_t>(),
          coef.const_data_ptr<scalar_t>(), grad_x.mutable_data_ptr<scalar_t>(), grad_z.mutable_data_ptr<scalar_t>(),
          grad_g.mutable_data_ptr<scalar_t>(), grad_r.mutable_data_ptr<scalar_t>(), partials.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // The chunks of a plane summed in order (a fixed reduction: deterministic).
  return {grad_x, grad_z, grad_g, grad_r, partials.sum(1)};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("dcm_prologue", &dcm_prologue);
  m.impl("dcm_blend", &dcm_blend);
  m.impl("dcm_epilogue", &dcm_epilogue);
  m.impl("dcm_split", &dcm_split);
  m.impl("dcm_backward", &dcm_backward);
}

}  // namespace mcmri_fast::cuda
