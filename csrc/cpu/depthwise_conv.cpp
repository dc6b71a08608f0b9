// CPU kernels of the depthwise 3×3 convolution (the contract: csrc/depthwise_conv.h): the forward over
// planes (b, c) in parallel; the backward over channels in parallel, the batch inside, one pass over grad
// and x for grad_x and the tap sums together (or, when only grad_x is asked for, the forward with the
// taps rotated by 180°). The plane loops are written once on at::vec::Vectorized along x and built for
// each instruction set (isa_builds.h); float16 / bfloat16 are computed in float32.
//
// Every input row is copied once into a padded row buffer in the compute type: one zero column on each
// side and a zero tail of one vector. The three taps along x of any output vector are then plain vector
// loads at columns x, x + 1, x + 2 of the padded rows above, at and below, the rows outside the map are
// a zero row, and the loops have no border cases (the last vector of a row only stores fewer lanes).
// Three such rows per operand, reused in a ring, stay in L1 while a plane streams through.
#include "isa_builds.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace mcmri_fast::cpu {

// The compute type: float64 for float64, float32 otherwise (float16 / bfloat16 widen to it).
template <typename scalar_t>
using depthwise_compute_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// Taps are [C, 9] in the compute type (row-major 3×3 per channel); planes are the B·C maps [H, W] of a
// contiguous [B, C, H, W].
template <typename scalar_t>
struct DepthwiseConvKernels {
  using compute_t = depthwise_compute_t<scalar_t>;
  // out[p] = bias[c] + the 3×3 stencil of taps[c] over x[p] (zero padding), planes p = (b, c) in
  // [begin, end); bias may be null. With the taps rotated by 180° this is grad_x from grad.
  void (*forward_planes)(int64_t C, int64_t H, int64_t W, const scalar_t* x, const compute_t* taps,
                         const compute_t* bias, scalar_t* out, int64_t begin, int64_t end);
  // Channels c in [begin, end), all batches, one pass over grad and x: sums[c, 3i + j] =
  // Σ_b Σ_{y,x} grad[b, c, y, x] x[b, c, y + i − 1, x + j − 1] and sums[c, 9] = Σ grad[b, c]; if grad_x is
  // not null, also grad_x = the stencil of rotated_taps (the taps rotated by 180°) over grad.
  void (*backward_channels)(int64_t B, int64_t C, int64_t H, int64_t W, const scalar_t* grad, const scalar_t* x,
                            const compute_t* rotated_taps, scalar_t* grad_x, double* sums, int64_t begin,
                            int64_t end);
};

}  // namespace mcmri_fast::cpu

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
  // operands, gains the most (BENCHMARKS.md). Prefetches past the end of the data do not fault; the
  // address is formed as an integer, not as a pointer past it.
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

template <typename scalar_t>
const DepthwiseConvKernels<scalar_t>& depthwise_conv_kernels() {
  static const DepthwiseConvKernels<scalar_t> table{&depthwise_conv3x3_forward_planes<scalar_t>,
                                                    &depthwise_conv3x3_backward_channels<scalar_t>};
  return table;
}
MCMRI_CPU_FLOAT_AND_HALF_KERNELS(depthwise_conv_kernels, DepthwiseConvKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "../depthwise_conv.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(depthwise_conv_kernels, DepthwiseConvKernels)

namespace {

at::ScalarType compute_dtype(at::ScalarType dtype) { return dtype == at::kDouble ? at::kDouble : at::kFloat; }

// The taps [C, 9] in the compute type; rotated by 180° (the 9 taps reversed) for the backward to x.
at::Tensor taps_of(const at::Tensor& weight, int64_t C, bool rotated) {
  auto taps = weight.reshape({C, 9}).to(compute_dtype(weight.scalar_type()));
  return (rotated ? taps.flip({1}) : taps).contiguous();
}

void stencil(const DepthwiseConvSizes& s, const at::Tensor& in, const at::Tensor& taps, const at::Tensor* bias,
             at::Tensor& out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, in.scalar_type(), "depthwise_conv3x3_cpu", [&] {
    using compute_t = depthwise_compute_t<scalar_t>;
    const auto& k = depthwise_conv_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.H * s.W), [&](int64_t begin, int64_t end) {
      k.forward_planes(s.C, s.H, s.W, in.const_data_ptr<scalar_t>(), taps.const_data_ptr<compute_t>(),
                       bias == nullptr ? nullptr : bias->const_data_ptr<compute_t>(), out.mutable_data_ptr<scalar_t>(),
                       begin, end);
    });
  });
}

at::Tensor depthwise_conv3x3_fwd(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_fwd", x, weight, bias ? &*bias : nullptr);
  const auto x_c = x.contiguous();
  auto out = at::empty_like(x_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  const auto taps = taps_of(weight, s.C, /*rotated=*/false);
  const std::optional<at::Tensor> bias_c =
      bias ? std::optional<at::Tensor>(bias->to(compute_dtype(x.scalar_type())).contiguous()) : std::nullopt;
  stencil(s, x_c, taps, bias_c ? &*bias_c : nullptr, out);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> depthwise_conv3x3_bwd(const at::Tensor& grad, const at::Tensor& x,
                                                                     const at::Tensor& weight, bool need_x,
                                                                     bool need_weight, bool need_bias) {
  const auto s = check_depthwise_conv_args("depthwise_conv3x3_bwd", x, weight, nullptr, &grad);
  // Each gradient not asked for is an empty tensor of its own (custom-op outputs may not alias).
  const auto none = [&] { return x.new_empty({0}); };
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernels read rows contiguously.
  const auto grad_c = grad.contiguous();
  auto grad_x = need_x ? at::empty_like(grad_c, at::MemoryFormat::Contiguous) : none();
  const auto rotated = taps_of(weight, s.C, /*rotated=*/true);
  if (!need_weight && !need_bias) {
    if (need_x && grad_x.numel() > 0) stencil(s, grad_c, rotated, nullptr, grad_x);
    return {grad_x, none(), none()};
  }
  auto sums = at::zeros({s.C, 10}, x.options().dtype(at::kDouble));
  if (x.numel() > 0) {
    const auto x_c = x.contiguous();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "depthwise_conv3x3_bwd_cpu", [&] {
      using compute_t = depthwise_compute_t<scalar_t>;
      const auto& k = depthwise_conv_kernels<scalar_t>();
      at::parallel_for(0, s.C, parallel_grain(s.B * s.H * s.W), [&](int64_t begin, int64_t end) {
        k.backward_channels(s.B, s.C, s.H, s.W, grad_c.const_data_ptr<scalar_t>(), x_c.const_data_ptr<scalar_t>(),
                            rotated.const_data_ptr<compute_t>(), need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                            sums.mutable_data_ptr<double>(), begin, end);
      });
    });
  }
  // Copies, never views of sums: with C = 1 both would alias it.
  auto grad_weight =
      need_weight ? sums.narrow(1, 0, 9).reshape(weight.sizes()).to(weight.scalar_type(), false, /*copy=*/true) : none();
  auto grad_bias = need_bias ? sums.select(1, 9).to(x.scalar_type(), false, /*copy=*/true) : none();
  return {grad_x, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("depthwise_conv3x3_fwd", &depthwise_conv3x3_fwd);
  m.impl("depthwise_conv3x3_bwd", &depthwise_conv3x3_bwd);
}

}  // namespace mcmri_fast::cpu
#endif
