// Launchers of the CUDA kernels of the data-consistency spectral blend (csrc/cuda/data_consistency.cu).
// Plain C++ with raw pointers, so that the .cu file compiles without the torch headers; the torch
// binding (data_consistency_binding.cpp) checks the tensors and calls these.
//
// Complex data are float2 / double2 (interleaved re, im: the layout of c10::complex<float/double>,
// which are aligned to 8 / 16 bytes like float2 / double2). spec, grad, phase_h and phase_w are
// contiguous; src, mask, weight and grad_src are indexed through the strides of DcBlendShape (in
// elements, complex elements for complex arrays; 0 is allowed for the inputs: broadcast by expand).
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace mcmri_fast::cuda {

// Sizes and strides of one blend, as check_blend_args returns them (see csrc/data_consistency_args.h).
struct DcBlendShape {
  int64_t B, C, H, W;           // spec / grad [B, C, H, W] complex, contiguous
  int64_t shift_h, shift_w;     // in [0, H) and [0, W)
  int64_t src_stride[4];        // src [B, C, H, W] complex, any strides (0 included)
  int64_t mask_stride[3];       // mask uint8 [B, H, W], any strides (0 included)
  int64_t weight_stride;        // weight real [C], any stride (0: one weight for all channels)
  int64_t grad_src_stride[4];   // grad_src [B, C, H, W] complex (non-overlapping); unused without grad_src
};

// spec[b,c,i,j] <- k + w[c] (phase_h[i] phase_w[j] src[b,c,si,sj] - k) where mask[b,si,sj] != 0,
// k = spec[b,c,i,j], si = (i + shift_h) mod H, sj = (j + shift_w) mod W. In place on spec.
// Returns the launch error (cudaGetLastError), cudaSuccess when there is nothing to do.
cudaError_t launch_data_consistency_fwd(const DcBlendShape& s, float2* spec, const float2* src, const uint8_t* mask,
                                        const float* weight, const float2* phase_h, const float2* phase_w,
                                        cudaStream_t stream);
cudaError_t launch_data_consistency_fwd(const DcBlendShape& s, double2* spec, const double2* src,
                                        const uint8_t* mask, const double* weight, const double2* phase_h,
                                        const double2* phase_w, cudaStream_t stream);

// Backward of the blend, in place on grad: grad <- (1 - w m) grad. Optional outputs (nullptr: skipped):
//   grad_src [B, C, H, W] (its own strides, grad_src_stride; must not overlap itself):
//     grad_src[b,c,si,sj] = conj(phi) w m g, 0 where m == 0 (every element written);
//   grad_weight_rows [B, C, H]: per row (b,c,i), the sum over j of m Re(conj(g) (phi src[..si,sj] - spec)),
//   which needs spec (the forward's input, [B, C, H, W]); pass spec == nullptr iff grad_weight_rows == nullptr.
// g is grad before the update, phi = phase_h[i] phase_w[j]. Deterministic (no atomics).
cudaError_t launch_data_consistency_bwd(const DcBlendShape& s, float2* grad, const float2* src, const uint8_t* mask,
                                        const float* weight, const float2* phase_h, const float2* phase_w,
                                        const float2* spec, float2* grad_src, float* grad_weight_rows,
                                        cudaStream_t stream);
cudaError_t launch_data_consistency_bwd(const DcBlendShape& s, double2* grad, const double2* src,
                                        const uint8_t* mask, const double* weight, const double2* phase_h,
                                        const double2* phase_w, const double2* spec, double2* grad_src,
                                        double* grad_weight_rows, cudaStream_t stream);

}  // namespace mcmri_fast::cuda
