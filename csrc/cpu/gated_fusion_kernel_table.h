// The table of the gated fusion's CPU row kernels (gated_fusion_kernels.h) of one instruction set.
// Free of ATen headers: avx2_kernels.cpp, compiled for AVX2, fills one; gated_fusion.cpp, compiled for
// the baseline, fills the other and picks between them at run time (see cpu_isa.h).
#pragma once
#include <cstdint>

namespace mcmri_fast::cpu {

// Both kernels run rows r = (b, c) in [begin, end) of a, b, out (and grad) viewed as [B·C, N], gate as
// [B, 2C, N]; `clean` is whether non-finite values are replaced (by `fill` in the forward).
template <typename scalar_t>
struct GatedFusionKernels {
  void (*forward_rows)(int64_t C, int64_t N, const scalar_t* a, const scalar_t* b, const scalar_t* gate,
                       scalar_t* out, bool clean, double fill, int64_t begin, int64_t end);
  void (*backward_rows)(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* a, const scalar_t* b,
                        const scalar_t* gate, scalar_t* grad_a, scalar_t* grad_b, scalar_t* grad_gate, bool clean,
                        int64_t begin, int64_t end);
};

// The AVX2 build (avx2_kernels.cpp); only call it where use_avx2_kernels().
template <typename scalar_t>
const GatedFusionKernels<scalar_t>& gated_fusion_kernels_avx2();

}  // namespace mcmri_fast::cpu

// Fills a GatedFusionKernels<scalar_t> with the functions of namespace `isa` (in an including .cpp file).
#define MCMRI_FAST_GATED_FUSION_KERNEL_TABLE(isa, scalar_t)                               \
  ::mcmri_fast::cpu::GatedFusionKernels<scalar_t> {                                       \
    &isa::gated_fusion_forward_rows<scalar_t>, &isa::gated_fusion_backward_rows<scalar_t> \
  }
