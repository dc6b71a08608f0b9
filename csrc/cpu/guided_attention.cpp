// CPU kernels of the guided attention (the contract: csrc/guided_attention.h). Memory-bound passes over
// f1, f2 [B, C, N]:
//   - the spatial max: rows (b, c) in parallel, one pass each, every vector lane keeping its own maximum
//     and the first position of it, the lanes combined at the end (the first maximum of the row);
//   - the channel max and the backward pass: blocks of pixels of one sample in parallel, the channels
//     looped inside (each block's running max / pixel sums stay in L1), the backward's per-channel sums as
//     one partial per (block, channel), summed in block order in double (deterministic);
//   - the apply: rows in parallel, one read of f1 and f2 and one write.
// Written once on at::vec::Vectorized and built for each instruction set (isa_builds.h); float16 / bfloat16
// are computed in float32.
#include "isa_builds.h"

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "vec_step.h"

namespace mcmri_fast::cpu {

// Pixels per block of the channel-looping kernels: a block's accumulators (kPixelBlock values) stay in L1,
// and each channel's segment (4 KB of float32) is long enough for the prefetchers.
constexpr int64_t kPixelBlock = 1024;

// The kernels of one dtype. Rows r = b·C + c of f1, f2, grad, out [B·C, N]; blocks [p0, p1) of sample b's
// pixels. ca: [B, C], sa / s / pixel sums: [B, N]; channel_partials: [B, blocks, C].
template <typename scalar_t>
struct GuidedAttentionKernels {
  using acc_t = at::opmath_type<scalar_t>;
  void (*spatial_max_rows)(int64_t N, const scalar_t* f1, acc_t* max, int64_t* index, int64_t begin, int64_t end);
  void (*channel_max_block)(int64_t C, int64_t N, const scalar_t* f1, const acc_t* ca, acc_t* s, int64_t* index,
                            int64_t p0, int64_t p1);
  void (*apply_rows)(int64_t C, int64_t N, const scalar_t* f1, const scalar_t* f2, const acc_t* ca, const acc_t* sa,
                     scalar_t* out, int64_t begin, int64_t end);
  void (*backward_block)(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* f1, const scalar_t* f2,
                         const acc_t* ca, const acc_t* sa, scalar_t* grad_f1, scalar_t* grad_f2, acc_t* pixel_sums,
                         double* channel_partials, int64_t p0, int64_t p1);
  // The one-channel k×k convolution (zero padding k/2) of planes [B, H, W], rows r = b·H + y in
  // [begin, end): out = conv(in, weight), through the sigmoid where asked.
  void (*conv_rows)(int64_t H, int64_t W, int64_t k, const acc_t* in, const acc_t* weight, bool sigmoid, acc_t* out,
                    int64_t begin, int64_t end);
  // Per row r: partials[r·k² + i·k + j] = Σ_x z[r, x] · s[r + i − k/2, x + j − k/2] (0 outside the plane).
  void (*weight_grad_rows)(int64_t H, int64_t W, int64_t k, const acc_t* z, const acc_t* s, double* partials,
                           int64_t begin, int64_t end);
};

}  // namespace mcmri_fast::cpu

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

// Where a candidate v replaces the running maximum m: strictly greater (the first maximum stays), or a NaN
// over a number (the first NaN stays).
template <typename T>
inline at::vec::Vectorized<T> replaces(const at::vec::Vectorized<T>& v, const at::vec::Vectorized<T>& m) {
  return (v > m) | (v.isnan() & (m == m));
}

template <typename T, typename = std::enable_if_t<std::is_floating_point_v<T>>>
inline bool replaces(T v, T m) {
  return v > m || (std::isnan(v) && !std::isnan(m));
}

