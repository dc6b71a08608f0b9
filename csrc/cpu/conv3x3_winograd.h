// The AVX-512 Winograd F(4×4, 3×3) kernel of the dense 3×3 convolution (conv3x3_winograd.cpp). Free of
// ATen headers: that file is compiled for AVX-512 and must not instantiate ATen's inline code.
#pragma once
#include <cstdint>

#include "cpu_isa.h"

namespace mcmri_fast::cpu::winograd {

// Output channels per weight pack: Cout must be a multiple of it.
constexpr int64_t kOutputsPerPack = 8;

// The weights transformed, U = G·w·Gᵀ per (o, i), packed [Cout / 8, 36, Cin, 8] (36 = the 6×6 points
// of a tile, 8 = outputs of a pack), float32.
struct Problem {
  int64_t B, Cin, Cout, H, W;
  const float* x;     // [B, Cin, H, W], contiguous
  const float* U;     // packed as above
  const float* bias;  // [Cout] or nullptr
  float* y;           // [B, Cout, H, W], contiguous
};

#ifdef MCMRI_CPU_AVX512_BUILD
// Writes packs [pack_begin, pack_end) of U from the 3×3 kernels w [Cout_w, Cin_w, 3, 3] (contiguous):
// the convolution's own (outputs = Cout_w) or, rotated, those of its backward to x (the kernels turned
// by 180° with inputs and outputs swapped: outputs = Cin_w).
void pack_weights(const float* w, int64_t Cout_w, int64_t Cin_w, bool rotated, float* U, int64_t pack_begin,
                  int64_t pack_end);
// The work items the parallel loop splits: (sample, block of tiles) pairs.
int64_t work_items(const Problem& p);
// Computes y for work items [begin, end); thread-safe across disjoint ranges.
void forward(const Problem& p, int64_t begin, int64_t end);
#endif

}  // namespace mcmri_fast::cpu::winograd
