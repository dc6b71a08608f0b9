// CPU kernels of the data-consistency spectral blend (the contract: csrc/data_consistency.h): one pass
// over the spectrum, rows in parallel; src, mask, weight and grad_src are read and written through their
// strides. Scalar complex arithmetic, compiled once: no per-ISA builds (isa_builds.h).
#include <ATen/AccumulateType.h>
#include <ATen/Parallel.h>
#include <c10/util/complex.h>

#include "../data_consistency.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {
namespace {

// The per-element math of the blend, shared by the full and the column kernels. Forward, at a sampled
// position: k <- k + w (phi s - k), with s the source value (k0 or its hybrid) and phi the phase.
template <typename scalar_t>
inline c10::complex<scalar_t> blended(c10::complex<scalar_t> k, c10::complex<scalar_t> phi, c10::complex<scalar_t> s,
                                      scalar_t w) {
  return k + w * (phi * s - k);
}

// Backward at one position. Sampled: *gsrc = conj(phi) w gy (if grad_src is wanted), the weight
// gradient gains Re(conj(gy) (phi s - k)) with k the spectrum before the blend (if it was kept), and
// gy <- (1 - w) gy. Not sampled: *gsrc = 0, gy unchanged. s and k are read only when needed.
template <typename scalar_t, typename acc_t, typename Source, typename Kept>
inline void blend_backward_element(bool sampled, c10::complex<scalar_t>& g, c10::complex<scalar_t> phi, scalar_t w,
                                   Source source, Kept kept, c10::complex<scalar_t>* gsrc, acc_t& acc) {
  if (!sampled) {
    if (gsrc) *gsrc = c10::complex<scalar_t>(0, 0);
    return;
  }
  const auto gy = g;
  if (gsrc) *gsrc = std::conj(phi) * (w * gy);
  if (kept != nullptr) {
    const auto d = phi * source() - *kept;
    acc += acc_t(gy.real()) * d.real() + acc_t(gy.imag()) * d.imag();  // Re(conj(gy) d)
  }
  g = (scalar_t(1) - w) * gy;
}

// Calls body(j, j') for every column j of a row, j' = (j + shift) mod W, without a modulo per element.
template <typename Body>
inline void for_each_column(int64_t W, int64_t shift, Body&& body) {
  for (int64_t j = 0; j < W - shift; ++j) body(j, j + shift);
  for (int64_t j = W - shift; j < W; ++j) body(j, j + shift - W);
}

// The row r = (b, c, i) of spec and the offsets of its source row i' in src and mask.
template <typename scalar_t>
struct Row {
  int64_t b, c, i, si;
  int64_t src_offset, mask_offset;
  scalar_t w;
};

template <typename scalar_t>
inline Row<scalar_t> row_of(int64_t r, const BlendSizes& s, const scalar_t* weight) {
  Row<scalar_t> row;
  row.i = r % s.H;
  row.c = (r / s.H) % s.C;
  row.b = r / (s.H * s.C);
  row.si = row.i + s.shift_h < s.H ? row.i + s.shift_h : row.i + s.shift_h - s.H;
  row.src_offset = row.b * s.src_stride[0] + row.c * s.src_stride[1] + row.si * s.src_stride[2];
  row.mask_offset = row.b * s.mask_stride[0] + row.si * s.mask_stride[1];
  row.w = weight[row.c * s.weight_stride];
  return row;
}

template <typename scalar_t>
void blend_forward(const BlendSizes& s, c10::complex<scalar_t>* spec, const c10::complex<scalar_t>* src,
                   const uint8_t* mask, const scalar_t* weight, const c10::complex<scalar_t>* ph,
                   const c10::complex<scalar_t>* pw) {
  const int64_t src_sw = s.src_stride[3], mask_sw = s.mask_stride[2];
  at::parallel_for(0, s.B * s.C * s.H, parallel_grain(s.W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      auto row = row_of(r, s, weight);
      c10::complex<scalar_t>* out = spec + r * s.W;
      const c10::complex<scalar_t>* src_row = src + row.src_offset;
      const uint8_t* mask_row = mask + row.mask_offset;
      const c10::complex<scalar_t> phi = ph[row.i];
      for_each_column(s.W, s.shift_w, [&](int64_t j, int64_t sj) {
        if (mask_row[sj * mask_sw]) out[j] = blended(out[j], phi * pw[j], src_row[sj * src_sw], row.w);
      });
    }
  });
}