template <typename scalar_t>
void spatial_max_rows(int64_t N, const scalar_t* f1, at::opmath_type<scalar_t>* max, int64_t* index, int64_t begin,
                      int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t kLanes = Vec::size();
  // Positions are counted in acc_t lanes, exact below 2^24 (float): longer rows go by chunks of that.
  constexpr int64_t kChunk = (int64_t(1) << 23) / S::kSize * S::kSize;
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* row = f1 + r * N;
    acc_t best = -std::numeric_limits<acc_t>::infinity();
    int64_t best_index = 0;
    bool started = false;
    for (int64_t chunk = 0; chunk < N; chunk += kChunk) {
      const int64_t chunk_end = std::min(N, chunk + kChunk);
      Vec lane_max[S::kParts], lane_pos[S::kParts];
      for (int p = 0; p < S::kParts; ++p) {
        lane_max[p] = Vec(-std::numeric_limits<acc_t>::infinity());
        lane_pos[p] = Vec(std::numeric_limits<acc_t>::max());  // no position yet
      }
      Vec pos[S::kParts];
      for (int p = 0; p < S::kParts; ++p) pos[p] = Vec::arange(acc_t(p * kLanes), acc_t(1));
      const Vec stride(acc_t(S::kSize));
      int64_t j = chunk;
      for (; j + S::kSize <= chunk_end; j += S::kSize) {
        Vec v[S::kParts];
        S::load(row + j, S::kSize, v);
        for (int p = 0; p < S::kParts; ++p) {
          // ≥ on a lane's first visit (positions start unset, so −inf rows keep a position)
          const Vec take = replaces(v[p], lane_max[p]) | (lane_pos[p] == Vec(std::numeric_limits<acc_t>::max()));
          lane_max[p] = Vec::blendv(lane_max[p], v[p], take);
          lane_pos[p] = Vec::blendv(lane_pos[p], pos[p], take);
          pos[p] = pos[p] + stride;
        }
      }
      // the lanes, then the tail, in order of position: the first maximum among equal ones
      acc_t values[S::kParts * kLanes], positions[S::kParts * kLanes];
      for (int p = 0; p < S::kParts; ++p) {
        lane_max[p].store(values + p * kLanes);
        lane_pos[p].store(positions + p * kLanes);
      }
      for (int64_t l = 0; l < S::kParts * kLanes; ++l) {
        if (positions[l] == std::numeric_limits<acc_t>::max()) continue;
        const int64_t at = chunk + static_cast<int64_t>(positions[l]);
        if (!started || replaces(values[l], best) || (values[l] == best && at < best_index) ||
            (std::isnan(values[l]) && std::isnan(best) && at < best_index)) {
          best = values[l];
          best_index = at;
          started = true;
        }
      }
      for (; j < chunk_end; ++j) {
        const acc_t v = static_cast<acc_t>(row[j]);
        if (!started || replaces(v, best)) {
          best = v;
          best_index = j;
          started = true;
        }
      }
    }
    max[r] = best;
    index[r] = best_index;
  }
}

template <typename scalar_t>
void channel_max_block(int64_t C, int64_t N, const scalar_t* f1, const at::opmath_type<scalar_t>* ca,
                       at::opmath_type<scalar_t>* s, int64_t* index, int64_t p0, int64_t p1) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t kLanes = Vec::size();
  acc_t channel[kPixelBlock];
  for (int64_t j = p0; j < p1; j += S::kSize) {
    const int64_t n = std::min<int64_t>(S::kSize, p1 - j);
    Vec best[S::kParts], which[S::kParts];
    for (int64_t c = 0; c < C; ++c) {
      Vec v[S::kParts];
      S::load(f1 + c * N + j, n, v);
      const Vec scale(ca[c]), here(static_cast<acc_t>(c));
      for (int p = 0; p < S::kParts; ++p) {
        const Vec a = v[p] * scale;
        if (c == 0) {
          best[p] = a;
          which[p] = here;
        } else {
          const Vec take = replaces(a, best[p]);
          best[p] = Vec::blendv(best[p], a, take);
          which[p] = Vec::blendv(which[p], here, take);
        }
      }
    }
    // channel indices below 2^24 are exact in float lanes (C is at most a few hundred)
    for (int p = 0; p < S::kParts; ++p) {
      const int64_t valid = std::min<int64_t>(kLanes, n - p * kLanes);
      if (valid <= 0) break;
      best[p].store(s + j + p * kLanes, valid);
      which[p].store(channel, valid);
      for (int64_t l = 0; l < valid; ++l) index[j + p * kLanes + l] = static_cast<int64_t>(channel[l]);
    }
  }
}

