// CUDA implementations of the dc_blend_ ops (registered in csrc/ops.cpp under the CUDA dispatch key).
// Same contract as the CPU ones in csrc/cpu/data_consistency.h; the kernels are in data_consistency.cu.
#pragma once
#include <ATen/ATen.h>

namespace mcmri_fast::cuda {

void dc_blend_(at::Tensor spec, const at::Tensor& src, const at::Tensor& mask, const at::Tensor& weight,
               const at::Tensor& phase_h, const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w);

// Returns grad_weight_rows [B, C, H] (empty without spec); writes grad_src in place when given.
at::Tensor dc_blend_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& mask,
                              const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                              int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& spec,
                              const c10::optional<at::Tensor>& grad_src);

}  // namespace mcmri_fast::cuda
