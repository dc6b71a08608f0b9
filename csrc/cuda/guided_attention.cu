// CUDA kernels of the guided attention (the contract: csrc/guided_attention.h; csrc/cpu/guided_attention.cpp
// computes the same on the CPU). Memory-bound passes over f1, f2 [B, C, N]:
//   - the spatial max: blocks of kThreads threads over chunks of kChunk pixels of one row (b, c)
//     (row_chunks.cuh), each thread's first maximum, then a fixed tree in shared memory; one partial per
//     (row, chunk), which torch combines in order (the first chunk holding the row's maximum);
//   - the channel max: one thread per pixel, the channels looped inside (coalesced across the warp);
//   - the apply: one thread per element, grid-stride;
//   - the backward pass: one thread per pixel of sample blockIdx.y, the channels looped inside; the
//     per-channel sums reduced per warp by shuffles (a fixed order) into one partial per (warp, channel),
//     which torch sums in order: deterministic, no atomics.
// A NaN wins a max (the first NaN). float16 / bfloat16 are computed in float, float64 in double. Nothing in
// it needs sm_80+.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../guided_attention.h"
#include "compute_type.cuh"
#include "cuda_types.h"
#include "row_chunks.cuh"

namespace mcmri_fast::cuda {
namespace {

constexpr int kWarp = 32;

// Whether (v, i) comes before the running first maximum (m, j): a NaN over a number, a greater value, or
// the same (or another NaN) at a smaller position.
template <typename Acc>
__device__ __forceinline__ bool comes_first(Acc v, int64_t i, Acc m, int64_t j) {
  const bool v_nan = v != v, m_nan = m != m;
  if (v_nan != m_nan) return v_nan;
  if (v_nan || v == m) return i < j;
  return v > m;
}

template <typename T>
__global__ void guided_attention_spatial_max_kernel(int64_t rows, int64_t N, int64_t chunks, const T* __restrict__ f1,
                                                    compute_t<T>* __restrict__ max_partials,
                                                    int64_t* __restrict__ index_partials) {
  using Acc = compute_t<T>;
  __shared__ Acc shared_max[kThreads];
  __shared__ int64_t shared_index[kThreads];
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t base = row * N, start = blockIdx.x * kChunk;
    Acc best = -INFINITY;
    int64_t where = INT64_MAX;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = start + int64_t(k) * kThreads + threadIdx.x;
      if (j < N) {
        const Acc v = to_compute(f1[base + j]);
        if (comes_first(v, j, best, where)) {
          best = v;
          where = j;
        }
      }
    }
    shared_max[threadIdx.x] = best;
    shared_index[threadIdx.x] = where;
    __syncthreads();
    for (int half = kThreads / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) {
        const Acc v = shared_max[threadIdx.x + half];
        const int64_t i = shared_index[threadIdx.x + half];
        if (i != INT64_MAX && comes_first(v, i, shared_max[threadIdx.x], shared_index[threadIdx.x])) {
          shared_max[threadIdx.x] = v;
          shared_index[threadIdx.x] = i;
        }
      }
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      max_partials[row * chunks + blockIdx.x] = shared_max[0];
      index_partials[row * chunks + blockIdx.x] = shared_index[0];
    }
    __syncthreads();  // the shared arrays are reused by the next row
  }
}

template <typename T>
__global__ void guided_attention_channel_max_kernel(GuidedAttentionSizes s, const T* __restrict__ f1,
                                                    const compute_t<T>* __restrict__ ca, compute_t<T>* __restrict__ out,
                                                    int64_t* __restrict__ index) {
  using Acc = compute_t<T>;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.B * s.N; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / s.N, p = i - b * s.N;
    const T* column = f1 + b * s.C * s.N + p;
    Acc best = to_compute(column[0]) * ca[b * s.C];
    int64_t which = 0;
    for (int64_t c = 1; c < s.C; ++c) {
      const Acc a = to_compute(column[c * s.N]) * ca[b * s.C + c];
      if (a > best || (a != a && best == best)) {
        best = a;
        which = c;
      }
    }
    out[i] = best;
    index[i] = which;
  }
}

