// Torch binding of the CUDA data-consistency blend: checks, device guard, stream, outputs, dtype
// dispatch; the kernels and their launchers are in data_consistency.cu (no torch headers there).
#include "data_consistency_binding.h"

#include <climits>
#include <type_traits>

// c10's stream and guard headers (ATen/cuda/CUDAContext.h would pull in cuBLAS / cuSPARSE headers for
// nothing): c10::cuda::getCurrentCUDAStream is what at::cuda::getCurrentCUDAStream returns.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda_types.h"
#include "../data_consistency_args.h"
#include "data_consistency_launch.h"

namespace mcmri_fast::cuda {
namespace {

// The kernels' shape: sizes and strides of check_blend_args, plus grad_src's strides when it is given.
DcBlendShape shape_of(const BlendSizes& s, const at::Tensor* grad_src = nullptr) {
  TORCH_CHECK(s.W <= INT_MAX / 2, "dc_blend: W = ", s.W, " is too large for the CUDA kernels");
  DcBlendShape shape{};
  shape.B = s.B;
  shape.C = s.C;
  shape.H = s.H;
  shape.W = s.W;
  shape.shift_h = s.shift_h;
  shape.shift_w = s.shift_w;
  for (int d = 0; d < 4; ++d) shape.src_stride[d] = s.src_stride[d];
  for (int d = 0; d < 3; ++d) shape.mask_stride[d] = s.mask_stride[d];
  shape.weight_stride = s.weight_stride;
  if (grad_src != nullptr) {
    const auto strides = grad_src->strides();
    for (int d = 0; d < 4; ++d) shape.grad_src_stride[d] = strides[d];
  }
  return shape;
}


}  // namespace

void dc_blend_(at::Tensor spec, const at::Tensor& src, const at::Tensor& mask, const at::Tensor& weight,
               const at::Tensor& phase_h, const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w) {
  auto s = check_blend_args(spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w);
  TORCH_CHECK(spec.is_cuda(), "dc_blend: expected CUDA tensors, got ", spec.device());
  if (spec.numel() == 0) return;
  const DcBlendShape shape = shape_of(s);
  c10::cuda::CUDAGuard guard(spec.device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_cuda", [&] {
    C10_CUDA_CHECK(launch_data_consistency_fwd(shape, vec_ptr<scalar_t>(spec), vec_cptr<scalar_t>(src),
                                               mask.const_data_ptr<uint8_t>(), weight.const_data_ptr<scalar_t>(),
                                               vec_cptr<scalar_t>(phase_h), vec_cptr<scalar_t>(phase_w), stream));
  });
}

at::Tensor dc_blend_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& mask,
                              const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                              int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& spec,
                              const c10::optional<at::Tensor>& grad_src) {
  auto s = check_blend_args(grad_spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w);
  TORCH_CHECK(grad_spec.is_cuda(), "dc_blend_backward: expected CUDA tensors, got ", grad_spec.device());
  c10::cuda::CUDAGuard guard(grad_spec.device());
  auto grad_weight_rows = prepare_blend_backward(grad_spec, s, weight, spec, grad_src);
  if (grad_spec.numel() == 0) {
    // No elements (W may be 0 with rows left): the partial sums are 0, as on the CPU; grad_src is empty.
    grad_weight_rows.zero_();
    return grad_weight_rows;
  }
  const at::Tensor* gsrc = grad_src.has_value() ? &*grad_src : nullptr;
  const DcBlendShape shape = shape_of(s, gsrc);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_backward_cuda", [&] {
    C10_CUDA_CHECK(launch_data_consistency_bwd(
        shape, vec_ptr<scalar_t>(grad_spec), vec_cptr<scalar_t>(src), mask.const_data_ptr<uint8_t>(),
        weight.const_data_ptr<scalar_t>(), vec_cptr<scalar_t>(phase_h), vec_cptr<scalar_t>(phase_w),
        spec.has_value() ? vec_cptr<scalar_t>(*spec) : nullptr, gsrc != nullptr ? vec_ptr<scalar_t>(*gsrc) : nullptr,
        spec.has_value() ? grad_weight_rows.data_ptr<scalar_t>() : nullptr, stream));
  });
  return grad_weight_rows;
}

}  // namespace mcmri_fast::cuda
