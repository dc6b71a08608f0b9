// Launchers of the CUDA kernels of the data-consistency spectral blend (csrc/cuda/data_consistency.cu).
// Plain C++ with raw pointers, so that the .cu file compiles without the torch headers; the torch
// binding (data_consistency_binding.cpp) checks the tensors and calls these.
//
// Complex data are float2 / double2 (interleaved re, im: the layout of c10::complex<float/double>,
// which are aligned to 8 / 16 bytes like float2 / double2). All arrays are contiguous.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

namespace mcmri_fast::cuda {

// Sizes of one blend, as check_blend_args returns them (see csrc/data_consistency_args.h).
struct DcBlendShape {
  int64_t B, C, H, W;        // spec [B, C, H, W] complex
  int64_t src_channels;      // src [B, src_channels, H, W], src_channels in {1, C}
  int64_t mask_batch;        // mask uint8 [mask_batch, mask_rows, W], mask_batch in {1, B}
  int64_t mask_rows;         // mask_rows in {1, H}
  int64_t weight_channels;   // weight real [weight_channels], in {1, C}
  int64_t shift_h, shift_w;  // in [0, H) and [0, W)
};

// spec[b,c,i,j] <- k + w (phase_h[i] phase_w[j] src[b,c',si,sj] - k) where mask[b',i',sj] != 0,
// k = spec[b,c,i,j], si = (i + shift_h) mod H, sj = (j + shift_w) mod W. In place on spec.
// Returns the launch error (cudaGetLastError), cudaSuccess when there is nothing to do.
cudaError_t launch_data_consistency_fwd(const DcBlendShape& s, float2* spec, const float2* src, const uint8_t* mask,
                                        const float* weight, const float2* phase_h, const float2* phase_w,
                                        cudaStream_t stream);
cudaError_t launch_data_consistency_fwd(const DcBlendShape& s, double2* spec, const double2* src,
                                        const uint8_t* mask, const double* weight, const double2* phase_h,
                                        const double2* phase_w, cudaStream_t stream);

// Backward of the blend, in place on grad: grad <- (1 - w m) grad. Optional outputs (nullptr: skipped):
//   grad_src [B, C, H, W]: grad_src[b,c,si,sj] = conj(phi) w m g, 0 where m == 0 (every element written);
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