template <typename T>
__global__ void guided_attention_apply_kernel(GuidedAttentionSizes s, int64_t total, const T* __restrict__ f1,
                                              const T* __restrict__ f2, const compute_t<T>* __restrict__ ca,
                                              const compute_t<T>* __restrict__ sa, T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / s.N, p = i - row * s.N;
    const auto x1 = to_compute(f1[i]), x2 = to_compute(f2[i]);
    out[i] = from_compute<T>(x2 * (1 + x1 * ca[row] * sa[(row / s.C) * s.N + p]));
  }
}

// blockIdx.x: the block of kThreads pixels of sample blockIdx.y (y steps by gridDim.y). channel_partials
// [B, blocks · warps, C]: one partial per (warp, channel).
template <typename T>
__global__ void guided_attention_backward_pass_kernel(GuidedAttentionSizes s, int64_t blocks, const T* __restrict__ grad,
                                                      const T* __restrict__ f1, const T* __restrict__ f2,
                                                      const compute_t<T>* __restrict__ ca,
                                                      const compute_t<T>* __restrict__ sa, T* __restrict__ grad_f1,
                                                      T* __restrict__ grad_f2, compute_t<T>* __restrict__ pixel_sums,
                                                      compute_t<T>* __restrict__ channel_partials) {
  using Acc = compute_t<T>;
  constexpr int kWarps = kThreads / kWarp;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  for (int64_t b = blockIdx.y; b < s.B; b += gridDim.y) {
    const int64_t p = blockIdx.x * int64_t(kThreads) + threadIdx.x;
    const bool valid = p < s.N;
    const Acc spatial = valid ? sa[b * s.N + p] : Acc(0);
    Acc pixel = 0;
    for (int64_t c = 0; c < s.C; ++c) {
      const int64_t at = (b * s.C + c) * s.N + p;
      const Acc scale = ca[b * s.C + c];
      Acc ga_f1 = 0;
      if (valid) {
        const Acc g = to_compute(grad[at]), x1 = to_compute(f1[at]), x2 = to_compute(f2[at]);
        const Acc ga = g * x2;
        ga_f1 = ga * x1;
        grad_f1[at] = from_compute<T>(ga * scale * spatial);
        grad_f2[at] = from_compute<T>(g * (1 + x1 * scale * spatial));
        pixel += ga_f1 * scale;
      }
      Acc term = ga_f1 * spatial;
#pragma unroll
      for (int offset = kWarp / 2; offset > 0; offset /= 2) term += __shfl_down_sync(0xffffffffu, term, offset);
      if (lane == 0) channel_partials[(b * blocks * kWarps + blockIdx.x * kWarps + warp) * s.C + c] = term;
    }
    if (valid) pixel_sums[b * s.N + p] = pixel;
  }
}

unsigned pointwise_blocks(int64_t total) { return unsigned(std::min((total + kThreads - 1) / kThreads, kMaxBlocks)); }

