// The contract of the C++ ops of IMA's DCM data-consistency step (the public op and its autograd:
// mcmri_fast/ops/dcm.py): schemas and the checks every backend runs (csrc/cpu/dcm.cpp,
// csrc/cuda/dcm.cu; the Triton twins in kernels/dcm.py are only called by the op, which has checked its
// arguments). The checks keep a kernel from reading out of bounds whatever it is called with.
//
// The step is out = x − μ d + P₀(z − x) + μ P_U(d), d = α (x − g) + λ r, with P_M = irfft(m̄ · rfft(·))
// the real projection onto a mask's k-space points (m̄ the mask symmetrised and halved: ops/dcm.py).
// The ops are the pointwise passes around torch's FFTs; coef = [μ, α, λ] (x's dtype, 3 elements).
#pragma once
#include <ATen/ATen.h>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(dcm) {
  // The FFTs' input [2, B, C, H, W]: (z − x, α (x − g) + λ r). x, z, g, r [B, C, H, W] float32 / float64,
  // contiguous, one dtype.
  m.def("dcm_prologue(Tensor x, Tensor z, Tensor g, Tensor r, Tensor coef) -> Tensor");
  // The blended half spectrum [B, C, H, Wh]: m̄₀ · spec[0] + μ m̄ᵤ · spec[1]. spec [2, B, C, H, Wh] complex of
  // x's precision, contiguous; masks [Bm, Hm, Wh] real, contiguous, Bm in {1, B}, Hm in {1, H} (1: column
  // masks, one row shared by all rows).
  m.def("dcm_blend(Tensor spec, Tensor mask0, Tensor mask_u, Tensor coef) -> Tensor");
  // out = x − μ (α (x − g) + λ r) + y, [B, C, H, W], y the inverse transform of the blend.
  m.def("dcm_epilogue(Tensor y, Tensor x, Tensor g, Tensor r, Tensor coef) -> Tensor");
  // The backward's two spectra [2, B, C, H, Wh]: (m̄₀ · spec, m̄ᵤ · spec), spec [B, C, H, Wh].
  m.def("dcm_split(Tensor spec, Tensor mask0, Tensor mask_u) -> Tensor");
  // The gradients from grad and proj = (P₀ grad, P_U grad) [2, B, C, H, W]: with w = P_U grad − grad,
  // grad_x = grad − P₀ grad + α μ w, grad_z = P₀ grad, grad_g = −α μ w, grad_r = λ μ w, and coef_rows
  // [B·C, 3] = per row (b, c) the sums (Σ d w, Σ μ (x − g) w, Σ μ r w), in x's dtype.
  m.def("dcm_backward(Tensor grad, Tensor proj, Tensor x, Tensor g, Tensor r, Tensor coef) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

// The image planes [B, C, H, W] (the image ops), the half spectrum's width Wh and the masks [Bm, Hm, Wh]
// (the spectrum ops).
struct DcmSizes {
  int64_t B, C, H, W, Wh, Bm, Hm;
};

namespace dcm_detail {

inline void check_float_image(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == like.sizes() && t.scalar_type() == like.scalar_type(), op, ": ", name, " must match x (",
              like.sizes(), " ", like.scalar_type(), "), got ", t.sizes(), " ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
  TORCH_CHECK(t.device() == like.device(), op, ": all tensors must be on ", like.device(), ", got ", t.device());
}

inline void check_pair(const char* op, const char* name, const at::Tensor& t, at::IntArrayRef plane,
                       at::ScalarType dtype, const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 5 && t.size(0) == 2 && t.sizes().slice(1) == plane && t.scalar_type() == dtype, op, ": ",
              name, " must be [2, ", plane, "] ", dtype, ", got ", t.sizes(), " ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous");
  TORCH_CHECK(t.device() == like.device(), op, ": all tensors must be on ", like.device(), ", got ", t.device());
}

// coef: a contiguous [3] tensor (μ, α, λ) of the real dtype `real`, on `like`'s device.
inline void check_coef(const char* op, const at::Tensor& coef, at::ScalarType real, const at::Tensor& like) {
  TORCH_CHECK(coef.dim() == 1 && coef.size(0) == 3 && coef.scalar_type() == real && coef.is_contiguous(), op,
              ": coef must be a contiguous [3] tensor of ", real, " (mu, alpha, lambda), got ", coef.sizes(), " ",
              coef.scalar_type());
  TORCH_CHECK(coef.device() == like.device(), op, ": all tensors must be on ", like.device(), ", got ", coef.device());
}

}  // namespace dcm_detail

