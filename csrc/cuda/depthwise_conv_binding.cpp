// Torch binding of the CUDA depthwise 3×3 convolution: checks, contiguity, device guard, stream, outputs,
// dtype dispatch; the kernels and their launchers are in depthwise_conv.cu (no torch headers there).
#include "depthwise_conv_binding.h"

// c10's stream and guard headers (ATen/cuda/CUDAContext.h would pull in cuBLAS / cuSPARSE headers for
// nothing): c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream returns.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../depthwise_conv_args.h"
#include "cuda_types.h"
#include "depthwise_conv_launch.h"

namespace mcmri_fast::cuda {
namespace {

DepthwiseConvShape shape_of(const DepthwiseConvSizes& s) { return DepthwiseConvShape{s.B, s.C, s.H, s.W}; }

// The accumulation dtype of the tap sums: float64 for float64, float32 otherwise.
at::ScalarType compute_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

void stencil(const DepthwiseConvShape& shape, const at::Tensor& in, const at::Tensor& taps, const at::Tensor* bias,
             bool rotate, at::Tensor& out) {
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "depthwise_conv3x3_cuda", [&] {
    C10_CUDA_CHECK(launch_depthwise_conv3x3_stencil(shape, cuda_cptr<scalar_t>(in), cuda_cptr<scalar_t>(taps),
                                                    bias == nullptr ? nullptr : cuda_cptr<scalar_t>(*bias), rotate,
                                                    cuda_ptr<scalar_t>(out), stream));
  });
}

}  // namespace

at::Tensor depthwise_conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_fwd", x, weight, bias ? &*bias : nullptr);
  TORCH_CHECK(x.is_cuda(), "depthwise_conv3x3_fwd: expected CUDA tensors, got ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const auto x_c = x.contiguous(), taps = weight.contiguous();
  const std::optional<at::Tensor> bias_c = bias ? std::optional<at::Tensor>(bias->contiguous()) : std::nullopt;
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  stencil(shape_of(s), x_c, taps, bias_c ? &*bias_c : nullptr, /*rotate=*/false, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& weight, bool need_x,
                                                                     bool need_weight, bool need_bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_bwd", x, weight, nullptr, &grad);
  TORCH_CHECK(x.is_cuda(), "depthwise_conv3x3_bwd: expected CUDA tensors, got ", x.device());
  c10::cuda::CUDAGuard guard(x.device());
  const DepthwiseConvShape shape = shape_of(s);
  // Each gradient not asked for is an empty tensor of its own (custom-op outputs may not alias).
  const auto none = [&] { return x.new_empty({0}); };
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernels read rows contiguously.
  const auto grad_c = grad.contiguous();
  auto grad_x = none(), grad_weight = none(), grad_bias = none();
  if (need_x) {
    grad_x = at::empty_like(grad_c, at::MemoryFormat::Contiguous);
    if (grad_x.numel() > 0) stencil(shape, grad_c, weight.contiguous(), nullptr, /*rotate=*/true, grad_x);
  }
  if (need_weight || need_bias) {
    const auto x_c = x.contiguous();
    const auto accumulate = x.options().dtype(compute_dtype(x.scalar_type()));
    auto partial = at::empty({depthwise_conv3x3_partial_rows(shape), 10}, accumulate);
    auto sums = at::empty({s.C, 10}, accumulate);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_conv3x3_bwd_cuda", [&] {
      using A = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
      C10_CUDA_CHECK(launch_depthwise_conv3x3_tap_sums(shape, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(x_c),
                                                       partial.mutable_data_ptr<A>(), sums.mutable_data_ptr<A>(),
                                                       stream));
    });
    // Copies, never views of sums: with C = 1 both would alias it.
    if (need_weight) {
      grad_weight = sums.narrow(1, 0, 9).reshape(weight.sizes()).to(weight.scalar_type(), false, /*copy=*/true);
    }
    if (need_bias) grad_bias = sums.select(1, 9).to(x.scalar_type(), false, /*copy=*/true);
  }
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace mcmri_fast::cuda
