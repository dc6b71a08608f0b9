// CPU kernels of the sigmoid-gated fusion (the contract: csrc/gated_fusion.h): one pass forward, one
// pass backward, rows (b, c) in parallel. The row loops are written once on at::vec::Vectorized along the
// spatial dim and built for each instruction set (isa_builds.h); float16 / bfloat16 are computed in float32.
#include "isa_builds.h"

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "vec_step.h"

namespace mcmri_fast::cpu {

// Both kernels run rows r = (b, c) in [begin, end) of a, b, out (and grad) viewed as [B·C, N], gate as
// [B, 2C, N]; `clean` is whether non-finite values are replaced (by `fill` in the forward).
template <typename scalar_t>
struct GatedFusionKernels {
  void (*forward_rows)(int64_t C, int64_t N, const scalar_t* a, const scalar_t* b, const scalar_t* gate,
                       scalar_t* out, bool clean, double fill, int64_t begin, int64_t end);
  void (*backward_rows)(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* a, const scalar_t* b,
                        const scalar_t* gate, scalar_t* grad_a, scalar_t* grad_b, scalar_t* grad_gate, bool clean,
                        int64_t begin, int64_t end);
};

}  // namespace mcmri_fast::cpu

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

using at::vec::Vectorized;

// exp of float lanes from Vectorized arithmetic (Cephes' expf: n = round(x / ln 2), a degree-5 polynomial
// of r = x − n ln 2, times 2^n built in the exponent bits; within 2 ulp). Kept in both builds: in the
// baseline one Vectorized<float>::exp() calls std::exp lane by lane, and in the AVX2 one it is Sleef's
// 1-ulp expf, slower here (BENCHMARKS.md). float64 keeps Vectorized<double>::exp() (gradcheck's precision).
inline Vectorized<float> exp_lanes(const Vectorized<float>& x) {
  using V = Vectorized<float>;
  using I = Vectorized<int32_t>;
  const V magic(12582912.0f);  // 1.5·2^23: adding it rounds to an integer, held in the low mantissa bits
  // Clamped so that 2^n stays a normal float (n in [-126, 127]); maximum / minimum keep nan.
  const V clamped = at::vec::minimum(at::vec::maximum(x, V(-87.3f)), V(88.0f));
  const V t = clamped * V(1.44269504088896341f) + magic;
  const V n = t - magic;
  const V r = (clamped - n * V(0.693359375f)) - n * V(-2.12194440e-4f);
  V p(1.9875691500e-4f);
  p = p * r + V(1.3981999507e-3f);
  p = p * r + V(8.3334519073e-3f);
  p = p * r + V(4.1665795894e-2f);
  p = p * r + V(1.6666665459e-1f);
  p = p * r + V(5.0000001201e-1f);
  p = p * (r * r) + r + V(1.0f);
  // 2^n: the biased exponent n + 127 in bits 23..30 (the bits of t are those of the magic number plus n).
  const I exponent = (at::vec::cast<int32_t>(t) - I(0x4B400000 - 127)) * I(1 << 23);
  const V scaled = p * at::vec::cast<float>(exponent);
  return V::blendv(scaled, V(std::numeric_limits<float>::infinity()), x > V(88.72283935546875f));  // overflow
}

template <typename Vec>
inline Vec exp_lanes(const Vec& x) {
  return x.exp();
}

template <typename Vec>
inline Vec sigmoid(const Vec& x) {
  const Vec one(1);
  return one / (one + exp_lanes(x.neg()));
}

// All-ones lanes where x is finite: x - x is 0 for finite x and nan for ±inf and nan.
template <typename Vec>
inline Vec finite_lanes(const Vec& x) {
  return (x - x) == Vec(0);
}

// The forward at one vector of elements: a σ(ga) + b σ(gb), its non-finite lanes replaced by `fill`.
template <typename Vec>
inline Vec fused(const Vec& a, const Vec& b, const Vec& ga, const Vec& gb, bool clean, const Vec& fill) {
  const Vec out = a * sigmoid(ga) + b * sigmoid(gb);
  return clean ? Vec::blendv(fill, out, finite_lanes(out)) : out;
}

// The backward at one vector of elements. With cleanup the gradient is zero where the forward's value
// before the cleanup was not finite (nan_to_num's backward); the gate gradient keeps the operation
// order of mul and sigmoid's backward, (g a)(1 − s)s.
template <typename Vec>
inline void fused_backward(const Vec& grad, const Vec& a, const Vec& b, const Vec& ga, const Vec& gb, bool clean,
                           Vec& grad_a, Vec& grad_b, Vec& grad_ga, Vec& grad_gb) {
  const Vec one(1);
  const Vec sa = sigmoid(ga), sb = sigmoid(gb);
  const Vec g = clean ? Vec::blendv(Vec(0), grad, finite_lanes(a * sa + b * sb)) : grad;
  grad_a = g * sa;
  grad_b = g * sb;
  grad_ga = g * a * (one - sa) * sa;
  grad_gb = g * b * (one - sb) * sb;
}

// Offset of gate[b, c] for row r = (b, c); gate[b, C + c] is C·N further.
inline int64_t gate_row_offset(int64_t r, int64_t C, int64_t N) {
  const int64_t batch = r / C, c = r - batch * C;
  return (batch * 2 * C + c) * N;
}

