// CPU implementation of the dense 3×3 convolution (zero padding 1, stride 1): Winograd F(4×4, 3×3)
// (conv3x3_winograd.cpp; in AVX-512, else AVX2) where it applies, torch's convolution (oneDNN) elsewhere.
// The backward to x is the forward with the kernels rotated, so it takes the Winograd path too; the
// gradients of the weight and bias are torch's (oneDNN's backward-weights convolution).
#include "conv3x3.h"

#include <ATen/Parallel.h>

#include "conv3x3_winograd.h"

namespace mcmri_fast::cpu {
namespace {

void check_args(const char* op, const at::Tensor& x, const at::Tensor& weight, const at::Tensor* bias) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be [B, C, H, W], got ", x.sizes());
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == 3 && weight.size(3) == 3, op,
              ": weight must be [Co, C, 3, 3] with C = ", x.size(1), ", got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type(), op, ": weight must have x's dtype ", x.scalar_type(), ", got ",
              weight.scalar_type());
  if (bias != nullptr) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0) && bias->scalar_type() == x.scalar_type(), op,
                ": bias must be [", weight.size(0), "] of x's dtype, got ", bias->sizes(), " ", bias->scalar_type());
  }
}

#ifdef MCMRI_CPU_AVX2_BUILD
// The Winograd kernel of the instruction set this process runs, nullptr on the baseline one.
const winograd::Kernel* winograd_kernel() {
#ifdef MCMRI_CPU_AVX512_BUILD
  if (use_avx512_kernels()) return &winograd::avx512_kernel;
#endif
  return use_avx2_kernels() ? &winograd::avx2_kernel : nullptr;
}

// y = x ⋆ w (+ bias) by the Winograd kernel; rotated: by the kernels of the backward to x instead.
at::Tensor winograd_conv(const at::Tensor& x, const at::Tensor& weight, bool rotated, const at::Tensor* bias) {
  const winograd::Kernel& kernel = *winograd_kernel();
  const auto x_c = x.contiguous();
  const auto w_c = weight.contiguous();
  const int64_t B = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Cout = rotated ? weight.size(1) : weight.size(0);
  const int64_t packs = Cout / winograd::kOutputsPerPack;
  auto U = at::empty({packs, 36, Cin, winograd::kOutputsPerPack}, x.options());
  at::parallel_for(0, packs, 1, [&](int64_t begin, int64_t end) {
    winograd::pack_weights(w_c.const_data_ptr<float>(), weight.size(0), weight.size(1), rotated,
                           U.mutable_data_ptr<float>(), begin, end);
  });
  auto y = at::empty({B, Cout, H, W}, x.options());
  const std::optional<at::Tensor> bias_c = bias == nullptr ? std::nullopt : std::optional(bias->contiguous());
  const winograd::Problem problem{B,
                                  Cin,
                                  Cout,
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
  // Below 8 input channels or 8 pixels a side the transforms outweigh the saved multiply-adds.
  return winograd_kernel() != nullptr && x.scalar_type() == at::kFloat &&
         outputs % winograd::kOutputsPerPack == 0 && x.size(1) >= 8 && x.size(2) >= 8 && x.size(3) >= 8;
#else
  (void)x, (void)outputs;
  return false;
#endif
}

}  // namespace

bool conv3x3_winograd_applies(const at::Tensor& x, const at::Tensor& weight) {
  return winograd_applies(x, weight.size(0));
}

at::Tensor conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_args("conv3x3_fwd", x, weight, bias ? &*bias : nullptr);
#ifdef MCMRI_CPU_AVX2_BUILD
  if (winograd_applies(x, weight.size(0))) return winograd_conv(x, weight, false, bias ? &*bias : nullptr);
#endif
  return at::conv2d(x, weight, bias, 1, 1).contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                           const at::Tensor& weight, bool need_x, bool need_weight,
                                                           bool need_bias) {
  check_args("conv3x3_bwd", x, weight, nullptr);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == x.size(0) && grad.size(1) == weight.size(0) &&
                  grad.size(2) == x.size(2) && grad.size(3) == x.size(3) && grad.scalar_type() == x.scalar_type(),
              "conv3x3_bwd: grad must be [B, Co, H, W] of x's dtype, got ", grad.sizes(), " ", grad.scalar_type());
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

}  // namespace mcmri_fast::cpu
