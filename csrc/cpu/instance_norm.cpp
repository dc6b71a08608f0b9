// CPU kernels of instance norm + LeakyReLU (the contract: csrc/instance_norm.h), rows (b, c) in parallel,
// each row whole in one thread: the forward reads it twice for the mean and the variance (two passes, not
// E[x²] − μ²: that cancels when |μ| ≫ σ) and a third time to write y; the backward reads grad and y once
// for the row's two sums and again to write grad_x. A row of a U-Net plane (256² floats) stays in the
// core's cache between its passes, so the op costs about one read and one write of memory each way, where
// ATen's instance norm and activation take several passes and tensors. Written once on at::vec::Vectorized
// and built for each instruction set (isa_builds.h); float16 / bfloat16 are computed in float32.
#include "isa_builds.h"

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>

#include "row_sums.h"
#include "vec_step.h"

namespace mcmri_fast::cpu {

// Both kernels run rows r in [begin, end) of x, y, grad, grad_x viewed as [B·C, N]; rstd holds one value
// per row.
template <typename scalar_t>
struct InstanceNormKernels {
  using acc_t = at::opmath_type<scalar_t>;
  void (*forward_rows)(int64_t N, const scalar_t* x, acc_t negative_slope, acc_t eps, scalar_t* y, acc_t* rstd,
                       int64_t begin, int64_t end);
  void (*backward_rows)(int64_t N, const scalar_t* grad, const scalar_t* y, const acc_t* rstd, acc_t negative_slope,
                        scalar_t* grad_x, int64_t begin, int64_t end);
};

}  // namespace mcmri_fast::cpu

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

template <typename scalar_t>
void instance_norm_forward_rows(int64_t N, const scalar_t* x, at::opmath_type<scalar_t> negative_slope,
                                at::opmath_type<scalar_t> eps, scalar_t* y, at::opmath_type<scalar_t>* rstd,
                                int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const Vec zero(0), slope(negative_slope);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* row = x + r * N;
    const scalar_t* const rows[1] = {row};
    const acc_t mean = static_cast<acc_t>(
        row_sums<1>(N, rows, [](const Vec* v, int64_t) { return std::array<Vec, 1>{v[0]}; })[0] / N);
    const Vec vmean(mean);
    const double squares = row_sums<1>(N, rows, [&](const Vec* v, int64_t valid) {
      const Vec d = (v[0] - vmean) * valid_lanes<Vec>(valid);  // tail lanes are 0, not −mean
      return std::array<Vec, 1>{d * d};
    })[0];
    const acc_t inv = static_cast<acc_t>(1.0 / std::sqrt(squares / N + static_cast<double>(eps)));
    rstd[r] = inv;
    const Vec vinv(inv);
    scalar_t* out = y + r * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec v[S::kParts];
      S::load(row + j, n, v);
      for (int p = 0; p < S::kParts; ++p) {
        const Vec normalised = (v[p] - vmean) * vinv;
        v[p] = Vec::blendv(slope * normalised, normalised, normalised > zero);
      }
      S::store(out + j, n, v);
    }
  }
}

template <typename scalar_t>
void instance_norm_backward_rows(int64_t N, const scalar_t* grad, const scalar_t* y,
                                 const at::opmath_type<scalar_t>* rstd, at::opmath_type<scalar_t> negative_slope,
                                 scalar_t* grad_x, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const Vec zero(0), slope(negative_slope), inverse_slope(acc_t(1) / negative_slope);
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* const rows[2] = {grad + r * N, y + r * N};
    // a = mean(g'), b = mean(grad · y) (= mean(g' · x̂)), in one pass; tail lanes load grad = y = 0 and
    // add nothing
    const auto sums = row_sums<2>(N, rows, [&](const Vec* v, int64_t) {
      return std::array<Vec, 2>{Vec::blendv(slope * v[0], v[0], v[1] > zero), v[0] * v[1]};
    });
    const acc_t a = static_cast<acc_t>(sums[0] / N), b = static_cast<acc_t>(sums[1] / N);
    const Vec va(a), vb(b), vinv(rstd[r]);
    scalar_t* out = grad_x + r * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec vg[S::kParts], vy[S::kParts];
      S::load(rows[0] + j, n, vg);
      S::load(rows[1] + j, n, vy);
      for (int p = 0; p < S::kParts; ++p) {
        const Vec positive = vy[p] > zero;
        const Vec g = Vec::blendv(slope * vg[p], vg[p], positive);
        const Vec normalised = Vec::blendv(inverse_slope * vy[p], vy[p], positive);
        vg[p] = vinv * (g - va - normalised * vb);
      }
      S::store(out + j, n, vg);
    }
  }
}

template <typename scalar_t>
const InstanceNormKernels<scalar_t>& instance_norm_kernels() {
  static const InstanceNormKernels<scalar_t> table{&instance_norm_forward_rows<scalar_t>,
                                                   &instance_norm_backward_rows<scalar_t>};
  return table;
}
MCMRI_CPU_FLOAT_AND_HALF_KERNELS(instance_norm_kernels, InstanceNormKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "../instance_norm.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(instance_norm_kernels, InstanceNormKernels)

namespace {

std::tuple<at::Tensor, at::Tensor> instance_norm_leaky_relu_fwd(const at::Tensor& x, double negative_slope,
                                                                double eps) {
  const auto s = check_instance_norm_args("instance_norm_leaky_relu_fwd", x, negative_slope);
  const auto x_c = x.contiguous();
  const auto accumulate = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto y = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  auto rstd = at::zeros({s.B, s.C}, x.options().dtype(accumulate));
  if (x.numel() == 0) return {y, rstd};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "instance_norm_leaky_relu_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = instance_norm_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.forward_rows(s.N, x_c.const_data_ptr<scalar_t>(), static_cast<acc_t>(negative_slope), static_cast<acc_t>(eps),
                     y.mutable_data_ptr<scalar_t>(), rstd.mutable_data_ptr<acc_t>(), begin, end);
    });
  });
  return {y, rstd};
}

at::Tensor instance_norm_leaky_relu_bwd(const at::Tensor& grad, const at::Tensor& y, const at::Tensor& rstd,
                                        double negative_slope) {
  const auto s = check_instance_norm_args("instance_norm_leaky_relu_bwd", y, negative_slope, &rstd, &grad);
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), y_c = y.contiguous(), rstd_c = rstd.contiguous();
  auto grad_x = at::empty_like(y_c, at::MemoryFormat::Contiguous);
  if (y.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "instance_norm_leaky_relu_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = instance_norm_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.backward_rows(s.N, grad_c.const_data_ptr<scalar_t>(), y_c.const_data_ptr<scalar_t>(),
                      rstd_c.const_data_ptr<acc_t>(), static_cast<acc_t>(negative_slope),
                      grad_x.mutable_data_ptr<scalar_t>(), begin, end);
    });
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("instance_norm_leaky_relu_fwd", &instance_norm_leaky_relu_fwd);
  m.impl("instance_norm_leaky_relu_bwd", &instance_norm_leaky_relu_bwd);
}

}  // namespace mcmri_fast::cpu
#endif