template <typename scalar_t>
void apply_rows(int64_t C, int64_t N, const scalar_t* f1, const scalar_t* f2, const at::opmath_type<scalar_t>* ca,
                const at::opmath_type<scalar_t>* sa, scalar_t* out, int64_t begin, int64_t end) {
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t kLanes = Vec::size();
  const Vec one(1);
  for (int64_t r = begin; r < end; ++r) {
    const auto* sa_row = sa + (r / C) * N;
    const Vec scale(ca[r]);
    for (int64_t j = 0; j < N; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, N - j);
      Vec v1[S::kParts], v2[S::kParts];
      S::load(f1 + r * N + j, n, v1);
      S::load(f2 + r * N + j, n, v2);
      for (int p = 0; p < S::kParts; ++p) {
        const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(kLanes, n - p * kLanes));
        const Vec spatial = valid == kLanes ? Vec::loadu(sa_row + j + p * kLanes) : Vec::loadu(sa_row + j + p * kLanes, valid);
        v2[p] = v2[p] * (one + v1[p] * scale * spatial);
      }
      S::store(out + r * N + j, n, v2);
    }
  }
}

template <typename scalar_t>
void backward_block(int64_t C, int64_t N, const scalar_t* grad, const scalar_t* f1, const scalar_t* f2,
                    const at::opmath_type<scalar_t>* ca, const at::opmath_type<scalar_t>* sa, scalar_t* grad_f1,
                    scalar_t* grad_f2, at::opmath_type<scalar_t>* pixel_sums, double* channel_partials, int64_t p0,
                    int64_t p1) {
  using acc_t = at::opmath_type<scalar_t>;
  using S = Step<scalar_t>;
  using Vec = typename S::Vec;
  constexpr int64_t kLanes = Vec::size();
  const Vec one(1);
  // the block's pixel sums over the channels so far (tail lanes: loads give 0, and add 0)
  acc_t pixels[kPixelBlock + S::kSize] = {};
  acc_t spatial[kPixelBlock + S::kSize] = {};
  std::copy(sa + p0, sa + p1, spatial);
  for (int64_t c = 0; c < C; ++c) {
    const Vec scale(ca[c]);
    Vec channel_sum(0);
    const int64_t row = c * N;
    for (int64_t j = p0; j < p1; j += S::kSize) {
      const int64_t n = std::min<int64_t>(S::kSize, p1 - j);
      Vec g[S::kParts], v1[S::kParts], v2[S::kParts];
      S::load(grad + row + j, n, g);
      S::load(f1 + row + j, n, v1);
      S::load(f2 + row + j, n, v2);
      Vec out1[S::kParts], out2[S::kParts];
      for (int p = 0; p < S::kParts; ++p) {
        acc_t* pixel = pixels + (j - p0) + p * kLanes;
        const Vec sp = Vec::loadu(spatial + (j - p0) + p * kLanes);
        const Vec ga = g[p] * v2[p];
        const Vec ga_f1 = ga * v1[p];  // 0 in the tail lanes: their loads are 0
        out1[p] = ga * scale * sp;
        out2[p] = g[p] * (one + v1[p] * scale * sp);
        (Vec::loadu(pixel) + ga_f1 * scale).store(pixel);
        channel_sum = channel_sum + ga_f1 * sp;
      }
      S::store(grad_f1 + row + j, n, out1);
      S::store(grad_f2 + row + j, n, out2);
    }
    acc_t lanes[kLanes];
    channel_sum.store(lanes);
    double total = 0;
    for (int64_t l = 0; l < kLanes; ++l) total += lanes[l];
    channel_partials[c] = total;
  }
  std::copy(pixels, pixels + (p1 - p0), pixel_sums + p0);
}

