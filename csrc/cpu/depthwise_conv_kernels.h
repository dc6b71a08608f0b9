// Plane kernels of the depthwise 3×3 convolution (see mcmri_fast/ops/depthwise_conv.py), written once on
// at::vec::Vectorized along x and compiled twice (the scheme of cpu_isa.h): depthwise_conv.cpp builds
// them for the baseline and avx2_kernels.cpp for AVX2 + FMA + F16C; depthwise_conv.cpp picks one at run
// time.
//
// Every input row is copied once into a padded row buffer in the compute type: one zero column on each
// side and a zero tail of one vector. The three taps along x of any output vector are then plain vector
// loads at columns x, x + 1, x + 2 of the padded rows above, at and below, the rows outside the map are
// a zero row, and the loops have no border cases (the last vector of a row only stores fewer lanes).
// Three such rows per operand, reused in a ring, stay in L1 while a plane streams through.
//
// The including file defines MCMRI_CPU_ISA (the namespace of this build), and for AVX2 also
// CPU_CAPABILITY=AVX2 and CPU_CAPABILITY_AVX2 before any ATen header (see avx2_kernels.cpp).
#pragma once
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "depthwise_conv_kernel_table.h"

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

using at::vec::Vectorized;

// A ring of three padded rows of one [H, W] plane, in the compute type, and a zero row for the rows
// outside the plane: row(y) is padded row y of the plane, loaded by load(y) first.
template <typename compute_t>
class PaddedRowRing {
 public:
  explicit PaddedRowRing(int64_t W)
      : width_(W), stride_(W + 2 + Vectorized<compute_t>::size()), storage_(4 * stride_, compute_t(0)) {}

  template <typename scalar_t>
  void load(const scalar_t* plane, int64_t y) {
    compute_t* dst = slot(y) + 1;
    const scalar_t* src = plane + y * width_;
    prefetch(src, kPrefetchRows * width_ * sizeof(scalar_t), width_ * sizeof(scalar_t));
    if constexpr (std::is_same_v<scalar_t, compute_t>) {
      std::memcpy(dst, src, width_ * sizeof(compute_t));
    } else {
      at::vec::convert(src, dst, width_);
    }
  }

  // Padded row y, or the zero row for y outside [0, H).
  const compute_t* row(int64_t y, int64_t H) const {
    return y < 0 || y >= H ? storage_.data() + 3 * stride_ : storage_.data() + (y % 3) * stride_;
  }

 private:
  // The rows are read a few at a time between stretches of arithmetic: asking for the cache lines of
  // the row kPrefetchRows ahead keeps the memory busy meanwhile. The backward, which streams two
  // operands, gains the most (1x128x240², one thread: 9.0 ms without, 4.7 ms with). Prefetches past
  // the end of the data do not fault; the address is formed as an integer, not as a pointer past it.
  static constexpr int64_t kPrefetchRows = 4;
  static void prefetch(const void* row, int64_t ahead_bytes, int64_t bytes) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(row) + static_cast<uintptr_t>(ahead_bytes);
    for (int64_t offset = 0; offset < bytes; offset += 64) {
      __builtin_prefetch(reinterpret_cast<const void*>(begin + static_cast<uintptr_t>(offset)));
    }
  }

  compute_t* slot(int64_t y) { return storage_.data() + (y % 3) * stride_; }

  int64_t width_, stride_;
  std::vector<compute_t> storage_;
};

// One output row: out[x] = bias + Σ_{i,j} taps[3i + j] rows[i][x + j] (rows padded, see above), for
// x in [0, W). Writes the compute type.
template <typename compute_t>
inline void stencil_row(const compute_t* const (&rows)[3], const compute_t* taps, compute_t bias, int64_t W,
                        compute_t* out) {
  using Vec = Vectorized<compute_t>;
  constexpr int64_t kLanes = Vec::size();
  Vec tap[9];
  for (int k = 0; k < 9; ++k) tap[k] = Vec(taps[k]);
  const Vec vbias(bias);
  const auto at = [&](int64_t x) {
    Vec acc = vbias;
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) acc = at::vec::fmadd(tap[3 * i + j], Vec::loadu(rows[i] + x + j), acc);
    }
    return acc;
  };
  int64_t x = 0;
  for (; x + kLanes <= W; x += kLanes) at(x).store(out + x);
  if (x < W) at(x).store(out + x, W - x);
}

// Writes a row computed in the compute type to the output: directly, or through `scratch` (one row of
// the compute type) when the output is float16 / bfloat16.
template <typename scalar_t, typename compute_t, typename Compute>
inline void write_row(scalar_t* out, int64_t W, compute_t* scratch, const Compute& compute) {
  if constexpr (std::is_same_v<scalar_t, compute_t>) {
    compute(out);
  } else {
    compute(scratch);
    at::vec::convert(scratch, out, W);
  }
}