template <typename scalar_t>
void blend_backward(const BlendSizes& s, c10::complex<scalar_t>* grad, const c10::complex<scalar_t>* src,
                    const uint8_t* mask, const scalar_t* weight, const c10::complex<scalar_t>* ph,
                    const c10::complex<scalar_t>* pw, const c10::complex<scalar_t>* spec,
                    c10::complex<scalar_t>* grad_src, scalar_t* grad_weight_rows) {
  const int64_t src_sw = s.src_stride[3], mask_sw = s.mask_stride[2], gsrc_sw = s.grad_src_stride[3];
  at::parallel_for(0, s.B * s.C * s.H, parallel_grain(s.W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      auto row = row_of(r, s, weight);
      c10::complex<scalar_t>* g = grad + r * s.W;
      const c10::complex<scalar_t>* src_row = src + row.src_offset;
      const uint8_t* mask_row = mask + row.mask_offset;
      const c10::complex<scalar_t>* spec_row = spec ? spec + r * s.W : nullptr;
      // grad_src [B, C, H, W]: this row scatters to its source row si.
      c10::complex<scalar_t>* gsrc_row =
          grad_src
              ? grad_src + row.b * s.grad_src_stride[0] + row.c * s.grad_src_stride[1] + row.si * s.grad_src_stride[2]
              : nullptr;
      const c10::complex<scalar_t> phi_i = ph[row.i];
      using acc_t = at::acc_type<scalar_t, false>;
      acc_t acc = 0;
      for_each_column(s.W, s.shift_w, [&](int64_t j, int64_t sj) {
        blend_backward_element(mask_row[sj * mask_sw] != 0, g[j], phi_i * pw[j], row.w,
                               [&] { return src_row[sj * src_sw]; }, spec_row ? spec_row + j : nullptr,
                               gsrc_row ? gsrc_row + sj * gsrc_sw : nullptr, acc);
      });
      if (grad_weight_rows) grad_weight_rows[r] = static_cast<scalar_t>(acc);
    }
  });
}

// The column blend (1-D masks): the same blend, visiting only the n columns listed in `columns`.
// The row r = (b, c, i) of spec, its source row i' and the column blend's per-row pointers.
template <typename scalar_t>
struct ColumnRow {
  int64_t b, c, i, si;
  scalar_t w;
  const c10::complex<scalar_t>* src;  // src[b, c, i', :]
  const uint8_t* mask;                // mask[b, :]
};

template <typename scalar_t>
inline ColumnRow<scalar_t> column_row_of(int64_t r, const ColumnBlendSizes& s, const c10::complex<scalar_t>* src,
                                         const uint8_t* mask, const scalar_t* weight) {
  ColumnRow<scalar_t> row;
  row.i = r % s.H;
  row.c = (r / s.H) % s.C;
  row.b = r / (s.H * s.C);
  row.si = row.i + s.shift_h < s.H ? row.i + s.shift_h : row.i + s.shift_h - s.H;
  row.w = weight[row.c * s.weight_stride];
  row.src = src + row.b * s.src_stride[0] + row.c * s.src_stride[1] + row.si * s.src_stride[2];
  row.mask = mask + row.b * s.mask_stride[0];
  return row;
}

// The spec column j of source column j' = columns[t]: j = (j' - shift_w) mod W.
inline int64_t spec_column(int64_t source, const ColumnBlendSizes& s) {
  return source >= s.shift_w ? source - s.shift_w : source - s.shift_w + s.W;
}

template <typename scalar_t>
void blend_columns_forward(const ColumnBlendSizes& s, c10::complex<scalar_t>* spec, const c10::complex<scalar_t>* src,
                           const int64_t* columns, const uint8_t* mask, const scalar_t* weight,
                           const c10::complex<scalar_t>* ph, const c10::complex<scalar_t>* pw,
                           c10::complex<scalar_t>* kept) {
  at::parallel_for(0, s.B * s.C * s.H, parallel_grain(s.n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const auto row = column_row_of(r, s, src, mask, weight);
      c10::complex<scalar_t>* out = spec + r * s.W;
      c10::complex<scalar_t>* kept_row = kept ? kept + r * s.n : nullptr;
      const c10::complex<scalar_t> phi_i = ph[row.i];
      for (int64_t t = 0; t < s.n; ++t) {
        const int64_t sj = columns[t], j = spec_column(sj, s);
        const auto k = out[j];
        if (kept_row) kept_row[t] = k;
        if (row.mask[sj * s.mask_stride[1]]) out[j] = blended(k, phi_i * pw[j], row.src[t * s.src_stride[3]], row.w);
      }
    }
  });
}

template <typename scalar_t>
void blend_columns_backward(const ColumnBlendSizes& s, c10::complex<scalar_t>* grad, const c10::complex<scalar_t>* src,
                            const int64_t* columns, const uint8_t* mask, const scalar_t* weight,
                            const c10::complex<scalar_t>* ph, const c10::complex<scalar_t>* pw,
                            const c10::complex<scalar_t>* kept, c10::complex<scalar_t>* grad_src,
                            scalar_t* grad_weight_rows) {
  using acc_t = at::acc_type<scalar_t, false>;
  at::parallel_for(0, s.B * s.C * s.H, parallel_grain(s.n), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const auto row = column_row_of(r, s, src, mask, weight);
      c10::complex<scalar_t>* g = grad + r * s.W;
      const c10::complex<scalar_t>* kept_row = kept ? kept + r * s.n : nullptr;
      // grad_src [B, C, H, n]: this row scatters to its source row i'.
      c10::complex<scalar_t>* gsrc_row =
          grad_src
              ? grad_src + row.b * s.grad_src_stride[0] + row.c * s.grad_src_stride[1] + row.si * s.grad_src_stride[2]
              : nullptr;
      const int64_t gsrc_st = s.grad_src_stride[3];
      const c10::complex<scalar_t> phi_i = ph[row.i];
      acc_t acc = 0;
      for (int64_t t = 0; t < s.n; ++t) {
        const int64_t sj = columns[t], j = spec_column(sj, s);
        blend_backward_element(row.mask[sj * s.mask_stride[1]] != 0, g[j], phi_i * pw[j], row.w,
                               [&] { return row.src[t * s.src_stride[3]]; }, kept_row ? kept_row + t : nullptr,
                               gsrc_row ? gsrc_row + t * gsrc_st : nullptr, acc);
      }
      if (grad_weight_rows) grad_weight_rows[r] = static_cast<scalar_t>(acc);
    }
  });
}

void dc_blend_(at::Tensor spec, const at::Tensor& src, const at::Tensor& mask, const at::Tensor& weight,
               const at::Tensor& phase_h, const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w) {
  auto s = check_blend_args(spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w);
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_cpu", [&] {
    using complex_t = c10::complex<scalar_t>;
    blend_forward<scalar_t>(s, spec.data_ptr<complex_t>(), src.const_data_ptr<complex_t>(),
                            mask.const_data_ptr<uint8_t>(), weight.const_data_ptr<scalar_t>(),
                            phase_h.const_data_ptr<complex_t>(), phase_w.const_data_ptr<complex_t>());
  });
}

at::Tensor dc_blend_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& mask,
                              const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                              int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& spec,
                              const c10::optional<at::Tensor>& grad_src) {
  auto s = check_blend_backward_args(grad_spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w, spec, grad_src);
  auto grad_weight_rows = spec.has_value() ? at::empty({s.B, s.C, s.H}, weight.options()) : at::empty({0}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_backward_cpu", [&] {
    using complex_t = c10::complex<scalar_t>;
    blend_backward<scalar_t>(s, grad_spec.data_ptr<complex_t>(), src.const_data_ptr<complex_t>(),
                             mask.const_data_ptr<uint8_t>(), weight.const_data_ptr<scalar_t>(),
                             phase_h.const_data_ptr<complex_t>(), phase_w.const_data_ptr<complex_t>(),
                             spec.has_value() ? spec->const_data_ptr<complex_t>() : nullptr,
                             grad_src.has_value() ? grad_src->data_ptr<complex_t>() : nullptr,
                             spec.has_value() ? grad_weight_rows.data_ptr<scalar_t>() : nullptr);
  });
  return grad_weight_rows;
}

void dc_blend_columns_(at::Tensor spec, const at::Tensor& src, const at::Tensor& columns, const at::Tensor& mask,
                       const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                       int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& kept) {
  auto s = check_blend_columns_args(spec, src, columns, mask, weight, phase_h, phase_w, shift_h, shift_w, kept,
                                    c10::nullopt);
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_columns_cpu", [&] {
    using complex_t = c10::complex<scalar_t>;
    blend_columns_forward<scalar_t>(s, spec.data_ptr<complex_t>(), src.const_data_ptr<complex_t>(),
                                    columns.const_data_ptr<int64_t>(), mask.const_data_ptr<uint8_t>(),
                                    weight.const_data_ptr<scalar_t>(), phase_h.const_data_ptr<complex_t>(),
                                    phase_w.const_data_ptr<complex_t>(),
                                    kept.has_value() ? kept->data_ptr<complex_t>() : nullptr);
  });
}

at::Tensor dc_blend_columns_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& columns,
                                      const at::Tensor& mask, const at::Tensor& weight, const at::Tensor& phase_h,
                                      const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w,
                                      const c10::optional<at::Tensor>& kept,
                                      const c10::optional<at::Tensor>& grad_src) {
  auto s = check_blend_columns_args(grad_spec, src, columns, mask, weight, phase_h, phase_w, shift_h, shift_w, kept,
                                    grad_src);
  auto grad_weight_rows = kept.has_value() ? at::empty({s.B, s.C, s.H}, weight.options()) : at::empty({0}, weight.options());
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_columns_backward_cpu", [&] {
    using complex_t = c10::complex<scalar_t>;
    blend_columns_backward<scalar_t>(
        s, grad_spec.data_ptr<complex_t>(), src.const_data_ptr<complex_t>(), columns.const_data_ptr<int64_t>(),
        mask.const_data_ptr<uint8_t>(), weight.const_data_ptr<scalar_t>(), phase_h.const_data_ptr<complex_t>(),
        phase_w.const_data_ptr<complex_t>(), kept.has_value() ? kept->const_data_ptr<complex_t>() : nullptr,
        grad_src.has_value() ? grad_src->data_ptr<complex_t>() : nullptr,
        kept.has_value() ? grad_weight_rows.data_ptr<scalar_t>() : nullptr);
  });
  return grad_weight_rows;
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("dc_blend_", &dc_blend_);
  m.impl("dc_blend_backward_", &dc_blend_backward_);
  m.impl("dc_blend_columns_", &dc_blend_columns_);
  m.impl("dc_blend_columns_backward_", &dc_blend_columns_backward_);
}

}  // namespace mcmri_fast::cpu
