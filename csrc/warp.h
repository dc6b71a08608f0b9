// The contract of the warp's C++ ops (the public op and its autograd: mcmri_fast/ops/warp.py): schemas,
// the checks every backend runs (csrc/cpu/warp.cpp, csrc/cuda/warp.cu; the Triton twins in kernels/warp.py
// are only called by the op, which has checked its arguments), and the per-pixel arithmetic both C++
// backends share (host and device functions).
//
// out[b, c, i, j] = bilinear sample of image[b, c] at (x, y) = (j + flow[b, 0, i, j], i + flow[b, 1, i, j])
// in pixels, after the padding mode's transform of the coordinates: F.grid_sample's bilinear mode on the
// grid built from the flow (mcmri_fast/reference/warp.py), its formulas (ATen's GridSampler.h) written
// here in pixel units.
#pragma once
#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cmath>

#include "op_schemas.h"

namespace mcmri_fast {

MCMRI_FAST_OP_SCHEMAS(warp) {
  // image [B, C, H, W] and flow [B, 2, H, W] (channel 0 the displacement along W, 1 along H, in pixels)
  // float32 or float64, contiguous, one dtype; padding 0 zeros, 1 border, 2 reflection. Returns
  // out [B, C, H, W], contiguous.
  m.def("warp_fwd(Tensor image, Tensor flow, int padding, bool align_corners) -> Tensor");
  // Its backward: (grad_image [B, C, H, W], grad_flow [B, 2, H, W]) of grad [B, C, H, W] (contiguous,
  // image's dtype), contiguous; an empty tensor for each one not asked for.
  m.def("warp_bwd(Tensor grad, Tensor image, Tensor flow, int padding, bool align_corners, bool need_image, "
        "bool need_flow) -> (Tensor, Tensor)");
}

enum WarpPadding : int64_t { kWarpZeros = 0, kWarpBorder = 1, kWarpReflection = 2 };

struct WarpSizes {
  int64_t B, C, H, W;
  int64_t padding;
  bool align_corners;
};

inline WarpSizes check_warp_args(const char* op, const at::Tensor& image, const at::Tensor& flow, int64_t padding,
                                 bool align_corners, const at::Tensor* grad = nullptr) {
  TORCH_CHECK(image.dim() == 4, op, ": image must be [B, C, H, W], got ", image.sizes());
  const auto dtype = image.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op, ": image must be float32 or float64, got ", dtype);
  const int64_t B = image.size(0), C = image.size(1), H = image.size(2), W = image.size(3);
  TORCH_CHECK(flow.dim() == 4 && flow.size(0) == B && flow.size(1) == 2 && flow.size(2) == H && flow.size(3) == W &&
                  flow.scalar_type() == dtype,
              op, ": flow must be [B, 2, H, W] = [", B, ", 2, ", H, ", ", W, "] of image's dtype, got ", flow.sizes(),
              " ", flow.scalar_type());
  TORCH_CHECK(padding == kWarpZeros || padding == kWarpBorder || padding == kWarpReflection, op,
              ": padding must be 0 (zeros), 1 (border) or 2 (reflection), got ", padding);
  TORCH_CHECK(image.is_contiguous() && flow.is_contiguous(), op, ": image and flow must be contiguous");
  if (grad != nullptr) {
    TORCH_CHECK(grad->sizes() == image.sizes() && grad->scalar_type() == dtype && grad->is_contiguous(), op,
                ": grad must be a contiguous tensor like image (", image.sizes(), " ", dtype, "), got ", grad->sizes(),
                " ", grad->scalar_type());
    TORCH_CHECK(grad->device() == image.device(), op, ": all tensors must be on ", image.device(), ", got ",
                grad->device());
  }
  TORCH_CHECK(flow.device() == image.device(), op, ": all tensors must be on ", image.device(), ", got ", flow.device());
  return {B, C, H, W, padding, align_corners};
}

