// Torch binding of the CUDA gated fusion: checks, contiguity, device guard, stream, outputs, dtype
// dispatch; the kernels and their launchers are in gated_fusion.cu (no torch headers there).
#include "gated_fusion_binding.h"

// c10's stream and guard headers (ATen/cuda/CUDAContext.h would pull in cuBLAS / cuSPARSE headers for
// nothing): c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream returns.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../gated_fusion_args.h"
#include "cuda_types.h"
#include "gated_fusion_launch.h"

namespace mcmri_fast::cuda {
namespace {

GatedFusionShape shape_of(const GatedFusionSizes& s) { return GatedFusionShape{s.B, s.C, s.N}; }

}  // namespace

at::Tensor gated_fusion_fwd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& gate,
                            std::optional<double> nonfinite) {
  const auto s = check_gated_fusion_args("gated_fusion_fwd", a, b, gate);
  TORCH_CHECK(a.is_cuda(), "gated_fusion_fwd: expected CUDA tensors, got ", a.device());
  c10::cuda::CUDAGuard guard(a.device());
  const auto a_c = a.contiguous(), b_c = b.contiguous(), gate_c = gate.contiguous();
  auto out = at::empty_like(a_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  const GatedFusionShape shape = shape_of(s);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gated_fusion_fwd_cuda", [&] {
    C10_CUDA_CHECK(launch_gated_fusion_fwd(shape, cuda_cptr<scalar_t>(a_c), cuda_cptr<scalar_t>(b_c),
                                           cuda_cptr<scalar_t>(gate_c), cuda_ptr<scalar_t>(out),
                                           nonfinite.has_value(), nonfinite.value_or(0.0), stream));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_fusion_bwd(const at::Tensor& grad, const at::Tensor& a,
                                                                const at::Tensor& b, const at::Tensor& gate,
                                                                std::optional<double> nonfinite) {
  const auto s = check_gated_fusion_args("gated_fusion_bwd", a, b, gate, &grad);
  TORCH_CHECK(a.is_cuda(), "gated_fusion_bwd: expected CUDA tensors, got ", a.device());
  c10::cuda::CUDAGuard guard(a.device());
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), a_c = a.contiguous(), b_c = b.contiguous(), gate_c = gate.contiguous();
  auto grad_a = at::empty_like(a_c, at::MemoryFormat::Contiguous);
  auto grad_b = at::empty_like(b_c, at::MemoryFormat::Contiguous);
  auto grad_gate = at::empty_like(gate_c, at::MemoryFormat::Contiguous);
  if (grad_a.numel() == 0) return {grad_a, grad_b, grad_gate};
  const GatedFusionShape shape = shape_of(s);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gated_fusion_bwd_cuda", [&] {
    C10_CUDA_CHECK(launch_gated_fusion_bwd(shape, cuda_cptr<scalar_t>(grad_c), cuda_cptr<scalar_t>(a_c),
                                           cuda_cptr<scalar_t>(b_c), cuda_cptr<scalar_t>(gate_c),
                                           cuda_ptr<scalar_t>(grad_a), cuda_ptr<scalar_t>(grad_b),
                                           cuda_ptr<scalar_t>(grad_gate), nonfinite.has_value(), stream));
  });
  return {grad_a, grad_b, grad_gate};
}

}  // namespace mcmri_fast::cuda
