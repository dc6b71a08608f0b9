// CPU kernels of the sigmoid-gated fusion: one pass forward, one pass backward, rows (b, c) in
// parallel. The row loops are in gated_fusion_kernels.h: the AVX2 build where the CPU has it, else the
// baseline build below (see cpu_isa.h). float16 / bfloat16 are computed in float32.
#define MCMRI_CPU_ISA base
#include "gated_fusion_kernels.h"

#include "gated_fusion.h"

#include <ATen/Parallel.h>

#include "../gated_fusion_args.h"
#include "cpu_isa.h"
#include "parallel_grain.h"
#include "gated_fusion_kernel_table.h"

namespace mcmri_fast::cpu {
namespace {

// The kernels for this CPU: the AVX2 build where use_avx2_kernels(), else the baseline build.
template <typename scalar_t>
const GatedFusionKernels<scalar_t>& kernels() {
#ifdef MCMRI_CPU_AVX2_BUILD
  if (use_avx2_kernels()) return gated_fusion_kernels_avx2<scalar_t>();
#endif
  static const GatedFusionKernels<scalar_t> base_table = MCMRI_FAST_GATED_FUSION_KERNEL_TABLE(base, scalar_t);
  return base_table;
}


}  // namespace

at::Tensor gated_fusion_fwd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& gate,
                            std::optional<double> nonfinite) {
  const auto s = check_gated_fusion_args("gated_fusion_fwd", a, b, gate);
  const auto a_c = a.contiguous(), b_c = b.contiguous(), gate_c = gate.contiguous();
  auto out = at::empty_like(a_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gated_fusion_fwd_cpu", [&] {
    const auto& k = kernels<scalar_t>();
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
    const auto& k = kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.backward_rows(s.C, s.N, grad_c.const_data_ptr<scalar_t>(), a_c.const_data_ptr<scalar_t>(),
                      b_c.const_data_ptr<scalar_t>(), gate_c.const_data_ptr<scalar_t>(),
                      grad_a.mutable_data_ptr<scalar_t>(), grad_b.mutable_data_ptr<scalar_t>(),
                      grad_gate.mutable_data_ptr<scalar_t>(), nonfinite.has_value(), begin, end);
    });
  });
  return {grad_a, grad_b, grad_gate};
}

}  // namespace mcmri_fast::cpu
