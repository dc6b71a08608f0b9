// Torch binding of the CUDA PReLU: checks, contiguity, device guard, stream, outputs, dtype dispatch;
// the kernels and their launchers are in prelu.cu (no torch headers there).
#include "prelu_binding.h"

#include <ATen/OpMathType.h>

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../prelu_args.h"
#include "cuda_types.h"
#include "prelu_launch.h"

namespace mcmri_fast::cuda {
namespace {

PreluShape shape_of(const PreluSizes& s) { return PreluShape{s.B, s.C, s.N, s.shared}; }

}  // namespace

at::Tensor prelu_fwd(const at::Tensor& x, const at::Tensor& weight) {
  const auto s = check_prelu_args("prelu_fwd", x, weight);
  TORCH_CHECK(x.is_cuda(), "prelu_fwd: expected CUDA tensors, got ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const auto x_c = x.contiguous(), weight_c = weight.contiguous();
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prelu_fwd_cuda", [&] {
    C10_CUDA_CHECK(launch_prelu_fwd(shape_of(s), cuda_cptr<scalar_t>(x_c), cuda_cptr<scalar_t>(weight_c),
                                    cuda_ptr<scalar_t>(out), stream));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> prelu_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                             bool need_x, bool need_weight) {
  const auto s = check_prelu_args("prelu_bwd", x, weight, &grad);
  TORCH_CHECK(x.is_cuda(), "prelu_bwd: expected CUDA tensors, got ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), x_c = x.contiguous(), weight_c = weight.contiguous();
  const auto accumulate = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_x = need_x ? at::empty_like(x_c, at::MemoryFormat::Contiguous) : x.new_empty({0});
  const int64_t chunks = prelu_weight_chunks(s.N);
  auto partials = need_weight ? at::zeros({s.B, s.C, chunks}, x.options().dtype(accumulate)) : x.new_empty({0}, accumulate);
  if (x.numel() > 0 && (need_x || need_weight)) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prelu_bwd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      C10_CUDA_CHECK(launch_prelu_bwd(shape_of(s), cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(x_c),
                                      cuda_cptr<scalar_t>(weight_c), need_x ? cuda_ptr<scalar_t>(grad_x) : nullptr,
                                      need_weight ? partials.mutable_data_ptr<acc_t>() : nullptr, stream));
    });
  }
  // The chunks of a row summed in order (a fixed reduction: deterministic).
  return {grad_x, need_weight ? partials.sum(-1) : partials};
}

}  // namespace mcmri_fast::cuda
