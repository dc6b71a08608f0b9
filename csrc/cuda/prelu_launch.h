// Launchers of the CUDA kernels of PReLU (csrc/cuda/prelu.cu). Plain C++ with raw pointers, so that the
// .cu file compiles without the torch headers; the torch binding (prelu_binding.cpp) checks the
// tensors, makes them contiguous and calls these.
//
// x, out, grad, grad_x [B, C, N] are contiguous, N the product of the spatial sizes; weight holds one
// slope (shared) or C. __half / __nv_bfloat16 have the layout of c10::Half / c10::BFloat16; they are
// computed in float, float64 in double.
#pragma once
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

namespace mcmri_fast::cuda {

struct PreluShape {
  int64_t B, C, N;
  bool shared;
};

// The number of chunks a row is split into by the backward: its weight partials are [B·C, chunks].
int64_t prelu_weight_chunks(int64_t N);

// out = x > 0 ? x : w x. Returns the launch error (cudaGetLastError), cudaSuccess when there is nothing to do.
#define MCMRI_PRELU_FWD(T) \
  cudaError_t launch_prelu_fwd(const PreluShape& s, const T* x, const T* weight, T* out, cudaStream_t stream)
MCMRI_PRELU_FWD(float);
MCMRI_PRELU_FWD(double);
MCMRI_PRELU_FWD(__half);
MCMRI_PRELU_FWD(__nv_bfloat16);

// grad_x = x > 0 ? grad : w grad (skipped when grad_x is null) and, when weight_partials is not null,
// per row r and chunk k of prelu_weight_chunks(N) elements the sum of x grad where x <= 0, into
// weight_partials[r * chunks + k] (float; double for double).
#define MCMRI_PRELU_BWD(T, Acc)                                                                                \
  cudaError_t launch_prelu_bwd(const PreluShape& s, const T* grad, const T* x, const T* weight, T* grad_x,     \
                               Acc* weight_partials, cudaStream_t stream)
MCMRI_PRELU_BWD(float, float);
MCMRI_PRELU_BWD(double, double);
MCMRI_PRELU_BWD(__half, float);
MCMRI_PRELU_BWD(__nv_bfloat16, float);

}  // namespace mcmri_fast::cuda