// Row yy of a plane copied between k/2 zeros on each side (the zero padding), into padded [W + k − 1].
template <typename T>
inline void padded_row(const T* plane, int64_t W, int64_t k, int64_t yy, T* padded) {
  const int64_t r = k / 2;
  std::fill(padded, padded + r, T(0));
  std::copy(plane + yy * W, plane + (yy + 1) * W, padded + r);
  std::fill(padded + r + W, padded + W + 2 * r, T(0));
}

// Plain loops over x: the compiler vectorises them for each build's instruction set.
template <typename T>
void conv_rows(int64_t H, int64_t W, int64_t k, const T* in, const T* weight, bool sigmoid, T* out, int64_t begin,
               int64_t end) {
  const int64_t r = k / 2;
  std::vector<T> padded(W + 2 * r), sums(W);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / H, y = row % H;
    const T* plane = in + b * H * W;
    std::fill(sums.begin(), sums.end(), T(0));
    for (int64_t i = 0; i < k; ++i) {
      const int64_t yy = y + i - r;
      if (yy < 0 || yy >= H) continue;
      padded_row(plane, W, k, yy, padded.data());
      for (int64_t j = 0; j < k; ++j) {
        const T w = weight[i * k + j];
        const T* shifted = padded.data() + j;
        for (int64_t x = 0; x < W; ++x) sums[x] += w * shifted[x];
      }
    }
    T* out_row = out + row * W;
    for (int64_t x = 0; x < W; ++x) out_row[x] = sigmoid ? T(1) / (T(1) + std::exp(-sums[x])) : sums[x];
  }
}

template <typename T>
void weight_grad_rows(int64_t H, int64_t W, int64_t k, const T* z, const T* s, double* partials, int64_t begin,
                      int64_t end) {
  const int64_t r = k / 2;
  std::vector<T> padded(W + 2 * r);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / H, y = row % H;
    const T* z_row = z + row * W;
    double* out = partials + row * k * k;
    for (int64_t i = 0; i < k; ++i) {
      const int64_t yy = y + i - r;
      if (yy < 0 || yy >= H) {
        std::fill(out + i * k, out + (i + 1) * k, 0.0);
        continue;
      }
      padded_row(s + b * H * W, W, k, yy, padded.data());
      for (int64_t j = 0; j < k; ++j) {
        const T* shifted = padded.data() + j;
        T dot = 0;
        for (int64_t x = 0; x < W; ++x) dot += z_row[x] * shifted[x];
        out[i * k + j] = dot;
      }
    }
  }
}

template <typename scalar_t>
const GuidedAttentionKernels<scalar_t>& guided_attention_kernels() {
  using acc_t = at::opmath_type<scalar_t>;
  static const GuidedAttentionKernels<scalar_t> table{&spatial_max_rows<scalar_t>, &channel_max_block<scalar_t>,
                                                      &apply_rows<scalar_t>,       &backward_block<scalar_t>,
                                                      &conv_rows<acc_t>,           &weight_grad_rows<acc_t>};
  return table;
}
MCMRI_CPU_FLOAT_AND_HALF_KERNELS(guided_attention_kernels, GuidedAttentionKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "../guided_attention.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(guided_attention_kernels, GuidedAttentionKernels)

namespace {

int64_t pixel_blocks(int64_t N) { return (N + kPixelBlock - 1) / kPixelBlock; }

// Runs fn(b, p0, p1) over every block of every sample, in parallel.
template <typename Fn>
void for_pixel_blocks(const GuidedAttentionSizes& s, const Fn& fn) {
  const int64_t blocks = pixel_blocks(s.N);
  at::parallel_for(0, s.B * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / blocks, p0 = (i % blocks) * kPixelBlock;
      fn(b, p0, std::min(s.N, p0 + kPixelBlock));
    }
  });
}

std::tuple<at::Tensor, at::Tensor> guided_attention_spatial_max(const at::Tensor& f1) {
  const auto s = check_guided_attention_args("guided_attention_spatial_max", f1);
  const auto f1_c = f1.contiguous();
  const auto options = f1.options().dtype(guided_attention_accumulate(f1.scalar_type()));
  auto max = at::empty({s.B, s.C}, options);
  auto index = at::empty({s.B, s.C}, f1.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_spatial_max_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = guided_attention_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.spatial_max_rows(s.N, f1_c.const_data_ptr<scalar_t>(), max.mutable_data_ptr<acc_t>(),
                         index.mutable_data_ptr<int64_t>(), begin, end);
    });
  });
  return {max, index};
}

