#pragma once
#include <torch/extension.h>

namespace mcmri_fast::cpu {

void dc_blend_(at::Tensor spec, const at::Tensor& src, const at::Tensor& mask, const at::Tensor& weight,
               const at::Tensor& phase_h, const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w);

at::Tensor dc_blend_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& mask,
                              const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                              int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& spec,
                              const c10::optional<at::Tensor>& grad_src);

}  // namespace mcmri_fast::cpu