// Rows [begin, end) of out = a σ(gate[:, :C]) + b σ(gate[:, C:]) (see GatedFusionKernels).
template <typename scalar_t>
void gated_fusion_forward_rows(int64_t C, int64_t N, const scalar_t* a, const scalar_t* b, const scalar_t* gate,
                               scalar_t* out, bool clean, double fill, int64_t begin, int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  const Vec vfill(static_cast<at::opmath_type<scalar_t>>(fill));
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = r * N, gate_row = gate_row_offset(r, C, N), gate_b_row = gate_row + C * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec va[S::kParts], vb[S::kParts], vga[S::kParts], vgb[S::kParts], vout[S::kParts];
      S::load(a + row + j, n, va);
      S::load(b + row + j, n, vb);
      S::load(gate + gate_row + j, n, vga);
      S::load(gate + gate_b_row + j, n, vgb);
      for (int p = 0; p < S::kParts; ++p) vout[p] = fused(va[p], vb[p], vga[p], vgb[p], clean, vfill);
      S::store(out + row + j, n, vout);
    }
  }
}

// Rows [begin, end) of the backward: grad_a, grad_b and both halves of grad_gate (see GatedFusionKernels).
template <typename scalar_t>
void gated_fusion_backward_rows(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* a, const scalar_t* b,
                                const scalar_t* gate, scalar_t* grad_a, scalar_t* grad_b, scalar_t* grad_gate,
                                bool clean, int64_t begin, int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t row = r * N, gate_row = gate_row_offset(r, C, N), gate_b_row = gate_row + C * N;
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec vg[S::kParts], va[S::kParts], vb[S::kParts], vga[S::kParts], vgb[S::kParts];
      Vec da[S::kParts], db[S::kParts], dga[S::kParts], dgb[S::kParts];
      S::load(grad + row + j, n, vg);
      S::load(a + row + j, n, va);
      S::load(b + row + j, n, vb);
      S::load(gate + gate_row + j, n, vga);
      S::load(gate + gate_b_row + j, n, vgb);
      for (int p = 0; p < S::kParts; ++p) {
        fused_backward(vg[p], va[p], vb[p], vga[p], vgb[p], clean, da[p], db[p], dga[p], dgb[p]);
      }
      S::store(grad_a + row + j, n, da);
      S::store(grad_b + row + j, n, db);
      S::store(grad_gate + gate_row + j, n, dga);
      S::store(grad_gate + gate_b_row + j, n, dgb);
    }
  }
}

template <typename scalar_t>
const GatedFusionKernels<scalar_t>& gated_fusion_kernels() {
  static const GatedFusionKernels<scalar_t> table{&gated_fusion_forward_rows<scalar_t>,
                                                  &gated_fusion_backward_rows<scalar_t>};
  return table;
}
MCMRI_CPU_FLOAT_AND_HALF_KERNELS(gated_fusion_kernels, GatedFusionKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "../gated_fusion.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(gated_fusion_kernels, GatedFusionKernels)

namespace {

at::Tensor gated_fusion_fwd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& gate,
                            std::optional<double> nonfinite) {
  const auto s = check_gated_fusion_args("gated_fusion_fwd", a, b, gate);
  const auto a_c = a.contiguous(), b_c = b.contiguous(), gate_c = gate.contiguous();
  auto out = at::empty_like(a_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gated_fusion_fwd_cpu", [&] {
    const auto& k = gated_fusion_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.forward_rows(s.C, s.N, a_c.const_data_ptr<scalar_t>(), b_c.const_data_ptr<scalar_t>(),
                     gate_c.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), nonfinite.has_value(),
                     nonfinite.value_or(0.0), begin, end);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_fusion_bwd(const at::Tensor& grad, const at::Tensor& a,
                                                                const at::Tensor& b, const at::Tensor& gate,
                                                                std::optional<double> nonfinite) {
  const auto s = check_gated_fusion_args("gated_fusion_bwd", a, b, gate, &grad);
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), a_c = a.contiguous(), b_c = b.contiguous(), gate_c = gate.contiguous();
  auto grad_a = at::empty_like(a_c, at::MemoryFormat::Contiguous);
  auto grad_b = at::empty_like(b_c, at::MemoryFormat::Contiguous);
  auto grad_gate = at::empty_like(gate_c, at::MemoryFormat::Contiguous);
  if (grad_a.numel() == 0) return {grad_a, grad_b, grad_gate};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gated_fusion_bwd_cpu", [&] {
    const auto& k = gated_fusion_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.backward_rows(s.C, s.N, grad_c.const_data_ptr<scalar_t>(), a_c.const_data_ptr<scalar_t>(),
                      b_c.const_data_ptr<scalar_t>(), gate_c.const_data_ptr<scalar_t>(),
                      grad_a.mutable_data_ptr<scalar_t>(), grad_b.mutable_data_ptr<scalar_t>(),
                      grad_gate.mutable_data_ptr<scalar_t>(), nonfinite.has_value(), begin, end);
    });
  });
  return {grad_a, grad_b, grad_gate};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("gated_fusion_fwd", &gated_fusion_fwd);
  m.impl("gated_fusion_bwd", &gated_fusion_bwd);
}

}  // namespace mcmri_fast::cpu
#endif
