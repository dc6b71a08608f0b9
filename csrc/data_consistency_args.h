// Checks and sizes of the dc_blend_ ops, shared by the CPU and the CUDA bindings. The Python API
// validates what users pass; these checks keep a kernel from reading out of bounds whatever it is
// called with. Strides are in elements (complex elements for complex tensors); a tensor's own sizes
// and strides always stay inside its storage, so indexing through them is safe.
#pragma once
#include <ATen/ATen.h>

namespace mcmri_fast {

struct BlendSizes {
  int64_t B, C, H, W;      // spec [B, C, H, W] complex, contiguous
  int64_t shift_h, shift_w;
  int64_t src_stride[4];   // src [B, C, H, W]
  int64_t mask_stride[3];  // mask [B, H, W]
  int64_t weight_stride;   // weight [C]
};

// The checks every blend op shares: spec contiguous complex [B, C, H, W]; weight real [C]; the
// phases contiguous [H] and [W] of spec's dtype; the shifts in range; all tensors on spec's device.
inline void check_blend_common(const char* op, const at::Tensor& spec, const at::Tensor& weight,
                               const at::Tensor& phase_h, const at::Tensor& phase_w, int64_t shift_h,
                               int64_t shift_w, std::initializer_list<const at::Tensor*> others) {
  TORCH_CHECK(spec.dim() == 4 && spec.is_contiguous(), op, ": spec must be a contiguous [B, C, H, W] tensor");
  TORCH_CHECK(spec.scalar_type() == at::kComplexFloat || spec.scalar_type() == at::kComplexDouble,
              op, ": spec must be complex64 or complex128, got ", spec.scalar_type());
  auto device = spec.device();
  for (const at::Tensor* t : {&weight, &phase_h, &phase_w}) {
    TORCH_CHECK(t->device() == device, op, ": all tensors must be on ", device, ", got ", t->device());
  }
  for (const at::Tensor* t : others) {
    TORCH_CHECK(t->device() == device, op, ": all tensors must be on ", device, ", got ", t->device());
  }
  auto real = c10::toRealValueType(spec.scalar_type());
  TORCH_CHECK(weight.scalar_type() == real && weight.dim() == 1 && weight.size(0) == spec.size(1),
              op, ": weight must be ", real, " [C] (expand a scalar), got ", weight.scalar_type(), " ",
              weight.sizes());
  TORCH_CHECK(phase_h.scalar_type() == spec.scalar_type() && phase_h.dim() == 1 && phase_h.size(0) == spec.size(2) &&
                  phase_h.is_contiguous(),
              op, ": phase_h must be contiguous [H] of spec's dtype");
  TORCH_CHECK(phase_w.scalar_type() == spec.scalar_type() && phase_w.dim() == 1 && phase_w.size(0) == spec.size(3) &&
                  phase_w.is_contiguous(),
              op, ": phase_w must be contiguous [W] of spec's dtype");
  TORCH_CHECK(0 <= shift_h && shift_h < std::max<int64_t>(spec.size(2), 1) && 0 <= shift_w &&
                  shift_w < std::max<int64_t>(spec.size(3), 1),
              op, ": shifts must lie in [0, H) and [0, W)");
}

inline BlendSizes check_blend_args(const at::Tensor& spec, const at::Tensor& src, const at::Tensor& mask,
                                   const at::Tensor& weight, const at::Tensor& phase_h,
                                   const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w) {
  check_blend_common("dc_blend", spec, weight, phase_h, phase_w, shift_h, shift_w, {&src, &mask});
  TORCH_CHECK(src.scalar_type() == spec.scalar_type() && src.sizes() == spec.sizes(),
              "dc_blend: src must be [B, C, H, W] of spec's dtype (expand a shared k0), got ", src.sizes());
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 3 && mask.size(0) == spec.size(0) &&
                  mask.size(1) == spec.size(2) && mask.size(2) == spec.size(3),
              "dc_blend: mask must be uint8 [B, H, W] (expand a shared mask), got ", mask.scalar_type(), " ",
              mask.sizes());
  BlendSizes s{spec.size(0), spec.size(1), spec.size(2), spec.size(3), shift_h, shift_w, {}, {}, weight.stride(0)};
  for (int d = 0; d < 4; ++d) s.src_stride[d] = src.stride(d);
  for (int d = 0; d < 3; ++d) s.mask_stride[d] = mask.stride(d);
  return s;
}

// The backward's extra checks, and its output: per-row partial sums of the weight gradient
// [B, C, H] when spec is given (the caller sums dims 0 and 2), else an empty tensor.
inline at::Tensor prepare_blend_backward(const at::Tensor& grad_spec, const BlendSizes& s, const at::Tensor& weight,
                                         const c10::optional<at::Tensor>& spec,
                                         const c10::optional<at::Tensor>& grad_src) {
  if (spec.has_value()) {
    TORCH_CHECK(spec->sizes() == grad_spec.sizes() && spec->scalar_type() == grad_spec.scalar_type() &&
                    spec->device() == grad_spec.device() && spec->is_contiguous(),
                "dc_blend_backward: spec must be contiguous and match grad_spec");
  }
  if (grad_src.has_value()) {
    TORCH_CHECK(grad_src->sizes() == grad_spec.sizes() && grad_src->scalar_type() == grad_spec.scalar_type() &&
                    grad_src->device() == grad_spec.device() && grad_src->is_non_overlapping_and_dense(),
                "dc_blend_backward: grad_src must be a dense [B, C, H, W] tensor like grad_spec");
  }
  return spec.has_value() ? at::empty({s.B, s.C, s.H}, weight.options()) : at::empty({0}, weight.options());
}

}  // namespace mcmri_fast
