#pragma once
#include <ATen/ATen.h>

namespace mcmri_fast::cpu {

void dc_blend_(at::Tensor spec, const at::Tensor& src, const at::Tensor& mask, const at::Tensor& weight,
               const at::Tensor& phase_h, const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w);

at::Tensor dc_blend_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& mask,
                              const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                              int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& spec,
                              const c10::optional<at::Tensor>& grad_src);

// The column blend of 1-D masks (CPU only): the blend over the listed source columns only, with
// src, kept and grad_src holding those columns ([B, C, H, n]); see csrc/ops.cpp.
void dc_blend_columns_(at::Tensor spec, const at::Tensor& src, const at::Tensor& columns, const at::Tensor& mask,
                       const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                       int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& kept);

at::Tensor dc_blend_columns_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& columns,
                                      const at::Tensor& mask, const at::Tensor& weight, const at::Tensor& phase_h,
                                      const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w,
                                      const c10::optional<at::Tensor>& kept,
                                      const c10::optional<at::Tensor>& grad_src);

}  // namespace mcmri_fast::cpu
