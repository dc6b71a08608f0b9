// The contract of the data-consistency blend's C++ ops (the public ops and their autograd:
// mcmri_fast/ops/data_consistency.py): schemas and the checks every backend runs (csrc/cpu/
// data_consistency.cpp, csrc/cuda/data_consistency.cu; the Triton twins of dc_blend_ and
// dc_blend_backward_ in kernels/data_consistency.py are only called by the op, which has checked its
// arguments). The checks keep a kernel from reading out of bounds whatever it is called with. Strides
// are in elements (complex elements for complex tensors); a tensor's own sizes and strides always stay
// inside its storage, so indexing through them is safe.
#pragma once
#include <ATen/ATen.h>

#include <algorithm>
#include <initializer_list>
#include <vector>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(data_consistency) {
  // Spectral blend of data consistency, in place on `spec`:
  //   spec[b,c,i,j] += w[c] * m * (ph[i] * pw[j] * src[b,c,i',j'] - spec[b,c,i,j]),  m = mask[b,i',j']
  //   with i' = (i + shift_h) mod H, j' = (j + shift_w) mod W. spec [B, C, H, W] is contiguous;
  //   src [B, C, H, W], mask uint8 [B, H, W] and weight [C] may have any strides, 0 included
  //   (broadcasting is expressed by expand), so FFT outputs are read in the layout they come in.
  m.def(
      "dc_blend_(Tensor(a!) spec, Tensor src, Tensor mask, Tensor weight, Tensor phase_h, "
      "Tensor phase_w, int shift_h, int shift_w) -> ()");
  // Its backward: grad_spec <- (1 - w m) grad_spec in place (contiguous). If grad_src is given
  // ([B, C, H, W], any non-overlapping strides) every element is written: conj(ph pw) w m g at the
  // source positions. Returns per-row partial sums of the weight gradient [B, C, R] if spec
  // (contiguous, like grad_spec) is given, else an empty tensor; sum over dims 0 and 2 per channel.
  m.def(
      "dc_blend_backward_(Tensor(a!) grad_spec, Tensor src, Tensor mask, Tensor weight, Tensor phase_h, "
      "Tensor phase_w, int shift_h, int shift_w, Tensor? spec, Tensor(b!)? grad_src) -> Tensor");
  // The same pair for 1-D column masks, CPU only, visiting only the sampled columns: columns (int64 [n],
  // increasing) lists the source columns j'; src [B, C, H, n] holds ifft_H(k0) at those columns and
  // mask is uint8 [B, W]. The forward writes spec's values before the blend at (i, j) to kept
  // ([B, C, H, n], contiguous) when given, which the backward reads as `kept` for the weight gradient;
  // grad_src is [B, C, H, n]. Per-column buffers are a quarter of the full ones at 4x acceleration.
  m.def(
      "dc_blend_columns_(Tensor(a!) spec, Tensor src, Tensor columns, Tensor mask, Tensor weight, "
      "Tensor phase_h, Tensor phase_w, int shift_h, int shift_w, Tensor(b!)? kept) -> ()");
  m.def(
      "dc_blend_columns_backward_(Tensor(a!) grad_spec, Tensor src, Tensor columns, Tensor mask, Tensor weight, "
      "Tensor phase_h, Tensor phase_w, int shift_h, int shift_w, Tensor? kept, Tensor(b!)? grad_src) -> Tensor");
}

// Sizes and strides of one blend (dc_blend_, dc_blend_backward_), as the kernels index them.
struct BlendSizes {
  int64_t B, C, H, W;           // spec / grad_spec [B, C, H, W] complex, contiguous
  int64_t shift_h, shift_w;     // in [0, H) and [0, W)
  int64_t src_stride[4];        // src [B, C, H, W]
  int64_t mask_stride[3];       // mask [B, H, W]
  int64_t weight_stride;        // weight [C]
  int64_t grad_src_stride[4];   // grad_src [B, C, H, W] of the backward when given, else 0
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
  BlendSizes s{spec.size(0), spec.size(1), spec.size(2), spec.size(3), shift_h, shift_w, {}, {}, weight.stride(0), {}};
  for (int d = 0; d < 4; ++d) s.src_stride[d] = src.stride(d);
  for (int d = 0; d < 3; ++d) s.mask_stride[d] = mask.stride(d);
  return s;
}

