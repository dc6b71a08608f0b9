// Launchers of the CUDA kernels of the sigmoid-gated fusion (csrc/cuda/gated_fusion.cu). Plain C++ with
// raw pointers, so that the .cu file compiles without the torch headers; the torch binding
// (gated_fusion_binding.cpp) checks the tensors, makes them contiguous and calls these.
//
// a, b, grad, out, grad_a, grad_b [B, C, N] and gate, grad_gate [B, 2C, N] are contiguous, N the product
// of the spatial sizes. __half / __nv_bfloat16 have the layout of c10::Half / c10::BFloat16; they are
// computed in float. Loads and stores are 16 bytes wide when N and the pointers allow it.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace mcmri_fast::cuda {

struct GatedFusionShape {
  int64_t B, C, N;
};

// out = a σ(gate[:, :C]) + b σ(gate[:, C:]); with has_nonfinite, non-finite values are replaced by
// nonfinite. Returns the launch error (cudaGetLastError), cudaSuccess when there is nothing to do.
#define MCMRI_GATED_FUSION_FWD(T)                                                                                     \
  cudaError_t launch_gated_fusion_fwd(const GatedFusionShape& s, const T* a, const T* b, const T* gate, T* out,      \
                                      bool has_nonfinite, double nonfinite, cudaStream_t stream)
MCMRI_GATED_FUSION_FWD(float);
MCMRI_GATED_FUSION_FWD(double);
MCMRI_GATED_FUSION_FWD(__half);
MCMRI_GATED_FUSION_FWD(__nv_bfloat16);

// (grad_a, grad_b, grad_gate) of the forward; with has_nonfinite the gradient is zero where the forward's
// value before the replacement was not finite (recomputed from a, b and gate).
#define MCMRI_GATED_FUSION_BWD(T)                                                                                     \
  cudaError_t launch_gated_fusion_bwd(const GatedFusionShape& s, const T* grad, const T* a, const T* b,              \
                                      const T* gate, T* grad_a, T* grad_b, T* grad_gate, bool has_nonfinite,         \
                                      cudaStream_t stream)
MCMRI_GATED_FUSION_BWD(float);
MCMRI_GATED_FUSION_BWD(double);
MCMRI_GATED_FUSION_BWD(__half);
MCMRI_GATED_FUSION_BWD(__nv_bfloat16);

}  // namespace mcmri_fast::cuda
