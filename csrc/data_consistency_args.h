// Checks and sizes of the dc_blend_ ops, shared by the CPU and the CUDA bindings. The Python API
// validates what users pass; these checks keep a kernel from reading out of bounds whatever it is
// called with.
#pragma once
#include <torch/extension.h>

namespace mcmri_fast {

struct BlendSizes {
  int64_t B, C, H, W;  // spec [B, C, H, W] complex
  int64_t src_channels;   // 1 or C
  int64_t mask_batch;     // 1 or B
  int64_t mask_rows;      // 1 or H
  int64_t weight_channels;  // 1 or C
  int64_t shift_h, shift_w;
};

inline BlendSizes check_blend_args(const at::Tensor& spec, const at::Tensor& src, const at::Tensor& mask,
                                   const at::Tensor& weight, const at::Tensor& phase_h,
                                   const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w) {
  TORCH_CHECK(spec.dim() == 4 && spec.is_complex() && spec.is_contiguous(),
              "dc_blend: spec must be a contiguous complex [B, C, H, W] tensor");
  TORCH_CHECK(spec.scalar_type() == at::kComplexFloat || spec.scalar_type() == at::kComplexDouble,
              "dc_blend: spec must be complex64 or complex128, got ", spec.scalar_type());
  BlendSizes s{spec.size(0), spec.size(1), spec.size(2), spec.size(3), 0, 0, 0, 0, shift_h, shift_w};
  auto device = spec.device();
  for (const at::Tensor* t : {&src, &mask, &weight, &phase_h, &phase_w}) {
    TORCH_CHECK(t->device() == device, "dc_blend: all tensors must be on ", device, ", got ", t->device());
    TORCH_CHECK(t->is_contiguous(), "dc_blend: inputs must be contiguous");
  }
  TORCH_CHECK(src.scalar_type() == spec.scalar_type() && src.dim() == 4 && src.size(0) == s.B &&
                  (src.size(1) == s.C || src.size(1) == 1) && src.size(2) == s.H && src.size(3) == s.W,
              "dc_blend: src must be [B, C or 1, H, W] of spec's dtype, got ", src.sizes());
  s.src_channels = src.size(1);
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 3 && (mask.size(0) == 1 || mask.size(0) == s.B) &&
                  (mask.size(1) == 1 || mask.size(1) == s.H) && mask.size(2) == s.W,
              "dc_blend: mask must be uint8 [1 or B, 1 or H, W], got ", mask.scalar_type(), " ", mask.sizes());
  s.mask_batch = mask.size(0);
  s.mask_rows = mask.size(1);
  auto real = c10::toRealValueType(spec.scalar_type());
  TORCH_CHECK(weight.scalar_type() == real && weight.dim() == 1 && (weight.size(0) == 1 || weight.size(0) == s.C),
              "dc_blend: weight must be ", real, " [1 or C], got ", weight.scalar_type(), " ", weight.sizes());
  s.weight_channels = weight.size(0);
  TORCH_CHECK(phase_h.scalar_type() == spec.scalar_type() && phase_h.dim() == 1 && phase_h.size(0) == s.H,
              "dc_blend: phase_h must be [H] of spec's dtype");
  TORCH_CHECK(phase_w.scalar_type() == spec.scalar_type() && phase_w.dim() == 1 && phase_w.size(0) == s.W,
              "dc_blend: phase_w must be [W] of spec's dtype");
  TORCH_CHECK(0 <= shift_h && shift_h < std::max<int64_t>(s.H, 1) && 0 <= shift_w && shift_w < std::max<int64_t>(s.W, 1),
              "dc_blend: shifts must lie in [0, H) and [0, W)");
  return s;
}

inline void check_blend_backward_spec(const c10::optional<at::Tensor>& spec, const at::Tensor& grad_spec) {
  if (spec.has_value()) {
    TORCH_CHECK(spec->sizes() == grad_spec.sizes() && spec->scalar_type() == grad_spec.scalar_type() &&
                    spec->device() == grad_spec.device() && spec->is_contiguous(),
                "dc_blend_backward: spec must be contiguous and match grad_spec");
  }
}

}  // namespace mcmri_fast