std::tuple<at::Tensor, at::Tensor> guided_attention_spatial_max(const at::Tensor& f1) {
  const auto s = check_guided_attention_args("guided_attention_spatial_max", f1);
  c10::cuda::CUDAGuard guard(f1.device());
  const auto f1_c = f1.contiguous();
  const auto accumulate = guided_attention_accumulate(f1.scalar_type());
  const int64_t chunks = (s.N + kChunk - 1) / kChunk;
  TORCH_CHECK(chunks <= 0x7fffffff, "guided_attention_spatial_max: a row of ", s.N, " pixels is too long");
  // every slot is written: block (chunk, row) stores its chunk's first maximum
  auto values = at::empty({s.B * s.C, chunks}, f1.options().dtype(accumulate));
  auto indices = at::empty({s.B * s.C, chunks}, f1.options().dtype(at::kLong));
  const dim3 grid(unsigned(chunks), unsigned(std::min(s.B * s.C, kMaxBlocks)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_spatial_max_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    guided_attention_spatial_max_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s.B * s.C, s.N, chunks, cuda_cptr<scalar_t>(f1_c), values.mutable_data_ptr<acc_t>(),
        indices.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // the chunks in order: the first chunk holding the row's maximum (a NaN: the first NaN's)
  const auto best = values.amax(1, true);
  const auto holds = values.eq(best).logical_or_(values.isnan().logical_and_(best.isnan()));
  const auto chunk = holds.to(at::kByte).argmax(1, true);
  return {best.view({s.B, s.C}), indices.gather(1, chunk).view({s.B, s.C})};
}

std::tuple<at::Tensor, at::Tensor> guided_attention_channel_max(const at::Tensor& f1, const at::Tensor& ca) {
  const auto s = check_guided_attention_args("guided_attention_channel_max", f1, &ca);
  c10::cuda::CUDAGuard guard(f1.device());
  const auto f1_c = f1.contiguous(), ca_c = ca.contiguous();
  auto out = at::empty({s.B, s.N}, ca.options());
  auto index = at::empty({s.B, s.N}, f1.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_channel_max_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    guided_attention_channel_max_kernel<<<pointwise_blocks(s.B * s.N), kThreads, 0,
                                          c10::cuda::getCurrentCUDAStream()>>>(
        s, cuda_cptr<scalar_t>(f1_c), ca_c.const_data_ptr<acc_t>(), out.mutable_data_ptr<acc_t>(),
        index.mutable_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, index};
}

at::Tensor guided_attention_apply(const at::Tensor& f1, const at::Tensor& f2, const at::Tensor& ca,
                                  const at::Tensor& sa) {
  const auto s = check_guided_attention_args("guided_attention_apply", f1, &ca, &sa, &f2);
  c10::cuda::CUDAGuard guard(f1.device());
  const auto f1_c = f1.contiguous(), f2_c = f2.contiguous(), ca_c = ca.contiguous(), sa_c = sa.contiguous();
  auto out = at::empty_like(f2_c, at::MemoryFormat::Contiguous);
  const int64_t total = out.numel();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_apply_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    guided_attention_apply_kernel<<<pointwise_blocks(total), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, total, cuda_cptr<scalar_t>(f1_c), cuda_cptr<scalar_t>(f2_c), ca_c.const_data_ptr<acc_t>(),
        sa_c.const_data_ptr<acc_t>(), cuda_ptr<scalar_t>(out));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> guided_attention_backward_pass(
    const at::Tensor& grad, const at::Tensor& f1, const at::Tensor& f2, const at::Tensor& ca, const at::Tensor& sa) {
  const auto s = check_guided_attention_args("guided_attention_backward_pass", f1, &ca, &sa, &f2, &grad);
  c10::cuda::CUDAGuard guard(f1.device());
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), f1_c = f1.contiguous(), f2_c = f2.contiguous();
  const auto ca_c = ca.contiguous(), sa_c = sa.contiguous();
  auto grad_f1 = at::empty_like(f1_c, at::MemoryFormat::Contiguous), grad_f2 = at::empty_like(grad_f1);
  auto pixel_sums = at::empty({s.B, s.N}, ca.options());
  const int64_t blocks = (s.N + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= 0x7fffffff, "guided_attention_backward_pass: ", s.N, " pixels are too many");
  // every slot is written: lane 0 of each warp stores its partial of every channel
  auto partials = at::empty({s.B, blocks * (kThreads / kWarp), s.C}, ca.options());
  const dim3 grid(unsigned(blocks), unsigned(std::min(s.B, kMaxBlocks)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    guided_attention_backward_pass_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, blocks, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(f1_c), cuda_cptr<scalar_t>(f2_c),
        ca_c.const_data_ptr<acc_t>(), sa_c.const_data_ptr<acc_t>(), cuda_ptr<scalar_t>(grad_f1),
        cuda_ptr<scalar_t>(grad_f2), pixel_sums.mutable_data_ptr<acc_t>(), partials.mutable_data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  // the warps' partials summed in order (torch's reduction: deterministic)
  return {grad_f1, grad_f2, pixel_sums, partials.sum(1)};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("guided_attention_spatial_max", &guided_attention_spatial_max);
  m.impl("guided_attention_channel_max", &guided_attention_channel_max);
  m.impl("guided_attention_apply", &guided_attention_apply);
  m.impl("guided_attention_backward_pass", &guided_attention_backward_pass);
}

}  // namespace mcmri_fast::cuda
