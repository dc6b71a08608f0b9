// The Winograd F(4×4, 3×3) kernels of the dense 3×3 convolution: what every instruction set shares
// (conv3x3_winograd.cpp: the weight transform, the split into blocks of tiles, the loop over a block's
// channels and output packs) and the vector code of each (conv3x3_winograd_avx512.cpp,
// conv3x3_winograd_avx2.cpp). Free of ATen headers: the vector code is compiled for AVX-512 or AVX2 and
// must not instantiate ATen's inline code.
#pragma once
#include <cstdint>

#include "cpu_isa.h"

namespace mcmri_fast::cpu::winograd {

// Output channels per weight pack: the kernel computes whole packs.
constexpr int64_t kOutputsPerPack = 8;

// The weights transformed, U = G·w·Gᵀ per (o, i), packed [Cout / 8, 36, Cin, 8] (36 = the 6×6 points
// of a tile, 8 = outputs of a pack), float32. Cout: the outputs rounded up to a whole pack; the last
// pack's kernels past `outputs` are zero and their results are not stored.
struct Problem {
  int64_t B, Cin, Cout, outputs, H, W;
  const float* x;     // [B, Cin, H, W], contiguous
  const float* U;     // packed as above
  const float* bias;  // [outputs] or nullptr
  float* y;           // [B, outputs, H, W], contiguous
};

// Every kernel needs at least the AVX2 build (the AVX-512 one has the same condition).
#ifdef MCMRI_CPU_AVX2_BUILD
// `lanes` consecutive 4×4 tiles of tile row ty, a vector lane each; the first one's outputs start at
// column x0. Some of the last group's tiles may lie past the right edge.
struct Group {
  int64_t ty, x0;
};

// One instruction set's vector code. A block is `groups` groups, TB = lanes × groups tiles; its
// transformed inputs are V [36, Cin, TB] (36 = the points p = 6i + j of a tile), its products per pack
// M [36, 8, TB].
struct Kernel {
  int lanes, groups;
  // V[p · vstride + t] for the group's tiles t < lanes in one input plane [H, W]
  void (*input_transform)(const float* plane, int64_t H, int64_t W, Group group, float* V, int64_t vstride);
  // M[p][r][:] = Σ_ci U[p][ci][r] · V[p][ci][:] for one pack (U [36, Cin, 8])
  void (*products)(const float* V, const float* U, int64_t Cin, float* M);
  // the group's outputs of the pack's 8 planes [H, W] (+ bias[r] where bias is not null), from
  // M[(p · 8 + r) · TB + t] (M points at the group's first lane)
  void (*output_transform)(const float* M, float* const* planes, const float* bias, int64_t H, int64_t W,
                           Group group);
};

// Each instruction set's kernel, compiled for it: call the getter only in a process that runs it
// (pick_isa_build, cpu_isa.h).
#ifdef MCMRI_CPU_AVX512_BUILD
const Kernel& avx512_kernel();
#endif
const Kernel& avx2_kernel();

// Writes packs [pack_begin, pack_end) of U from the 3×3 kernels w [Cout_w, Cin_w, 3, 3] (contiguous):
// the convolution's own (outputs = Cout_w) or, rotated, those of its backward to x (the kernels turned
// by 180° with inputs and outputs swapped: outputs = Cin_w). Pack entries past the outputs are zero.
void pack_weights(const float* w, int64_t Cout_w, int64_t Cin_w, bool rotated, float* U, int64_t pack_begin,
                  int64_t pack_end);
// The work items the parallel loop splits: (sample, block of tiles) pairs.
int64_t work_items(const Problem& p, const Kernel& kernel);
// Computes y for work items [begin, end); thread-safe across disjoint ranges.
void forward(const Problem& p, const Kernel& kernel, int64_t begin, int64_t end);
#endif

}  // namespace mcmri_fast::cpu::winograd
