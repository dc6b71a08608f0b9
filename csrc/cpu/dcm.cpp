// CPU kernels of IMA's DCM data-consistency step (the contract: csrc/dcm.h): the pointwise passes around
// torch's FFTs, rows (b, c, i) in parallel, contiguous inner loops over the row that the compiler
// vectorises. Plain loops, compiled once: no per-ISA builds (isa_builds.h); the FFTs are most of the step.
#include <ATen/Parallel.h>
#include <c10/util/complex.h>

#include "../dcm.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {
namespace {

template <typename scalar_t>
struct Coef {
  scalar_t mu, alpha, lambda;
  explicit Coef(const at::Tensor& coef) {
    const auto* c = coef.const_data_ptr<scalar_t>();
    mu = c[0];
    alpha = c[1];
    lambda = c[2];
  }
};

// The offset of row (b, i) of a mask [Bm, Hm, Wh] (Bm, Hm: 1 when shared).
inline int64_t mask_row(const DcmSizes& s, int64_t b, int64_t i) {
  return ((s.Bm == 1 ? 0 : b) * s.Hm + (s.Hm == 1 ? 0 : i)) * s.Wh;
}

at::Tensor dcm_prologue(const at::Tensor& x, const at::Tensor& z, const at::Tensor& g, const at::Tensor& r,
                        const at::Tensor& coef) {
  check_dcm_images("dcm_prologue", x, {&z, &g, &r}, {"z", "g", "r"}, coef);
  std::vector<int64_t> shape{2};
  shape.insert(shape.end(), x.sizes().begin(), x.sizes().end());
  auto out = at::empty(shape, x.options());
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcm_prologue_cpu", [&] {
    const Coef<scalar_t> k(coef);
    const scalar_t *px = x.const_data_ptr<scalar_t>(), *pz = z.const_data_ptr<scalar_t>(),
                   *pg = g.const_data_ptr<scalar_t>(), *pr = r.const_data_ptr<scalar_t>();
    scalar_t *a = out.mutable_data_ptr<scalar_t>(), *d = a + n;
    at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        a[e] = pz[e] - px[e];
        d[e] = k.alpha * (px[e] - pg[e]) + k.lambda * pr[e];
      }
    });
  });
  return out;
}

at::Tensor dcm_blend(const at::Tensor& spec, const at::Tensor& mask0, const at::Tensor& mask_u, const at::Tensor& coef) {
  const auto s = check_dcm_blend_args("dcm_blend", spec, mask0, mask_u, coef);
  auto out = at::empty(spec.sizes().slice(1), spec.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(coef.scalar_type(), "dcm_blend_cpu", [&] {
    using complex_t = c10::complex<scalar_t>;
    const scalar_t mu = coef.const_data_ptr<scalar_t>()[0];
    const auto* a = spec.const_data_ptr<complex_t>();
    const auto* d = a + out.numel();
    auto* o = out.mutable_data_ptr<complex_t>();
    const scalar_t *m0 = mask0.const_data_ptr<scalar_t>(), *mu_mask = mask_u.const_data_ptr<scalar_t>();
    at::parallel_for(0, s.B * s.C * s.H, parallel_grain(s.Wh), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t i = row % s.H, b = row / (s.C * s.H), m = mask_row(s, b, i), base = row * s.Wh;
        for (int64_t j = 0; j < s.Wh; ++j) {
          o[base + j] = m0[m + j] * a[base + j] + (mu * mu_mask[m + j]) * d[base + j];
        }
      }
    });
  });
  return out;
}

at::Tensor dcm_epilogue(const at::Tensor& y, const at::Tensor& x, const at::Tensor& g, const at::Tensor& r,
                        const at::Tensor& coef) {
  check_dcm_images("dcm_epilogue", x, {&y, &g, &r}, {"y", "g", "r"}, coef);
  auto out = at::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcm_epilogue_cpu", [&] {
    const Coef<scalar_t> k(coef);
    const scalar_t *py = y.const_data_ptr<scalar_t>(), *px = x.const_data_ptr<scalar_t>(),
                   *pg = g.const_data_ptr<scalar_t>(), *pr = r.const_data_ptr<scalar_t>();
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, 32768, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        o[e] = px[e] - k.mu * (k.alpha * (px[e] - pg[e]) + k.lambda * pr[e]) + py[e];
      }
    });
  });
  return out;
}

