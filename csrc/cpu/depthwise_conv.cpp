// CPU kernels of the depthwise 3×3 convolution: the forward over planes (b, c) in parallel; the
// backward over channels in parallel, the batch inside, one pass over grad and x for grad_x and the tap
// sums together (or, when only grad_x is asked for, the forward with the taps rotated by 180°). The
// plane loops are in depthwise_conv_kernels.h: the AVX2 build where the CPU has it, else the baseline
// build below (see cpu_isa.h). float16 / bfloat16 are computed in float32.
#define MCMRI_CPU_ISA base
#include "depthwise_conv_kernels.h"

#include "depthwise_conv.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "../depthwise_conv_args.h"
#include "cpu_isa.h"
#include "parallel_grain.h"
#include "depthwise_conv_kernel_table.h"

namespace mcmri_fast::cpu {
namespace {

// The kernels for this CPU: the AVX2 build where use_avx2_kernels(), else the baseline build.
template <typename scalar_t>
const DepthwiseConvKernels<scalar_t>& kernels() {
#ifdef MCMRI_CPU_AVX2_BUILD
  if (use_avx2_kernels()) return depthwise_conv_kernels_avx2<scalar_t>();
#endif
  static const DepthwiseConvKernels<scalar_t> base_table = MCMRI_FAST_DEPTHWISE_CONV_KERNEL_TABLE(base, scalar_t);
  return base_table;
}


at::ScalarType compute_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

// The taps [C, 9] in the compute type; rotated by 180° (the 9 taps reversed) for the backward to x.
at::Tensor taps_of(const at::Tensor& weight, int64_t C, bool rotated) {
  auto taps = weight.reshape({C, 9}).to(compute_dtype(weight.scalar_type()));
  return (rotated ? taps.flip({1}) : taps).contiguous();
}

void stencil(const DepthwiseConvSizes& s, const at::Tensor& in, const at::Tensor& taps, const at::Tensor* bias,
             at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "depthwise_conv3x3_cpu", [&] {
    using compute_t = depthwise_compute_t<scalar_t>;
    const auto& k = kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.H * s.W), [&](int64_t begin, int64_t end) {
      k.forward_planes(s.C, s.H, s.W, in.const_data_ptr<scalar_t>(), taps.const_data_ptr<compute_t>(),
                       bias == nullptr ? nullptr : bias->const_data_ptr<compute_t>(), out.mutable_data_ptr<scalar_t>(),
                       begin, end);
    });
  });
}

}  // namespace

at::Tensor depthwise_conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_fwd", x, weight, bias ? &*bias : nullptr);
  const auto x_c = x.contiguous();
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  const auto taps = taps_of(weight, s.C, /*rotated=*/false);
  const std::optional<at::Tensor> bias_c =
      bias ? std::optional<at::Tensor>(bias->to(compute_dtype(x.scalar_type())).contiguous()) : std::nullopt;
  stencil(s, x_c, taps, bias_c ? &*bias_c : nullptr, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& weight, bool need_x,
                                                                     bool need_weight, bool need_bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_bwd", x, weight, nullptr, &grad);
  // Each gradient not asked for is an empty tensor of its own (custom-op outputs may not alias).
  const auto none = [&] { return x.new_empty({0}); };
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernels read rows contiguously.
  const auto grad_c = grad.contiguous();
  auto grad_x = need_x ? at::empty_like(grad_c, at::MemoryFormat::Contiguous) : none();
  const auto rotated = taps_of(weight, s.C, /*rotated=*/true);
  if (!need_weight && !need_bias) {
    if (need_x && grad_x.numel() > 0) stencil(s, grad_c, rotated, nullptr, grad_x);
    return {grad_x, none(), none()};
  }
  auto sums = at::zeros({s.C, 10}, x.options().dtype(at::kDouble));
  if (x.numel() > 0) {
    const auto x_c = x.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_conv3x3_bwd_cpu", [&] {
      using compute_t = depthwise_compute_t<scalar_t>;
      const auto& k = kernels<scalar_t>();
      at::parallel_for(0, s.C, parallel_grain(s.B * s.H * s.W), [&](int64_t begin, int64_t end) {
        k.backward_channels(s.B, s.C, s.H, s.W, grad_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
                            rotated.const_data_ptr<compute_t>(), need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                            sums.mutable_data_ptr<double>(), begin, end);
      });
    });
  }
  // Copies, never views of sums: with C = 1 both would alias it.
  auto grad_weight =
      need_weight ? sums.narrow(1, 0, 9).reshape(weight.sizes()).to(weight.scalar_type(), false, /*copy=*/true) : none();
  auto grad_bias = need_bias ? sums.select(1, 9).to(x.scalar_type(), false, /*copy=*/true) : none();
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace mcmri_fast::cpu