// The backward's checks: those of the forward on grad_spec, then spec (contiguous, like grad_spec) and
// grad_src (dense [B, C, H, W] like grad_spec), whose strides join the sizes.
inline BlendSizes check_blend_backward_args(const at::Tensor& grad_spec, const at::Tensor& src, const at::Tensor& mask,
                                            const at::Tensor& weight, const at::Tensor& phase_h,
                                            const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w,
                                            const c10::optional<at::Tensor>& spec,
                                            const c10::optional<at::Tensor>& grad_src) {
  auto s = check_blend_args(grad_spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w);
  if (spec.has_value()) {
    TORCH_CHECK(spec->sizes() == grad_spec.sizes() && spec->scalar_type() == grad_spec.scalar_type() &&
                    spec->device() == grad_spec.device() && spec->is_contiguous(),
                "dc_blend_backward: spec must be contiguous and match grad_spec");
  }
  if (grad_src.has_value()) {
    TORCH_CHECK(grad_src->sizes() == grad_spec.sizes() && grad_src->scalar_type() == grad_spec.scalar_type() &&
                    grad_src->device() == grad_spec.device() && grad_src->is_non_overlapping_and_dense(),
                "dc_blend_backward: grad_src must be a dense [B, C, H, W] tensor like grad_spec");
    for (int d = 0; d < 4; ++d) s.grad_src_stride[d] = grad_src->stride(d);
  }
  return s;
}

// Sizes and strides of one column blend (dc_blend_columns_, dc_blend_columns_backward_): the n columns
// listed in `columns` (source columns j' in k0's indexing, increasing); src, kept and grad_src hold
// those columns only, [B, C, H, n].
struct ColumnBlendSizes {
  int64_t B, C, H, W, n;
  int64_t shift_h, shift_w;
  int64_t src_stride[4];       // src [B, C, H, n]
  int64_t mask_stride[2];      // mask [B, W]
  int64_t weight_stride;       // weight [C]
  int64_t grad_src_stride[4];  // grad_src [B, C, H, n] of the backward when given, else 0
};

// The column ops' checks; kept and grad_src, when given, are [B, C, H, n] like src: kept contiguous (it
// is read back by rows), grad_src with any non-overlapping dense strides. The columns are read here, on
// the host: one reason these ops are CPU only.
inline ColumnBlendSizes check_blend_columns_args(const at::Tensor& spec, const at::Tensor& src, const at::Tensor& columns,
                                                 const at::Tensor& mask, const at::Tensor& weight,
                                                 const at::Tensor& phase_h, const at::Tensor& phase_w,
                                                 int64_t shift_h, int64_t shift_w,
                                                 const c10::optional<at::Tensor>& kept,
                                                 const c10::optional<at::Tensor>& grad_src) {
  check_blend_common("dc_blend_columns", spec, weight, phase_h, phase_w, shift_h, shift_w, {&src, &columns, &mask});
  TORCH_CHECK(columns.scalar_type() == at::kLong && columns.dim() == 1 && columns.is_contiguous(),
              "dc_blend_columns: columns must be a contiguous int64 [n] tensor, got ", columns.scalar_type(), " ",
              columns.sizes());
  const int64_t B = spec.size(0), C = spec.size(1), H = spec.size(2), W = spec.size(3), n = columns.size(0);
  const int64_t* cols = columns.const_data_ptr<int64_t>();
  for (int64_t t = 0; t < n; ++t) {  // in range and increasing: every spec column is visited at most once
    TORCH_CHECK(0 <= cols[t] && cols[t] < W && (t == 0 || cols[t - 1] < cols[t]),
                "dc_blend_columns: columns must be increasing indices in [0, W = ", W, ")");
  }
  TORCH_CHECK(src.scalar_type() == spec.scalar_type() && src.dim() == 4 && src.size(0) == B && src.size(1) == C &&
                  src.size(2) == H && src.size(3) == n,
              "dc_blend_columns: src must be [B, C, H, n] of spec's dtype (expand a shared k0), got ", src.sizes());
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 2 && mask.size(0) == B && mask.size(1) == W,
              "dc_blend_columns: mask must be uint8 [B, W] (expand a shared mask), got ", mask.scalar_type(), " ",
              mask.sizes());
  const std::vector<int64_t> shape{B, C, H, n};
  if (kept.has_value()) {
    TORCH_CHECK(kept->sizes() == c10::IntArrayRef(shape) && kept->scalar_type() == spec.scalar_type() &&
                    kept->device() == spec.device() && kept->is_contiguous(),
                "dc_blend_columns: kept must be a contiguous [B, C, H, n] tensor of spec's dtype");
  }
  if (grad_src.has_value()) {
    TORCH_CHECK(grad_src->sizes() == c10::IntArrayRef(shape) && grad_src->scalar_type() == spec.scalar_type() &&
                    grad_src->device() == spec.device() && grad_src->is_non_overlapping_and_dense(),
                "dc_blend_columns_backward: grad_src must be a dense [B, C, H, n] tensor of spec's dtype");
  }
  ColumnBlendSizes s{B, C, H, W, n, shift_h, shift_w, {}, {}, weight.stride(0), {}};
  for (int d = 0; d < 4; ++d) s.src_stride[d] = src.stride(d);
  for (int d = 0; d < 2; ++d) s.mask_stride[d] = mask.stride(d);
  if (grad_src.has_value()) {
    for (int d = 0; d < 4; ++d) s.grad_src_stride[d] = grad_src->stride(d);
  }
  return s;
}

}  // namespace mcmri_fast