std::tuple<at::Tensor, at::Tensor> guided_attention_channel_max(const at::Tensor& f1, const at::Tensor& ca) {
  const auto s = check_guided_attention_args("guided_attention_channel_max", f1, &ca);
  const auto f1_c = f1.contiguous(), ca_c = ca.contiguous();
  auto max = at::empty({s.B, s.N}, ca.options());
  auto index = at::empty({s.B, s.N}, f1.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_channel_max_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = guided_attention_kernels<scalar_t>();
    for_pixel_blocks(s, [&](int64_t b, int64_t p0, int64_t p1) {
      k.channel_max_block(s.C, s.N, f1_c.const_data_ptr<scalar_t>() + b * s.C * s.N,
                          ca_c.const_data_ptr<acc_t>() + b * s.C, max.mutable_data_ptr<acc_t>() + b * s.N,
                          index.mutable_data_ptr<int64_t>() + b * s.N, p0, p1);
    });
  });
  return {max, index};
}

at::Tensor guided_attention_apply(const at::Tensor& f1, const at::Tensor& f2, const at::Tensor& ca,
                                  const at::Tensor& sa) {
  const auto s = check_guided_attention_args("guided_attention_apply", f1, &ca, &sa, &f2);
  const auto f1_c = f1.contiguous(), f2_c = f2.contiguous(), ca_c = ca.contiguous(), sa_c = sa.contiguous();
  auto out = at::empty_like(f2_c, at::MemoryFormat::Contiguous);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_apply_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = guided_attention_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.C, parallel_grain(s.N), [&](int64_t begin, int64_t end) {
      k.apply_rows(s.C, s.N, f1_c.const_data_ptr<scalar_t>(), f2_c.const_data_ptr<scalar_t>(),
                   ca_c.const_data_ptr<acc_t>(), sa_c.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), begin,
                   end);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> guided_attention_backward_pass(
    const at::Tensor& grad, const at::Tensor& f1, const at::Tensor& f2, const at::Tensor& ca, const at::Tensor& sa) {
  const auto s = check_guided_attention_args("guided_attention_backward_pass", f1, &ca, &sa, &f2, &grad);
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), f1_c = f1.contiguous(), f2_c = f2.contiguous();
  const auto ca_c = ca.contiguous(), sa_c = sa.contiguous();
  auto grad_f1 = at::empty_like(f1_c, at::MemoryFormat::Contiguous), grad_f2 = at::empty_like(grad_f1);
  auto pixel_sums = at::empty({s.B, s.N}, ca.options());
  const int64_t blocks = pixel_blocks(s.N);
  auto partials = at::empty({s.B, blocks, s.C}, ca.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& k = guided_attention_kernels<scalar_t>();
    for_pixel_blocks(s, [&](int64_t b, int64_t p0, int64_t p1) {
      const int64_t base = b * s.C * s.N;
      k.backward_block(s.C, s.N, grad_c.const_data_ptr<scalar_t>() + base, f1_c.const_data_ptr<scalar_t>() + base,
                       f2_c.const_data_ptr<scalar_t>() + base, ca_c.const_data_ptr<acc_t>() + b * s.C,
                       sa_c.const_data_ptr<acc_t>() + b * s.N, grad_f1.mutable_data_ptr<scalar_t>() + base,
                       grad_f2.mutable_data_ptr<scalar_t>() + base, pixel_sums.mutable_data_ptr<acc_t>() + b * s.N,
                       partials.mutable_data_ptr<double>() + (b * blocks + p0 / kPixelBlock) * s.C, p0, p1);
    });
  });
  // the blocks' partials summed in block order, in double (deterministic)
  auto channel_sums = at::empty({s.B, s.C}, ca.options());
  const double* part = partials.const_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(channel_sums.scalar_type(), "guided_attention_channel_sums_cpu", [&] {
    scalar_t* sums = channel_sums.mutable_data_ptr<scalar_t>();
    for (int64_t b = 0; b < s.B; ++b) {
      for (int64_t c = 0; c < s.C; ++c) {
        double total = 0;
        for (int64_t k = 0; k < blocks; ++k) total += part[(b * blocks + k) * s.C + c];
        sums[b * s.C + c] = static_cast<scalar_t>(total);
      }
    }
  });
  return {grad_f1, grad_f2, pixel_sums, channel_sums};
}