// x [B, C, H, W] float32 / float64 contiguous, and coef [3] of its dtype.
inline DcmSizes check_dcm_image_args(const char* op, const at::Tensor& x, const at::Tensor& coef) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be [B, C, H, W], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  TORCH_CHECK(x.is_contiguous(), op, ": x must be contiguous");
  dcm_detail::check_coef(op, coef, x.scalar_type(), x);
  const int64_t W = x.size(3);
  return {x.size(0), x.size(1), x.size(2), W, W / 2 + 1, 1, 1};
}

inline DcmSizes check_dcm_images(const char* op, const at::Tensor& x, std::initializer_list<const at::Tensor*> others,
                                 std::initializer_list<const char*> names, const at::Tensor& coef) {
  const auto s = check_dcm_image_args(op, x, coef);
  auto name = names.begin();
  for (const at::Tensor* t : others) dcm_detail::check_float_image(op, *name++, *t, x);
  return s;
}

// spec [n, B, C, H, Wh] (n = 2, or n = 0: [B, C, H, Wh]) complex contiguous; masks [Bm, Hm, Wh] of the spectrum's
// real dtype, contiguous, Bm in {1, B}, Hm in {1, H}, both of one shape.
inline DcmSizes check_dcm_spectrum_args(const char* op, const at::Tensor& spec, bool pair, const at::Tensor& mask0,
                                        const at::Tensor& mask_u) {
  TORCH_CHECK(spec.dim() == (pair ? 5 : 4) && (!pair || spec.size(0) == 2), op, ": spec must be ",
              pair ? "[2, B, C, H, Wh]" : "[B, C, H, Wh]", ", got ", spec.sizes());
  TORCH_CHECK(spec.scalar_type() == at::kComplexFloat || spec.scalar_type() == at::kComplexDouble, op,
              ": spec must be complex64 or complex128, got ", spec.scalar_type());
  TORCH_CHECK(spec.is_contiguous(), op, ": spec must be contiguous");
  const auto plane = pair ? spec.sizes().slice(1) : spec.sizes();
  const int64_t B = plane[0], C = plane[1], H = plane[2], Wh = plane[3];
  const auto real = spec.scalar_type() == at::kComplexFloat ? at::kFloat : at::kDouble;
  for (const at::Tensor* m : {&mask0, &mask_u}) {
    TORCH_CHECK(m->dim() == 3 && (m->size(0) == 1 || m->size(0) == B) && (m->size(1) == 1 || m->size(1) == H) &&
                    m->size(2) == Wh && m->scalar_type() == real && m->is_contiguous(),
                op, ": masks must be contiguous [1 or B, 1 or H, Wh] = [1 or ", B, ", 1 or ", H, ", ", Wh, "] ", real,
                ", got ", m->sizes(), " ", m->scalar_type());
    TORCH_CHECK(m->device() == spec.device(), op, ": all tensors must be on ", spec.device(), ", got ", m->device());
  }
  TORCH_CHECK(mask0.sizes() == mask_u.sizes(), op, ": mask0 and mask_u must have one shape, got ", mask0.sizes(),
              " and ", mask_u.sizes());
  return {B, C, H, 0, Wh, mask0.size(0), mask0.size(1)};  // W: the spectrum ops do not need it
}

inline DcmSizes check_dcm_blend_args(const char* op, const at::Tensor& spec, const at::Tensor& mask0,
                                     const at::Tensor& mask_u, const at::Tensor& coef) {
  const auto s = check_dcm_spectrum_args(op, spec, true, mask0, mask_u);
  dcm_detail::check_coef(op, coef, spec.scalar_type() == at::kComplexFloat ? at::kFloat : at::kDouble, spec);
  return s;
}

inline DcmSizes check_dcm_backward_args(const char* op, const at::Tensor& grad, const at::Tensor& proj,
                                        const at::Tensor& x, const at::Tensor& g, const at::Tensor& r,
                                        const at::Tensor& coef) {
  const auto s = check_dcm_images(op, x, {&grad, &g, &r}, {"grad", "g", "r"}, coef);
  dcm_detail::check_pair(op, "proj", proj, x.sizes(), x.scalar_type(), x);
  return s;
}

}  // namespace mcmri_fast