// --- The per-pixel arithmetic (ATen's GridSampler.h in pixel units) ----------------------------------
// csrc/cpu/warp.cpp's AVX2 build compiles these functions for AVX2 (csrc/cpu/isa_builds.h): that copy
// lives in a namespace of its own, so that the baseline build's calls never link to it.
#ifdef MCMRI_CPU_AVX2_PASS
inline namespace avx2 {
#endif

// The clipped coordinate in [0, size - 1] and its derivative (0 where clipped: ATen's convention).
template <typename T>
C10_HOST_DEVICE inline T warp_clip(T in, int64_t size, T* grad) {
  const T top = static_cast<T>(size - 1);
  if (in <= T(0)) {
    *grad = T(0);
    return T(0);
  }
  if (in >= top) {
    *grad = T(0);
    return top;
  }
  *grad = T(1);
  return in;
}

// The coordinate reflected into [twice_low / 2, twice_high / 2] and its derivative (±1).
template <typename T>
C10_HOST_DEVICE inline T warp_reflect(T in, int64_t twice_low, int64_t twice_high, T* grad) {
  if (twice_low == twice_high) {
    *grad = T(0);
    return T(0);
  }
  const T low = static_cast<T>(twice_low) / 2, span = static_cast<T>(twice_high - twice_low) / 2;
  in -= low;
  T sign = T(1);
  if (in < T(0)) {
    sign = T(-1);
    in = -in;
  }
  const T extra = ::fmod(in, span);
  const int64_t flips = static_cast<int64_t>(::floor(in / span));
  if (flips % 2 == 0) {
    *grad = sign;
    return extra + low;
  }
  *grad = -sign;
  return span - extra + low;
}

// The coordinate after the padding mode's transform, and its derivative with respect to the input.
// Zeros padding keeps the coordinate (corners outside the image read 0); it is clamped to [-2, size + 1]
// first, which changes nothing (a sample there reads only zeros, with zero gradient) and keeps floor()
// inside the integer range for displacements of any size.
template <typename T>
C10_HOST_DEVICE inline T warp_coordinate(T in, int64_t size, int64_t padding, bool align_corners, T* grad) {
  // Strictly inside (0, size − 1) every mode is the identity with derivative 1: the common case of small
  // fields, without the reflection's fmod.
  if (in > T(0) && in < static_cast<T>(size - 1)) {
    *grad = T(1);
    return in;
  }
  if (padding == kWarpZeros) {
    *grad = T(1);
    if (in < T(-2)) return T(-2);
    if (in > static_cast<T>(size + 1)) return static_cast<T>(size + 1);
    return in;
  }
  T reflect_grad = T(1);
  if (padding == kWarpReflection) {
    in = align_corners ? warp_reflect(in, 0, 2 * (size - 1), &reflect_grad)
                       : warp_reflect(in, -1, 2 * size - 1, &reflect_grad);
  }
  T clip_grad;
  const T out = warp_clip(in, size, &clip_grad);
  *grad = reflect_grad * clip_grad;
  return out;
}

// One output pixel's bilinear footprint: the offsets of its four corners (x0, y0), (x0 + 1, y0),
// (x0, y0 + 1), (x0 + 1, y0 + 1) in an H × W plane (0 for a corner outside it), whether each lies
// inside (1 or 0), the fractional position (fx, fy) inside the cell, and the padding's derivatives.
template <typename T>
struct WarpFootprint {
  int64_t offset[4];
  T inside[4];
  T fx, fy;
  T grad_x, grad_y;  // d(transformed coordinate) / d(flow)

  // The weight of corner k: (1 − fx or fx)(1 − fy or fy), 0 outside the image.
  C10_HOST_DEVICE inline T weight(int k) const {
    const T wx = (k & 1) ? fx : T(1) - fx, wy = (k & 2) ? fy : T(1) - fy;
    return inside[k] * wx * wy;
  }
};

template <typename T>
C10_HOST_DEVICE inline WarpFootprint<T> warp_footprint(const WarpSizes& s, int64_t i, int64_t j, T flow_x, T flow_y) {
  WarpFootprint<T> f;
  const T x = warp_coordinate(static_cast<T>(j) + flow_x, s.W, s.padding, s.align_corners, &f.grad_x);
  const T y = warp_coordinate(static_cast<T>(i) + flow_y, s.H, s.padding, s.align_corners, &f.grad_y);
  // floor by truncation (x, y lie in [-2, size + 1], see warp_coordinate): the x86-64 baseline has no
  // floor instruction, and the library call was most of a pixel's cost
  int64_t x0 = static_cast<int64_t>(x), y0 = static_cast<int64_t>(y);
  x0 -= static_cast<T>(x0) > x;
  y0 -= static_cast<T>(y0) > y;
  f.fx = x - static_cast<T>(x0);
  f.fy = y - static_cast<T>(y0);
  if (0 <= x0 && x0 < s.W - 1 && 0 <= y0 && y0 < s.H - 1) {  // the common case: the whole cell inside
    const int64_t o = y0 * s.W + x0;
    f.offset[0] = o;
    f.offset[1] = o + 1;
    f.offset[2] = o + s.W;
    f.offset[3] = o + s.W + 1;
    f.inside[0] = f.inside[1] = f.inside[2] = f.inside[3] = T(1);
    return f;
  }
  for (int k = 0; k < 4; ++k) {
    const int64_t xk = x0 + (k & 1), yk = y0 + ((k >> 1) & 1);
    const bool in = 0 <= xk && xk < s.W && 0 <= yk && yk < s.H;
    f.inside[k] = in ? T(1) : T(0);
    f.offset[k] = in ? yk * s.W + xk : 0;
  }
  return f;
}

#ifdef MCMRI_CPU_AVX2_PASS
}  // namespace avx2
#endif

}  // namespace mcmri_fast