// s, sa, pixel_sums [B, H, W] and weight [k, k] of one accumulation dtype, on the CPU.
void check_spatial_conv_args(const char* op, const at::Tensor& s, const at::Tensor& weight,
                             std::initializer_list<const at::Tensor*> planes = {}) {
  TORCH_CHECK(s.dim() == 3 && s.numel() > 0, op, ": s must be a non-empty [B, H, W], got ", s.sizes());
  TORCH_CHECK(s.scalar_type() == at::kFloat || s.scalar_type() == at::kDouble, op,
              ": s must be float32 or float64, got ", s.scalar_type());
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == weight.size(1) && weight.size(0) % 2 == 1 &&
                  weight.scalar_type() == s.scalar_type(),
              op, ": weight must be [k, k] with k odd, of s's dtype, got ", weight.sizes(), " ", weight.scalar_type());
  for (const at::Tensor* t : planes) {
    TORCH_CHECK(t->sizes() == s.sizes() && t->scalar_type() == s.scalar_type(), op, ": the planes must match s (",
                s.sizes(), " ", s.scalar_type(), "), got ", t->sizes(), " ", t->scalar_type());
  }
  for (const at::Tensor* t : planes) TORCH_CHECK(t->device() == s.device(), op, ": all tensors must be on ", s.device());
  TORCH_CHECK(weight.device() == s.device(), op, ": all tensors must be on ", s.device());
}

at::Tensor guided_attention_spatial_conv(const at::Tensor& s, const at::Tensor& weight) {
  check_spatial_conv_args("guided_attention_spatial_conv", s, weight);
  const auto s_c = s.contiguous(), w_c = weight.contiguous();
  const int64_t B = s.size(0), H = s.size(1), W = s.size(2), k = weight.size(0);
  auto sa = at::empty_like(s_c);
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "guided_attention_spatial_conv_cpu", [&] {
    const auto& kern = guided_attention_kernels<scalar_t>();
    at::parallel_for(0, B * H, parallel_grain(W * k), [&](int64_t begin, int64_t end) {
      kern.conv_rows(H, W, k, s_c.const_data_ptr<scalar_t>(), w_c.const_data_ptr<scalar_t>(), true,
                     sa.mutable_data_ptr<scalar_t>(), begin, end);
    });
  });
  return sa;
}

std::tuple<at::Tensor, at::Tensor> guided_attention_spatial_conv_backward(const at::Tensor& pixel_sums,
                                                                          const at::Tensor& sa, const at::Tensor& s,
                                                                          const at::Tensor& weight) {
  check_spatial_conv_args("guided_attention_spatial_conv_backward", s, weight, {&pixel_sums, &sa});
  const int64_t B = s.size(0), H = s.size(1), W = s.size(2), k = weight.size(0);
  const auto s_c = s.contiguous();
  const auto z = (pixel_sums * sa * (1 - sa)).contiguous();
  // the transposed convolution of stride 1 and "same" zero padding: the convolution with the flipped kernel
  const auto flipped = weight.flip({0, 1}).contiguous();
  auto grad_s = at::empty_like(s_c);
  auto partials = at::empty({B * H, k * k}, s.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "guided_attention_spatial_conv_backward_cpu", [&] {
    const auto& kern = guided_attention_kernels<scalar_t>();
    at::parallel_for(0, B * H, parallel_grain(W * k), [&](int64_t begin, int64_t end) {
      kern.conv_rows(H, W, k, z.const_data_ptr<scalar_t>(), flipped.const_data_ptr<scalar_t>(), false,
                     grad_s.mutable_data_ptr<scalar_t>(), begin, end);
      kern.weight_grad_rows(H, W, k, z.const_data_ptr<scalar_t>(), s_c.const_data_ptr<scalar_t>(),
                            partials.mutable_data_ptr<double>(), begin, end);
    });
  });
  // the rows' partials summed in row order (deterministic)
  auto grad_weight = at::empty({k, k}, s.options());
  const double* part = partials.const_data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "guided_attention_weight_grad_sum_cpu", [&] {
    scalar_t* out = grad_weight.mutable_data_ptr<scalar_t>();
    for (int64_t t = 0; t < k * k; ++t) {
      double total = 0;
      for (int64_t row = 0; row < B * H; ++row) total += part[row * k * k + t];
      out[t] = static_cast<scalar_t>(total);
    }
  });
  return {grad_s, grad_weight};
}

