// CPU kernels of PReLU (the contract: csrc/prelu.h): one pass forward, one pass backward giving the
// input's gradient and the slope's per-row sums together, rows (b, c) in parallel. The row loops are
// written once on at::vec::Vectorized along the spatial dim and built for each instruction set
// (isa_builds.h); float16 / bfloat16 are computed in float32.
#include "isa_builds.h"

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>

#include "vec_step.h"

namespace mcmri_fast::cpu {

// Both kernels run rows r = (b, c) in [begin, end) of x, out, grad, grad_x viewed as [B·C, N]; the
// slope of a row is weight[0] when `shared`, else weight[c]. weight_rows holds one sum per row.
template <typename scalar_t>
struct PreluKernels {
  void (*forward_rows)(int64_t C, int64_t N, const scalar_t* x, const scalar_t* weight, bool shared, scalar_t* out,
                       int64_t begin, int64_t end);
  void (*backward_rows)(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* x, const scalar_t* weight,
                        bool shared, scalar_t* grad_x, at::opmath_type<scalar_t>* weight_rows, int64_t begin,
                        int64_t end);
};

}  // namespace mcmri_fast::cpu

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

// The slope of row r = (b, c): weight[0] when one slope is shared, else weight[c].
template <typename scalar_t>
inline at::opmath_type<scalar_t> prelu_slope(const scalar_t* weight, bool shared, int64_t r, int64_t C) {
  return static_cast<at::opmath_type<scalar_t>>(weight[shared ? 0 : r % C]);
}

// Rows [begin, end) of out = x > 0 ? x : w·x (x, out viewed as [B·C, N]).
template <typename scalar_t>
void prelu_forward_rows(int64_t C, int64_t N, const scalar_t* x, const scalar_t* weight, bool shared, scalar_t* out,
                        int64_t begin, int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const Vec zero(0);
  for (int64_t r = begin; r < end; ++r) {
    const Vec w(prelu_slope(weight, shared, r, C));
    const int64_t row = r * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec v[S::kParts];
      S::load(x + row + j, n, v);
      for (int p = 0; p < S::kParts; ++p) v[p] = Vec::blendv(w * v[p], v[p], v[p] > zero);
      S::store(out + row + j, n, v);
    }
  }
}

// Rows [begin, end) of the backward: grad_x = x > 0 ? g : w·g (when grad_x is not null), and per row
// the slope's gradient Σ_j (x > 0 ? 0 : x·g) into weight_rows[r] (when not null), summed in double by
// chunks of vector partials (a row may hold millions of elements).
template <typename scalar_t>
void prelu_backward_rows(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* x, const scalar_t* weight,
                         bool shared, scalar_t* grad_x, at::opmath_type<scalar_t>* weight_rows, int64_t begin,
                         int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t kChunk = 64 * S::kSize;
  const Vec zero(0);
  for (int64_t r = begin; r < end; ++r) {
    const Vec w(prelu_slope(weight, shared, r, C));
    const int64_t row = r * N;
    double total = 0;
    for (int64_t chunk = 0; chunk < N; chunk += kChunk) {
      Vec partial(0);
      for (int64_t j = chunk; j < std::min(N, chunk + kChunk); j += S::kSize) {
        const int64_t n = std::min<int64_t>(S::kSize, N - j);
        Vec vg[S::kParts], vx[S::kParts];
        S::load(grad + row + j, n, vg);
        S::load(x + row + j, n, vx);
        for (int p = 0; p < S::kParts; ++p) {
          const Vec positive = vx[p] > zero;
          // tail lanes load as zero: they add nothing
          if (weight_rows != nullptr) partial = partial + Vec::blendv(vx[p] * vg[p], zero, positive);
          vg[p] = Vec::blendv(w * vg[p], vg[p], positive);
        }
        if (grad_x != nullptr) S::store(grad_x + row + j, n, vg);
      }
      if (weight_rows != nullptr) {
        at::opmath_type<scalar_t> lanes[Vec::size()];
        partial.store(lanes);
        for (int64_t k = 0; k < Vec::size(); ++k) total += lanes[k];
      }
    }
    if (weight_rows != nullptr) weight_rows[r] = static_cast<at::opmath_type<scalar_t>>(total);
  }
}

template <typename scalar_t>
const PreluKernels<scalar_t>& prelu_kernels() {
  static const PreluKernels<scalar_t> table{&prelu_forward_rows<scalar_t>, &prelu_backward_rows<scalar_t>};
  return table;
}
MCMRI_CPU_FLOAT_AND_HALF_KERNELS(prelu_kernels, PreluKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "../prelu.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(prelu_kernels, PreluKernels)

namespace {

at::Tensor prelu_fwd(const at::Tensor& x, const at::Tensor& weight) {
  const auto s = check_prelu_args("prelu_fwd", x, weight);
  const auto x_c = x.contiguous(), weight_c = weight.contiguous();
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prelu_fwd_cpu", [&] {
    const auto& k = prelu_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.forward_rows(s.C, s.N, x_c.const_data_ptr<scalar_t>(), weight_c.const_data_ptr<scalar_t>(), s.shared,
                     out.mutable_data_ptr<scalar_t>(), begin, end);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> prelu_bwd(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                             bool need_x, bool need_weight) {
  const auto s = check_prelu_args("prelu_bwd", x, weight, &grad);
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), x_c = x.contiguous(), weight_c = weight.contiguous();
  const auto accumulate = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  auto grad_x = need_x ? at::empty_like(x_c, at::MemoryFormat::Contiguous) : x.new_empty({0});
  auto weight_rows = need_weight ? at::zeros({s.B, s.C}, x.options().dtype(accumulate)) : x.new_empty({0}, accumulate);
  if (x.numel() == 0 || !(need_x || need_weight)) return {grad_x, weight_rows};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prelu_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = prelu_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.backward_rows(s.C, s.N, grad_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
                      weight_c.const_data_ptr<scalar_t>(), s.shared,
                      need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                      need_weight ? weight_rows.mutable_data_ptr<acc_t>() : nullptr, begin, end);
    });
  });
  return {grad_x, weight_rows};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("prelu_fwd", &prelu_fwd);
  m.impl("prelu_bwd", &prelu_bwd);
}

}  // namespace mcmri_fast::cpu
#endif
