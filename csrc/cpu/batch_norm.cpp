// CPU kernels of batch norm + ReLU in training mode (the contract: csrc/batch_norm.h), channels in parallel,
// each channel's B planes in one thread: the forward reads x (and the residual, writing their sum t) for the
// mean, t again for the variance (two passes, not E[t²] − μ²: that cancels when |μ| ≫ σ; a channel of a
// MANet level, ≤ 1 MB, stays in the core's cache between them) and once more to write y; the backward
// reads grad and t for the channel's two sums and again to write grad_t. ATen instead runs the add, the
// statistics, the normalisation and the ReLU as passes of their own, each forward and backward. Written
// once on at::vec::Vectorized and built for each instruction set (isa_builds.h); float16 / bfloat16 are
// computed in float32.
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

// Channels c in [begin, end) of x, residual, t, y, grad, grad_t viewed as [B, C, N]; weight, bias, mean,
// rstd, grad_weight, grad_bias hold one value per channel. residual and t_out are null without a residual.
template <typename scalar_t>
struct BatchNormKernels {
  using acc_t = at::opmath_type<scalar_t>;
  void (*forward_channels)(int64_t B, int64_t C, int64_t N, const scalar_t* x, const scalar_t* residual,
                           const acc_t* weight, const acc_t* bias, acc_t eps, scalar_t* y, scalar_t* t_out,
                           acc_t* mean, acc_t* rstd, int64_t begin, int64_t end);
  void (*backward_channels)(int64_t B, int64_t C, int64_t N, const scalar_t* grad, const scalar_t* t,
                            const acc_t* mean, const acc_t* rstd, const acc_t* weight, const acc_t* bias,
                            scalar_t* grad_t, acc_t* grad_weight, acc_t* grad_bias, int64_t begin, int64_t end);
};

}  // namespace mcmri_fast::cpu

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

// γ x̂ + β = (t − μ) · scale + β (scale = γ rstd; centred first: no cancellation when |μ| ≫ σ): the
// forward's y and the backward's mask both come from this one expression, so they agree on every element.
template <typename Vec>
inline Vec affine(const Vec& t, const Vec& mu, const Vec& scale, const Vec& beta) {
  return (t - mu) * scale + beta;
}

template <typename scalar_t>
void batch_norm_forward_channels(int64_t B, int64_t C, int64_t N, const scalar_t* x, const scalar_t* residual,
                                 const at::opmath_type<scalar_t>* weight, const at::opmath_type<scalar_t>* bias,
                                 at::opmath_type<scalar_t> eps, scalar_t* y, scalar_t* t_out,
                                 at::opmath_type<scalar_t>* mean, at::opmath_type<scalar_t>* rstd, int64_t begin,
                                 int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const double count = static_cast<double>(B) * N;
  const Vec zero(0);
  for (int64_t c = begin; c < end; ++c) {
    // the planes of t: x's own, or x + residual written out (summed on the way)
    double sum = 0;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t plane = (b * C + c) * N;
      if (residual == nullptr) {
        const scalar_t* const rows[1] = {x + plane};
        sum += row_sums<1>(N, rows, [](const Vec* v, int64_t) { return std::array<Vec, 1>{v[0]}; })[0];
        continue;
      }
      constexpr int64_t kChunk = 64 * S::kSize;
      for (int64_t chunk = 0; chunk < N; chunk += kChunk) {
        Vec partial(0);
        for (int64_t j = chunk; j < std::min(N, chunk + kChunk); j += S::kSize) {
          const int64_t n = std::min<int64_t>(S::kSize, N - j);
          Vec v[S::kParts], r[S::kParts];
          S::load(x + plane + j, n, v);
          S::load(residual + plane + j, n, r);
          for (int p = 0; p < S::kParts; ++p) v[p] = v[p] + r[p];  // tail lanes: 0 + 0
          S::store(t_out + plane + j, n, v);
          // the sum of the rounded t (what the variance pass and the backward read)
          S::load(t_out + plane + j, n, v);
          for (int p = 0; p < S::kParts; ++p) partial = partial + v[p];
        }
        acc_t lanes[Vec::size()];
        partial.store(lanes);
        for (int64_t l = 0; l < Vec::size(); ++l) sum += lanes[l];
      }
    }
    const scalar_t* t = residual == nullptr ? x : t_out;
    const acc_t mu = static_cast<acc_t>(sum / count);
    const Vec vmu(mu);
    double squares = 0;
    for (int64_t b = 0; b < B; ++b) {
      const scalar_t* const rows[1] = {t + (b * C + c) * N};
      squares += row_sums<1>(N, rows, [&](const Vec* v, int64_t valid) {
        const Vec d = (v[0] - vmu) * valid_lanes<Vec>(valid);  // tail lanes are 0, not −μ
        return std::array<Vec, 1>{d * d};
      })[0];
    }
    const acc_t inv = static_cast<acc_t>(1.0 / std::sqrt(squares / count + static_cast<double>(eps)));
    mean[c] = mu;
    rstd[c] = inv;
    const Vec vscale(weight[c] * inv), vbeta(bias[c]);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t plane = (b * C + c) * N;
      for (int64_t j = 0; j < N; j += S::kSize) {
        const int64_t n = std::min<int64_t>(S::kSize, N - j);
        Vec v[S::kParts];
        S::load(t + plane + j, n, v);
        for (int p = 0; p < S::kParts; ++p) v[p] = at::vec::maximum(affine(v[p], vmu, vscale, vbeta), zero);
        S::store(y + plane + j, n, v);
      }
    }
  }
}