// Planes p = (b, c) in [begin, end) of out = bias[c] + the stencil of taps[c] over x (see
// DepthwiseConvKernels).
template <typename scalar_t>
void depthwise_conv3x3_forward_planes(int64_t C, int64_t H, int64_t W, const scalar_t* x,
                                      const depthwise_compute_t<scalar_t>* taps,
                                      const depthwise_compute_t<scalar_t>* bias, scalar_t* out, int64_t begin,
                                      int64_t end) {
  using compute_t = depthwise_compute_t<scalar_t>;
  PaddedRowRing<compute_t> ring(W);
  std::vector<compute_t> scratch(std::is_same_v<scalar_t, compute_t> ? 0 : static_cast<size_t>(std::max<int64_t>(W, 0)));
  const int64_t plane_size = H * W;
  for (int64_t p = begin; p < end; ++p) {
    const int64_t c = p % C;
    const scalar_t* plane = x + p * plane_size;
    const compute_t* tap = taps + 9 * c;
    const compute_t plane_bias = bias == nullptr ? compute_t(0) : bias[c];
    for (int64_t y = 0; y < std::min<int64_t>(2, H); ++y) ring.load(plane, y);
    for (int64_t y = 0; y < H; ++y) {
      const compute_t* const rows[3] = {ring.row(y - 1, H), ring.row(y, H), ring.row(y + 1, H)};
      write_row(out + p * plane_size + y * W, W, scratch.data(),
                [&](compute_t* dst) { stencil_row(rows, tap, plane_bias, W, dst); });
      // Row y - 1 is done with: its slot takes row y + 2.
      if (y + 2 < H) ring.load(plane, y + 2);
    }
  }
}

// Σ of the lanes of v, in lane order, in double.
template <typename compute_t>
inline double lane_sum(const Vectorized<compute_t>& v) {
  compute_t lanes[Vectorized<compute_t>::size()];
  v.store(lanes);
  double sum = 0;
  for (const compute_t lane : lanes) sum += lane;
  return sum;
}

// Channels [begin, end) of the backward in one pass over grad and x (see DepthwiseConvKernels). The tap
// sums are vector accumulators over one plane, reduced into double per plane and summed over the batch
// in order: no atomics, the same result whatever the threads.
template <typename scalar_t>
void depthwise_conv3x3_backward_channels(int64_t B, int64_t C, int64_t H, int64_t W, const scalar_t* grad,
                                         const scalar_t* x, const depthwise_compute_t<scalar_t>* rotated_taps,
                                         scalar_t* grad_x, double* sums, int64_t begin, int64_t end) {
  using compute_t = depthwise_compute_t<scalar_t>;
  using Vec = Vectorized<compute_t>;
  constexpr int64_t kLanes = Vec::size();
  PaddedRowRing<compute_t> grad_ring(W), x_ring(W);
  std::vector<compute_t> scratch(std::is_same_v<scalar_t, compute_t> ? 0 : static_cast<size_t>(std::max<int64_t>(W, 0)));
  const int64_t plane_size = H * W;
  for (int64_t c = begin; c < end; ++c) {
    double* channel_sums = sums + 10 * c;
    std::fill(channel_sums, channel_sums + 10, 0.0);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t offset = (b * C + c) * plane_size;
      const scalar_t* grad_plane = grad + offset;
      const scalar_t* x_plane = x + offset;
      for (int64_t y = 0; y < std::min<int64_t>(2, H); ++y) {
        grad_ring.load(grad_plane, y);
        x_ring.load(x_plane, y);
      }
      // acc[3i + j]: grad · x shifted by (i − 1, j − 1); acc[9]: grad.
      Vec acc[10];
      for (auto& a : acc) a = Vec(0);
      for (int64_t y = 0; y < H; ++y) {
        const compute_t* const grad_rows[3] = {grad_ring.row(y - 1, H), grad_ring.row(y, H), grad_ring.row(y + 1, H)};
        const compute_t* const x_rows[3] = {x_ring.row(y - 1, H), x_ring.row(y, H), x_ring.row(y + 1, H)};
        if (grad_x != nullptr) {
          write_row(grad_x + offset + y * W, W, scratch.data(),
                    [&](compute_t* dst) { stencil_row(grad_rows, rotated_taps + 9 * c, compute_t(0), W, dst); });
        }
        // Full vectors over the zero tail: the lanes past W have grad 0 and add nothing.
        const compute_t* grad_row = grad_rows[1] + 1;
        for (int64_t col = 0; col < W; col += kLanes) {
          const Vec g = Vec::loadu(grad_row + col);
          acc[9] = acc[9] + g;
          for (int i = 0; i < 3; ++i) {
            for (int j = 0; j < 3; ++j) acc[3 * i + j] = at::vec::fmadd(g, Vec::loadu(x_rows[i] + col + j), acc[3 * i + j]);
          }
        }
        if (y + 2 < H) {
          grad_ring.load(grad_plane, y + 2);
          x_ring.load(x_plane, y + 2);
        }
      }
      for (int k = 0; k < 10; ++k) channel_sums[k] += lane_sum(acc[k]);
    }
  }
}

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA
