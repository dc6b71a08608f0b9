// CPU kernels of the data-consistency spectral blend: one pass over the spectrum, rows in parallel.
// src, mask, weight and grad_src are read and written through their strides (see csrc/ops.cpp).
#include "data_consistency.h"

#include <ATen/AccumulateType.h>
#include <ATen/Parallel.h>
#include <c10/util/complex.h>

#include "../data_consistency_args.h"

namespace mcmri_fast::cpu {
namespace {

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

// A grain of about 32k elements keeps thread start-up small against the work of a chunk.
inline int64_t row_grain(int64_t W) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(W, 1)); }

template <typename scalar_t>
void blend_forward(const BlendSizes& s, c10::complex<scalar_t>* spec, const c10::complex<scalar_t>* src,
                   const uint8_t* mask, const scalar_t* weight, const c10::complex<scalar_t>* ph,
                   const c10::complex<scalar_t>* pw) {
  const int64_t src_sw = s.src_stride[3], mask_sw = s.mask_stride[2];
  at::parallel_for(0, s.B * s.C * s.H, row_grain(s.W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      auto row = row_of(r, s, weight);
      c10::complex<scalar_t>* out = spec + r * s.W;
      const c10::complex<scalar_t>* src_row = src + row.src_offset;
      const uint8_t* mask_row = mask + row.mask_offset;
      const c10::complex<scalar_t> phi = ph[row.i];
      for_each_column(s.W, s.shift_w, [&](int64_t j, int64_t sj) {
        if (mask_row[sj * mask_sw]) {
          auto k = out[j];
          out[j] = k + row.w * (phi * pw[j] * src_row[sj * src_sw] - k);
        }
      });
    }
  });
}

template <typename scalar_t>
void blend_backward(const BlendSizes& s, c10::complex<scalar_t>* grad, const c10::complex<scalar_t>* src,
                    const uint8_t* mask, const scalar_t* weight, const c10::complex<scalar_t>* ph,
                    const c10::complex<scalar_t>* pw, const c10::complex<scalar_t>* spec,
                    c10::complex<scalar_t>* grad_src, const int64_t* grad_src_stride, scalar_t* grad_weight_rows) {
  const int64_t src_sw = s.src_stride[3], mask_sw = s.mask_stride[2];
  const int64_t gsrc_sw = grad_src ? grad_src_stride[3] : 0;
  at::parallel_for(0, s.B * s.C * s.H, row_grain(s.W), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      auto row = row_of(r, s, weight);
      c10::complex<scalar_t>* g = grad + r * s.W;
      const c10::complex<scalar_t>* src_row = src + row.src_offset;
      const uint8_t* mask_row = mask + row.mask_offset;
      const c10::complex<scalar_t>* spec_row = spec ? spec + r * s.W : nullptr;
      // grad_src [B, C, H, W]: this row scatters to its source row si.
      c10::complex<scalar_t>* gsrc_row =
          grad_src ? grad_src + row.b * grad_src_stride[0] + row.c * grad_src_stride[1] + row.si * grad_src_stride[2]
                   : nullptr;
      const c10::complex<scalar_t> phi_i = ph[row.i];
      const scalar_t one_minus_w = scalar_t(1) - row.w;
      using acc_t = at::acc_type<scalar_t, false>;
      acc_t acc = 0;
      for_each_column(s.W, s.shift_w, [&](int64_t j, int64_t sj) {
        if (mask_row[sj * mask_sw]) {
          const auto gy = g[j];
          const auto phi = phi_i * pw[j];
          if (gsrc_row) gsrc_row[sj * gsrc_sw] = std::conj(phi) * (row.w * gy);
          if (spec_row) {
            const auto d = phi * src_row[sj * src_sw] - spec_row[j];
            acc += acc_t(gy.real()) * d.real() + acc_t(gy.imag()) * d.imag();  // Re(conj(gy) d)
          }
          g[j] = one_minus_w * gy;
        } else if (gsrc_row) {
          gsrc_row[sj * gsrc_sw] = c10::complex<scalar_t>(0, 0);
        }
      });
      if (grad_weight_rows) grad_weight_rows[r] = static_cast<scalar_t>(acc);
    }
  });
}

}  // namespace

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
  auto s = check_blend_args(grad_spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w);
  auto grad_weight_rows = prepare_blend_backward(grad_spec, s, weight, spec, grad_src);
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_backward_cpu", [&] {
    using complex_t = c10::complex<scalar_t>;
    blend_backward<scalar_t>(s, grad_spec.data_ptr<complex_t>(), src.const_data_ptr<complex_t>(),
                             mask.const_data_ptr<uint8_t>(), weight.const_data_ptr<scalar_t>(),
                             phase_h.const_data_ptr<complex_t>(), phase_w.const_data_ptr<complex_t>(),
                             spec.has_value() ? spec->const_data_ptr<complex_t>() : nullptr,
                             grad_src.has_value() ? grad_src->data_ptr<complex_t>() : nullptr,
                             grad_src.has_value() ? grad_src->strides().data() : nullptr,
                             spec.has_value() ? grad_weight_rows.data_ptr<scalar_t>() : nullptr);
  });
  return grad_weight_rows;
}

}  // namespace mcmri_fast::cpu