at::Tensor guided_attention_channel_max_backward(at::Tensor& grad_f1, const at::Tensor& f1, const at::Tensor& ca,
                                                 const at::Tensor& index, const at::Tensor& grad_s) {
  // grad_f1 is checked as f2 (f1's shape and dtype), grad_s as sa ([B, N] of the accumulation dtype)
  const auto s = check_guided_attention_args("guided_attention_channel_max_backward", f1, &ca, &grad_s, &grad_f1);
  TORCH_CHECK(grad_f1.is_contiguous(), "guided_attention_channel_max_backward: grad_f1 must be contiguous");
  TORCH_CHECK(index.dim() == 2 && index.size(0) == s.B && index.size(1) == s.N && index.scalar_type() == at::kLong &&
                  index.device() == f1.device(),
              "guided_attention_channel_max_backward: index must be [B, N] = [", s.B, ", ", s.N, "] of int64, got ",
              index.sizes(), " ", index.scalar_type());
  const auto f1_c = f1.contiguous(), ca_c = ca.contiguous(), index_c = index.contiguous(), grad_s_c = grad_s.contiguous();
  // an index out of [0, C) would write out of bounds: refuse it
  TORCH_CHECK(index_c.ge(0).logical_and(index_c.lt(s.C)).all().item<bool>(),
              "guided_attention_channel_max_backward: index must hold channels in [0, ", s.C, ")");
  const int64_t blocks = pixel_blocks(s.N);
  auto partials = at::zeros({s.B, blocks, s.C}, ca.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, f1.scalar_type(), "guided_attention_channel_max_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* g = grad_f1.mutable_data_ptr<scalar_t>();
    const scalar_t* x = f1_c.const_data_ptr<scalar_t>();
    const acc_t* scale = ca_c.const_data_ptr<acc_t>();
    const int64_t* which = index_c.const_data_ptr<int64_t>();
    const acc_t* upstream = grad_s_c.const_data_ptr<acc_t>();
    double* part = partials.mutable_data_ptr<double>();
    for_pixel_blocks(s, [&](int64_t b, int64_t p0, int64_t p1) {
      double* sums = part + (b * blocks + p0 / kPixelBlock) * s.C;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t c = which[b * s.N + p];
        const int64_t at = (b * s.C + c) * s.N + p;
        const acc_t up = upstream[b * s.N + p];
        g[at] = static_cast<scalar_t>(static_cast<acc_t>(g[at]) + up * scale[b * s.C + c]);
        sums[c] += static_cast<double>(up) * static_cast<double>(x[at]);
      }
    });
  });
  // the blocks' partials summed in block order (deterministic)
  return partials.sum(1).to(ca.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("guided_attention_spatial_conv", &guided_attention_spatial_conv);
  m.impl("guided_attention_spatial_conv_backward", &guided_attention_spatial_conv_backward);
  m.impl("guided_attention_channel_max_backward", &guided_attention_channel_max_backward);
  m.impl("guided_attention_spatial_max", &guided_attention_spatial_max);
  m.impl("guided_attention_channel_max", &guided_attention_channel_max);
  m.impl("guided_attention_apply", &guided_attention_apply);
  m.impl("guided_attention_backward_pass", &guided_attention_backward_pass);
}

}  // namespace mcmri_fast::cpu
#endif
