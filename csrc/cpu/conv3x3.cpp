// CPU implementation of the dense 3×3 convolution (the contract: csrc/conv3x3.h), zero padding 1, stride 1:
// Winograd F(4×4, 3×3) (conv3x3_winograd.cpp; the vector code of the highest instruction set this
// process runs, AVX-512 or AVX2) where it applies, torch's convolution (oneDNN) elsewhere. The backward to
// x is the forward with the kernels rotated, so it takes the Winograd path too; the gradients of the
// weight and bias are torch's (oneDNN's backward-weights convolution).
// Unlike the other ops' files this one does not include isa_builds.h: it has no ATen vector kernels to
// build per instruction set; the Winograd vector code is written in each one's intrinsics in a file of
// its own (conv3x3_winograd_avx512.cpp, conv3x3_winograd_avx2.cpp), picked by cpu_isa.h's pick_isa_build.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../conv3x3.h"
#include "conv3x3_winograd.h"

namespace mcmri_fast::cpu {
namespace {

#ifdef MCMRI_CPU_AVX2_BUILD
// The Winograd kernel of the instruction set this process runs, nullptr on the baseline one.
const winograd::Kernel* winograd_kernel() {
  return pick_isa_build<winograd::Kernel>({
#ifdef MCMRI_CPU_AVX512_BUILD
      {KernelIsa::avx512, &winograd::avx512_kernel},
#endif
      {KernelIsa::avx2, &winograd::avx2_kernel},
  });
}

// y = x ⋆ w (+ bias) by the Winograd kernel; rotated: by the kernels of the backward to x instead. The
// kernel computes whole packs of kOutputsPerPack outputs: the last pack of another count holds zero
// kernels past the outputs, whose results are not stored.
at::Tensor winograd_conv(const at::Tensor& x, const at::Tensor& weight, bool rotated, const at::Tensor* bias) {
  const winograd::Kernel& kernel = *winograd_kernel();
  const auto x_c = x.contiguous();
  const auto w_c = weight.contiguous();
  const int64_t B = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t outputs = rotated ? weight.size(1) : weight.size(0);
  const int64_t packs = (outputs + winograd::kOutputsPerPack - 1) / winograd::kOutputsPerPack;
  auto U = at::empty({packs, 36, Cin, winograd::kOutputsPerPack}, x.options());
  at::parallel_for(0, packs, 1, [&](int64_t begin, int64_t end) {
    winograd::pack_weights(w_c.const_data_ptr<float>(), weight.size(0), weight.size(1), rotated,
                           U.mutable_data_ptr<float>(), begin, end);
  });
  auto y = at::empty({B, outputs, H, W}, x.options());
  const std::optional<at::Tensor> bias_c = bias == nullptr ? std::nullopt : std::optional(bias->contiguous());
  const winograd::Problem problem{B,
                                  Cin,
                                  packs * winograd::kOutputsPerPack,
                                  outputs,
                                  H,
                                  W,
                                  x_c.const_data_ptr<float>(),
                                  U.const_data_ptr<float>(),
                                  bias_c ? bias_c->const_data_ptr<float>() : nullptr,
                                  y.mutable_data_ptr<float>()};
  at::parallel_for(0, winograd::work_items(problem, kernel), 1,
                   [&](int64_t begin, int64_t end) { winograd::forward(problem, kernel, begin, end); });
  return y;
}
#endif

// Whether the Winograd kernel computes x ⋆ w with `outputs` output channels.
bool winograd_applies(const at::Tensor& x, int64_t outputs) {
#ifdef MCMRI_CPU_AVX2_BUILD
  // Below 8 input channels or 8 pixels a side the transforms outweigh the saved multiply-adds; below 8
  // outputs, the unused part of the one pack does.
  return winograd_kernel() != nullptr && x.scalar_type() == at::kFloat && outputs >= winograd::kOutputsPerPack &&
         x.size(1) >= 8 && x.size(2) >= 8 && x.size(3) >= 8;
#else
  (void)x, (void)outputs;
  return false;
#endif
}

bool conv3x3_winograd_applies(const at::Tensor& x, const at::Tensor& weight) {
  check_conv3x3_args("conv3x3_winograd_applies", x, weight, nullptr);
  return winograd_applies(x, weight.size(0));
}

at::Tensor conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_conv3x3_args("conv3x3_fwd", x, weight, bias ? &*bias : nullptr);
#ifdef MCMRI_CPU_AVX2_BUILD
  if (winograd_applies(x, weight.size(0))) return winograd_conv(x, weight, false, bias ? &*bias : nullptr);
#endif
  return at::conv2d(x, weight, bias, 1, 1).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                           const at::Tensor& weight, bool need_x, bool need_weight,
                                                           bool need_bias) {
  check_conv3x3_args("conv3x3_bwd", x, weight, nullptr, &grad);
  at::Tensor grad_x = x.new_empty(0), grad_weight = x.new_empty(0), grad_bias = x.new_empty(0);
  bool torch_x = need_x;
#ifdef MCMRI_CPU_AVX2_BUILD
  if (need_x && winograd_applies(grad, x.size(1))) {
    grad_x = winograd_conv(grad, weight, true, nullptr);
    torch_x = false;
  }
#endif
  if (torch_x || need_weight || need_bias) {
    auto [gx, gw, gb] = at::convolution_backward(grad, x, weight, c10::IntArrayRef({weight.size(0)}), {1, 1}, {1, 1},
                                                  {1, 1}, false, {0, 0}, 1, {torch_x, need_weight, need_bias});
    if (torch_x) grad_x = gx.contiguous();
    if (need_weight) grad_weight = gw.contiguous();
    if (need_bias) grad_bias = gb;
  }
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("conv3x3_fwd", &conv3x3_fwd);
  m.impl("conv3x3_bwd", &conv3x3_bwd);
  m.impl("conv3x3_winograd_applies", &conv3x3_winograd_applies);
}

}  // namespace mcmri_fast::cpu