template <typename scalar_t>
void batch_norm_backward_channels(int64_t B, int64_t C, int64_t N, const scalar_t* grad, const scalar_t* t,
                                  const at::opmath_type<scalar_t>* mean, const at::opmath_type<scalar_t>* rstd,
                                  const at::opmath_type<scalar_t>* weight, const at::opmath_type<scalar_t>* bias,
                                  scalar_t* grad_t, at::opmath_type<scalar_t>* grad_weight,
                                  at::opmath_type<scalar_t>* grad_bias, int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const double count = static_cast<double>(B) * N;
  const Vec zero(0);
  for (int64_t c = begin; c < end; ++c) {
    const acc_t inv = rstd[c];
    const Vec vmu(mean[c]), vinv(inv), vscale(weight[c] * inv), vbeta(bias[c]);
    // A = Σ g', S = Σ g' x̂, in one pass; tail lanes load grad = 0 and add nothing
    std::array<double, 2> sums{};
    for (int64_t b = 0; b < B; ++b) {
      const int64_t plane = (b * C + c) * N;
      const scalar_t* const rows[2] = {grad + plane, t + plane};
      const auto part = row_sums<2>(N, rows, [&](const Vec* v, int64_t) {
        const Vec g = Vec::blendv(zero, v[0], affine(v[1], vmu, vscale, vbeta) > zero);
        return std::array<Vec, 2>{g, g * ((v[1] - vmu) * vinv)};
      });
      sums[0] += part[0];
      sums[1] += part[1];
    }
    grad_bias[c] = static_cast<acc_t>(sums[0]);
    grad_weight[c] = static_cast<acc_t>(sums[1]);
    const Vec va(static_cast<acc_t>(sums[0] / count)), vs(static_cast<acc_t>(sums[1] / count));
    for (int64_t b = 0; b < B; ++b) {
      const int64_t plane = (b * C + c) * N;
      for (int64_t j = 0; j < N; j += S::kSize) {
        const int64_t n = std::min<int64_t>(S::kSize, N - j);
        Vec vg[S::kParts], vt[S::kParts];
        S::load(grad + plane + j, n, vg);
        S::load(t + plane + j, n, vt);
        for (int p = 0; p < S::kParts; ++p) {
          const Vec g = Vec::blendv(zero, vg[p], affine(vt[p], vmu, vscale, vbeta) > zero);
          vg[p] = vscale * (g - va - ((vt[p] - vmu) * vinv) * vs);
        }
        S::store(grad_t + plane + j, n, vg);
      }
    }
  }
}