at::Tensor dcm_split(const at::Tensor& spec, const at::Tensor& mask0, const at::Tensor& mask_u) {
  const auto s = check_dcm_spectrum_args("dcm_split", spec, false, mask0, mask_u);
  std::vector<int64_t> shape{2};
  shape.insert(shape.end(), spec.sizes().begin(), spec.sizes().end());
  auto out = at::empty(shape, spec.options());
  if (spec.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(mask0.scalar_type(), "dcm_split_cpu", [&] {
    using complex_t = c10::complex<scalar_t>;
    const auto* gs = spec.const_data_ptr<complex_t>();
    auto* p = out.mutable_data_ptr<complex_t>();
    auto* q = p + spec.numel();
    const scalar_t *m0 = mask0.const_data_ptr<scalar_t>(), *mu_mask = mask_u.const_data_ptr<scalar_t>();
    at::parallel_for(0, s.B * s.C * s.H, parallel_grain(s.Wh), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t i = row % s.H, b = row / (s.C * s.H), m = mask_row(s, b, i), base = row * s.Wh;
        for (int64_t j = 0; j < s.Wh; ++j) {
          p[base + j] = m0[m + j] * gs[base + j];
          q[base + j] = mu_mask[m + j] * gs[base + j];
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> dcm_backward(
    const at::Tensor& grad, const at::Tensor& proj, const at::Tensor& x, const at::Tensor& g, const at::Tensor& r,
    const at::Tensor& coef) {
  const auto s = check_dcm_backward_args("dcm_backward", grad, proj, x, g, r, coef);
  auto grad_x = at::empty_like(x), grad_z = at::empty_like(x), grad_g = at::empty_like(x), grad_r = at::empty_like(x);
  auto coef_rows = at::zeros({s.B * s.C, 3}, x.options());
  const int64_t plane = s.H * s.W, n = x.numel();
  if (n == 0) return {grad_x, grad_z, grad_g, grad_r, coef_rows};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "dcm_backward_cpu", [&] {
    const Coef<scalar_t> k(coef);
    const scalar_t *pgrad = grad.const_data_ptr<scalar_t>(), *p0 = proj.const_data_ptr<scalar_t>(), *pu = p0 + n,
                   *px = x.const_data_ptr<scalar_t>(), *pg = g.const_data_ptr<scalar_t>(),
                   *pr = r.const_data_ptr<scalar_t>();
    scalar_t *gx = grad_x.mutable_data_ptr<scalar_t>(), *gz = grad_z.mutable_data_ptr<scalar_t>(),
             *gg = grad_g.mutable_data_ptr<scalar_t>(), *gr = grad_r.mutable_data_ptr<scalar_t>(),
             *rows = coef_rows.mutable_data_ptr<scalar_t>();
    // One plane (b, c) per task: its three sums are reduced in double, then stored once.
    at::parallel_for(0, s.B * s.C, parallel_grain(plane), [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
        double sum_mu = 0, sum_alpha = 0, sum_lambda = 0;
        for (int64_t e = bc * plane; e < (bc + 1) * plane; ++e) {
          const scalar_t w = pu[e] - pgrad[e], e_mu = k.mu * w, diff = px[e] - pg[e];
          gx[e] = pgrad[e] - p0[e] + k.alpha * e_mu;
          gz[e] = p0[e];
          gg[e] = -k.alpha * e_mu;
          gr[e] = k.lambda * e_mu;
          sum_mu += double(k.alpha * diff + k.lambda * pr[e]) * w;
          sum_alpha += double(diff) * e_mu;
          sum_lambda += double(pr[e]) * e_mu;
        }
        rows[3 * bc] = scalar_t(sum_mu);
        rows[3 * bc + 1] = scalar_t(sum_alpha);
        rows[3 * bc + 2] = scalar_t(sum_lambda);
      }
    });
  });
  return {grad_x, grad_z, grad_g, grad_r, coef_rows};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("dcm_prologue", &dcm_prologue);
  m.impl("dcm_blend", &dcm_blend);
  m.impl("dcm_epilogue", &dcm_epilogue);
  m.impl("dcm_split", &dcm_split);
  m.impl("dcm_backward", &dcm_backward);
}

}  // namespace mcmri_fast::cpu
