// CPU kernels of PReLU: one pass forward, one pass backward giving the input's gradient and the
// slope's per-row sums together, rows (b, c) in parallel. The row loops are in prelu_kernels.h: the
// AVX2 build where the CPU has it, else the baseline build below (see cpu_isa.h).
#define MCMRI_CPU_ISA base
#include "prelu_kernels.h"

#include "prelu.h"

#include <ATen/Parallel.h>

#include "../prelu_args.h"
#include "cpu_isa.h"
#include "parallel_grain.h"
#include "prelu_kernel_table.h"

namespace mcmri_fast::cpu {
namespace {

// The kernels for this CPU: the AVX2 build where use_avx2_kernels(), else the baseline build.
template <typename scalar_t>
const PreluKernels<scalar_t>& kernels() {
#ifdef MCMRI_CPU_AVX2_BUILD
  if (use_avx2_kernels()) return prelu_kernels_avx2<scalar_t>();
#endif
  static const PreluKernels<scalar_t> base_table = MCMRI_FAST_PRELU_KERNEL_TABLE(base, scalar_t);
  return base_table;
}


}  // namespace

at::Tensor prelu_fwd(const at::Tensor& x, const at::Tensor& weight) {
  const auto s = check_prelu_args("prelu_fwd", x, weight);
  const auto x_c = x.contiguous(), weight_c = weight.contiguous();
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "prelu_fwd_cpu", [&] {
    const auto& k = kernels<scalar_t>();
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
    const auto& k = kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.backward_rows(s.C, s.N, grad_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
                      weight_c.const_data_ptr<scalar_t>(), s.shared,
                      need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                      need_weight ? weight_rows.mutable_data_ptr<acc_t>() : nullptr, begin, end);
    });
  });
  return {grad_x, weight_rows};
}

}  // namespace mcmri_fast::cpu
