// CUDA kernels of PReLU (the contract: csrc/prelu.h; csrc/cpu/prelu.cpp computes the same on the CPU).
// Memory-bound work over x [B, C, N]:
//   - forward: one thread per element, grid-stride;
//   - backward: blocks of kThreads threads over chunks of kChunk elements of one row (b, c); each thread
//     writes the input's gradient of its elements and the block reduces the slope's partial sum of its
//     chunk in shared memory (a fixed tree: deterministic), one partial per (row, chunk), which torch
//     then sums in order;
//   - float16 / bfloat16 are computed in float, float64 in double.
// Nothing in it needs sm_80+.
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../prelu.h"
#include "compute_type.cuh"
#include "cuda_types.h"
#include "row_chunks.cuh"

namespace mcmri_fast::cuda {
namespace {

template <typename T>
__device__ __forceinline__ compute_t<T> slope_of(const PreluSizes& s, const T* weight, int64_t row) {
  return to_compute(weight[s.shared ? 0 : row % s.C]);
}

template <typename T>
__global__ void prelu_fwd_kernel(PreluSizes s, int64_t total, const T* __restrict__ x, const T* __restrict__ weight,
                                 T* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const auto v = to_compute(x[i]);
    out[i] = from_compute<T>(v > 0 ? v : slope_of(s, weight, i / s.N) * v);
  }
}

// blockIdx.x: the chunk of the row; rows step by gridDim.y.
template <typename T>
__global__ void prelu_bwd_kernel(PreluSizes s, int64_t chunks, const T* __restrict__ grad, const T* __restrict__ x,
                                 const T* __restrict__ weight, T* __restrict__ grad_x,
                                 compute_t<T>* __restrict__ weight_partials) {
  using Acc = compute_t<T>;
  __shared__ Acc shared_sums[kThreads];
  for (int64_t row = blockIdx.y; row < s.B * s.C; row += gridDim.y) {
    const Acc w = slope_of(s, weight, row);
    const int64_t base = row * s.N, start = blockIdx.x * kChunk;
    Acc sum = 0;
#pragma unroll
    for (int k = 0; k < kItems; ++k) {
      const int64_t j = start + int64_t(k) * kThreads + threadIdx.x;
      if (j < s.N) {
        const Acc g = to_compute(grad[base + j]), v = to_compute(x[base + j]);
        if (grad_x != nullptr) grad_x[base + j] = from_compute<T>(v > 0 ? g : w * g);
        if (!(v > 0)) sum += v * g;
      }
    }
    if (weight_partials == nullptr) continue;
    sum = block_sum(sum, shared_sums);
    if (threadIdx.x == 0) weight_partials[row * chunks + blockIdx.x] = sum;
  }
}

at::Tensor prelu_fwd(const at::Tensor& x, const at::Tensor& weight) {
  const auto s = check_prelu_args("prelu_fwd", x, weight);
  c10::cuda::CUDAGuard guard(x.device());
  const auto x_c = x.contiguous(), weight_c = weight.contiguous();
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  const int64_t total = out.numel();
  if (total == 0) return out;
  const int64_t blocks = std::min((total + kThreads - 1) / kThreads, kMaxBlocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prelu_fwd_cuda", [&] {
    prelu_fwd_kernel<<<unsigned(blocks), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        s, total, cuda_cptr<scalar_t>(x_c), cuda_cptr<scalar_t>(weight_c), cuda_ptr<scalar_t>(out));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> prelu_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                             bool need_x, bool need_weight) {
  const auto s = check_prelu_args("prelu_bwd", x, weight, &grad);
  c10::cuda::CUDAGuard guard(x.device());
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), x_c = x.contiguous(), weight_c = weight.contiguous();
  const auto accumulate = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_x = need_x ? at::empty_like(x_c, at::MemoryFormat::Contiguous) : x.new_empty({0});
  const int64_t rows = s.B * s.C, chunks = (s.N + kChunk - 1) / kChunk;
  TORCH_CHECK(chunks <= 0x7fffffff, "prelu_bwd: a row of ", s.N, " elements is too long");
  auto partials = need_weight ? at::zeros({s.B, s.C, chunks}, x.options().dtype(accumulate)) : x.new_empty({0}, accumulate);
  if (x.numel() > 0 && (need_x || need_weight)) {
    const dim3 grid(unsigned(chunks), unsigned(std::min(rows, kMaxBlocks)));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prelu_bwd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      prelu_bwd_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          s, chunks, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(x_c), cuda_cptr<scalar_t>(weight_c),
          need_x ? cuda_ptr<scalar_t>(grad_x) : nullptr, need_weight ? partials.mutable_data_ptr<acc_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // The chunks of a row summed in order (a fixed reduction: deterministic).
  return {grad_x, need_weight ? partials.sum(-1) : partials};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("prelu_fwd", &prelu_fwd);
  m.impl("prelu_bwd", &prelu_bwd);
}

}  // namespace mcmri_fast::cuda
