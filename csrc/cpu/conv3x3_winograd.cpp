// Dense 3×3 convolution (zero padding 1, stride 1) by Winograd's minimal filtering F(4×4, 3×3) [Lavin &
// Gray 2016]: the part every instruction set shares. Each 4×4 output tile is Aᵀ[Σ_i U_i ⊙ (Bᵀ d_i B)]A,
// d_i the 6×6 input patch of channel i and U_i = G w_i Gᵀ the transformed 3×3 kernel: 36 products per
// tile and channel pair for 16 outputs, where the direct convolution takes 144, so 4× fewer
// multiply-adds, the rest being transforms. The tiles are taken in groups of consecutive tiles of one
// tile row, a vector lane per tile, and the groups in blocks (the Kernel of each instruction set says
// how many). Per block: transform every input channel into V[36][Cin][TB]; then for each pack of 8
// outputs, 36 matrix products [8 × Cin]·[Cin × TB] and the output transform. The stride-4 patches are
// split into vector lanes with permutes and the outputs interleaved back the same way: gathers and
// scatters, tried first, were much slower (BENCHMARKS.md, "Winograd 3×3 convolutions").
// Rounding: the transforms' coefficients (up to 8) make it ~20× the direct convolution's error, ~1e-5
// of the output's largest value at Cin = 64 (tests/test_conv3x3.py).
// This file is compiled for the baseline instruction set: the time goes in the vector code it calls
// through the Kernel's pointers (once per group and channel, or per pack).
#include "conv3x3_winograd.h"

#ifdef MCMRI_CPU_AVX2_BUILD
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>

namespace mcmri_fast::cpu::winograd {
namespace {
constexpr int CO = int(kOutputsPerPack);

struct Tiling {
  int64_t groups_per_row, groups_per_sample, blocks_per_sample;
};

Tiling tiling(const Problem& p, const Kernel& kernel) {
  const int64_t tile_rows = (p.H + 3) / 4, tile_cols = (p.W + 3) / 4;
  const int64_t groups_per_row = (tile_cols + kernel.lanes - 1) / kernel.lanes;
  const int64_t groups = tile_rows * groups_per_row;
  return {groups_per_row, groups, (groups + kernel.groups - 1) / kernel.groups};
}

Group group(const Tiling& t, const Kernel& kernel, int64_t index) {
  return {index / t.groups_per_row, 4 * kernel.lanes * (index % t.groups_per_row)};
}

}  // namespace

void pack_weights(const float* w, int64_t Cout_w, int64_t Cin_w, bool rotated, float* U, int64_t pack_begin,
                  int64_t pack_end) {
  // G of F(4×4, 3×3); each U = G·w·Gᵀ is formed in double and rounded once
  static constexpr double G[6][3] = {{1. / 4, 0, 0},           {-1. / 6, -1. / 6, -1. / 6}, {-1. / 6, 1. / 6, -1. / 6},
                                     {1. / 24, 1. / 12, 1. / 6}, {1. / 24, -1. / 12, 1. / 6}, {0, 0, 1}};
  const int64_t inputs = rotated ? Cout_w : Cin_w, outputs = rotated ? Cin_w : Cout_w;
  for (int64_t pack = pack_begin; pack < pack_end; ++pack) {
    for (int64_t ci = 0; ci < inputs; ++ci) {
      for (int r = 0; r < CO; ++r) {
        const int64_t co = pack * CO + r;
        double tap[3][3], half[6][3];
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b)
            tap[a][b] = co >= outputs ? 0.0
                        : rotated     ? w[((ci * Cin_w + co) * 3 + 2 - a) * 3 + 2 - b]
                                      : w[((co * Cin_w + ci) * 3 + a) * 3 + b];
        for (int i = 0; i < 6; ++i)
          for (int b = 0; b < 3; ++b) half[i][b] = G[i][0] * tap[0][b] + G[i][1] * tap[1][b] + G[i][2] * tap[2][b];
        for (int i = 0; i < 6; ++i)
          for (int j = 0; j < 6; ++j)
            U[((pack * 36 + i * 6 + j) * inputs + ci) * CO + r] =
                float(half[i][0] * G[j][0] + half[i][1] * G[j][1] + half[i][2] * G[j][2]);
      }
    }
  }
}

int64_t work_items(const Problem& p, const Kernel& kernel) { return p.B * tiling(p, kernel).blocks_per_sample; }

void forward(const Problem& p, const Kernel& kernel, int64_t begin, int64_t end) {
  const Tiling t = tiling(p, kernel);
  const int64_t TB = int64_t(kernel.lanes) * kernel.groups;
  struct Free {
    void operator()(float* f) const { std::free(f); }
  };
  const std::unique_ptr<float, Free> V(static_cast<float*>(std::aligned_alloc(64, sizeof(float) * 36 * p.Cin * TB)));
  const std::unique_ptr<float, Free> M(static_cast<float*>(std::aligned_alloc(64, sizeof(float) * 36 * CO * TB)));
  // Where the last pack's channels past the outputs are written, and thrown away.
  const std::unique_ptr<float[]> discard(p.Cout > p.outputs ? new float[p.H * p.W] : nullptr);
  if (V == nullptr || M == nullptr) throw std::bad_alloc();
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / t.blocks_per_sample, first_group = (item % t.blocks_per_sample) * kernel.groups;
    // The last block may end past the sample's last group: the lanes of the missing groups are
    // computed from zeros and never stored.
    const int groups = int(std::min<int64_t>(kernel.groups, t.groups_per_sample - first_group));
    for (int64_t row = 0; groups < kernel.groups && row < 36 * p.Cin; ++row) {
      std::fill(V.get() + row * TB + groups * kernel.lanes, V.get() + (row + 1) * TB, 0.f);
    }
    for (int64_t ci = 0; ci < p.Cin; ++ci) {
      const float* plane = p.x + (b * p.Cin + ci) * p.H * p.W;
      for (int k = 0; k < groups; ++k) {
        kernel.input_transform(plane, p.H, p.W, group(t, kernel, first_group + k), V.get() + ci * TB + k * kernel.lanes,
                               p.Cin * TB);
      }
    }
    for (int64_t pack = 0; pack < p.Cout / CO; ++pack) {
      kernel.products(V.get(), p.U + pack * 36 * p.Cin * CO, p.Cin, M.get());
      float* planes[CO];
      float pack_bias[CO];
      for (int r = 0; r < CO; ++r) {
        const int64_t o = pack * CO + r;
        planes[r] = o < p.outputs ? p.y + (b * p.outputs + o) * p.H * p.W : discard.get();
        pack_bias[r] = p.bias != nullptr && o < p.outputs ? p.bias[o] : 0.f;
      }
      const float* bias = p.bias == nullptr ? nullptr : pack_bias;
      for (int k = 0; k < groups; ++k) {
        kernel.output_transform(M.get() + k * kernel.lanes, planes, bias, p.H, p.W, group(t, kernel, first_group + k));
      }
    }
  }
}

}  // namespace mcmri_fast::cpu::winograd

#endif  // MCMRI_CPU_AVX2_BUILD
