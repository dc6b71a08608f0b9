// The table of PReLU's CPU row kernels (prelu_kernels.h) of one instruction set. Free of ATen headers
// but the opmath type: avx2_kernels.cpp, compiled for AVX2, fills one; prelu.cpp, compiled for the
// baseline, fills the other and picks between them at run time (see cpu_isa.h).
#pragma once
#include <ATen/OpMathType.h>

#include <cstdint>

namespace mcmri_fast::cpu {

// Both kernels run rows r = (b, c) in [begin, end) of x, out, grad, grad_x viewed as [B·C, N]; the
// slope of a row is weight[0] when `shared`, else weight[c]. weight_rows holds one sum per row.
template <typename scalar_t>
struct PreluKernels {
  void (*forward_rows)(int64_t C, int64_t N, const scalar_t* x, const scalar_t* weight, bool shared, scalar_t* out,
                       int64_t begin, int64_t end);
  void (*backward_rows)(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* x, const scalar_t* weight,
                        bool shared, scalar_t* grad_x, at::opmath_type<scalar_t>* weight_rows, int64_t begin,
                        int64_t end);
};

// The AVX2 build (avx2_kernels.cpp); only call it where use_avx2_kernels().
template <typename scalar_t>
const PreluKernels<scalar_t>& prelu_kernels_avx2();

}  // namespace mcmri_fast::cpu

// Fills a PreluKernels<scalar_t> with the functions of namespace `isa` (in an including .cpp file).
#define MCMRI_FAST_PRELU_KERNEL_TABLE(isa, scalar_t) \
  ::mcmri_fast::cpu::PreluKernels<scalar_t> { &isa::prelu_forward_rows<scalar_t>, &isa::prelu_backward_rows<scalar_t> }