template <typename scalar_t>
const BatchNormKernels<scalar_t>& batch_norm_kernels() {
  static const BatchNormKernels<scalar_t> table{&batch_norm_forward_channels<scalar_t>,
                                                &batch_norm_backward_channels<scalar_t>};
  return table;
}
MCMRI_CPU_FLOAT_AND_HALF_KERNELS(batch_norm_kernels, BatchNormKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "../batch_norm.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(batch_norm_kernels, BatchNormKernels)

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_fwd(const at::Tensor& x,
                                                                              const std::optional<at::Tensor>& residual,
                                                                              const at::Tensor& weight,
                                                                              const at::Tensor& bias, double eps) {
  const auto s = check_batch_norm_fwd_args(x, residual, weight, bias);
  const auto x_c = x.contiguous();
  const auto r_c = residual.has_value() ? residual->contiguous() : at::Tensor();
  const auto weight_c = weight.contiguous(), bias_c = bias.contiguous();
  auto y = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  auto t = residual.has_value() ? at::empty_like(x_c, at::MemoryFormat::Contiguous) : x.new_empty({0});
  auto mean = at::empty({s.C}, weight.options()), rstd = at::empty({s.C}, weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "batch_norm_relu_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = batch_norm_kernels<scalar_t>();
    at::parallel_for(0, s.C, parallel_grain(s.B * s.N), [&](int64_t begin, int64_t end) {
      k.forward_channels(s.B, s.C, s.N, x_c.const_data_ptr<scalar_t>(),
                         residual.has_value() ? r_c.const_data_ptr<scalar_t>() : nullptr,
                         weight_c.const_data_ptr<acc_t>(), bias_c.const_data_ptr<acc_t>(), static_cast<acc_t>(eps),
                         y.mutable_data_ptr<scalar_t>(), residual.has_value() ? t.mutable_data_ptr<scalar_t>() : nullptr,
                         mean.mutable_data_ptr<acc_t>(), rstd.mutable_data_ptr<acc_t>(), begin, end);
    });
  });
  return {y, t, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_norm_relu_bwd(const at::Tensor& grad, const at::Tensor& t,
                                                                   const at::Tensor& mean, const at::Tensor& rstd,
                                                                   const at::Tensor& weight, const at::Tensor& bias) {
  const auto s = check_batch_norm_args("batch_norm_relu_bwd", t, {{"grad", &grad}},
                                       {{"mean", &mean}, {"rstd", &rstd}, {"weight", &weight}, {"bias", &bias}});
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads planes contiguously.
  const auto grad_c = grad.contiguous(), t_c = t.contiguous();
  const auto mean_c = mean.contiguous(), rstd_c = rstd.contiguous(), weight_c = weight.contiguous(),
             bias_c = bias.contiguous();
  auto grad_t = at::empty_like(t_c, at::MemoryFormat::Contiguous);
  auto grad_weight = at::empty({s.C}, weight.options()), grad_bias = at::empty({s.C}, weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "batch_norm_relu_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = batch_norm_kernels<scalar_t>();
    at::parallel_for(0, s.C, parallel_grain(s.B * s.N), [&](int64_t begin, int64_t end) {
      k.backward_channels(s.B, s.C, s.N, grad_c.const_data_ptr<scalar_t>(), t_c.const_data_ptr<scalar_t>(),
                          mean_c.const_data_ptr<acc_t>(), rstd_c.const_data_ptr<acc_t>(), weight_c.const_data_ptr<acc_t>(),
                          bias_c.const_data_ptr<acc_t>(), grad_t.mutable_data_ptr<scalar_t>(),
                          grad_weight.mutable_data_ptr<acc_t>(), grad_bias.mutable_data_ptr<acc_t>(), begin, end);
    });
  });
  return {grad_t, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("batch_norm_relu_fwd", &batch_norm_relu_fwd);
  m.impl("batch_norm_relu_bwd", &batch_norm_relu_bwd);
}

}  // namespace mcmri_fast::cpu
#endif
