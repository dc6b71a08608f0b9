// CPU kernels of the warp (the contract and the per-pixel arithmetic: csrc/warp.h). Rows (b, i) in
// parallel. Two builds of the row kernels (isa_builds.h):
//   - AVX2: vectors of Vectorized<T>::size() pixels along the row (the scheme of ATen's vectorised grid
//     sampler): coordinates, floor, weights and corner offsets as vectors. A vector whose pixels all
//     sample strictly inside (0, W − 1) × (0, H − 1) (the identity of every padding mode, the whole cell
//     inside: the common case of small fields) is computed in vector arithmetic; any other is filled lane
//     by lane from warp_footprint (warp.h). The corners are read lane by lane (AVX2's gathers were
//     slower, on AMD's cores: 1.4× the forward at 1 × 64 × 128²), float32 interior ones as 64-bit pairs.
//     The offsets are computed in T, exact for planes of up to 2^24 pixels in float32; larger planes
//     take the scalar loops.
//   - baseline (no floor instruction, Vectorized emulated lane by lane): the scalar loops.
// Both share the loop structure: with few channels (C <= kDirectChannels: DUN-SA's images) a pixel's (or
// vector's) footprint is used at once for its channels; with more, the footprints of a row are computed
// once into a buffer and the channels run over them in turn.
//
// The backward to the flow is per pixel (a sum over the channels): no conflicts. The backward to the
// image scatters into the four corners of every sample, which neighbouring rows share: scalar, pixel by
// pixel in row order (AVX2 has no scatter). The rows of one sample are split into `parts` blocks, each
// scattering into a buffer of its own (block 0 into the gradient itself), added in block order at the
// end: deterministic; with B at least the number of threads, every sample is one block and nothing is
// added. (ATen's grid_sampler_2d_backward on the CPU runs one thread per sample: for a batch of one it is
// single-threaded.)
#include "isa_builds.h"

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../warp.h"

namespace mcmri_fast::cpu {

// Rows r = (b, i) in [begin, end) of the forward; rows [row_begin, row_end) of sample b of the
// backward: the flow's gradient of those pixels (if grad_flow) and their scatter into grad_image_b,
// the [C, H, W] planes of sample b of a gradient buffer (if not null).
template <typename T>
struct WarpKernels {
  void (*forward_rows)(const WarpSizes& s, const T* image, const T* flow, T* out, int64_t begin, int64_t end);
  void (*backward_rows)(const WarpSizes& s, const T* grad, const T* image, const T* flow, int64_t b,
                        int64_t row_begin, int64_t row_end, T* grad_image_b, T* grad_flow);
};

}  // namespace mcmri_fast::cpu

namespace mcmri_fast::cpu::MCMRI_CPU_ISA {

using at::vec::Vectorized;

// Channels up to which a footprint is used directly rather than buffered for the row.
constexpr int64_t kDirectChannels = 4;

// The bilinear sample of the corner values v (weights w: warp.h's WarpFootprint::weight), and the
// accumulation of its gradient g into the derivatives along x and y (before the padding's derivative),
// for a scalar T or a vector of them.
template <typename V>
inline V bilinear(const V (&w)[4], const V (&v)[4]) {
  return w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3];
}
template <typename V>
inline void bilinear_gradient(const V& fx, const V& fy, const V (&v)[4], const V& g, V& gx, V& gy) {
  const V one(1);
  gx = gx + g * ((one - fy) * (v[1] - v[0]) + fy * (v[3] - v[2]));
  gy = gy + g * ((one - fx) * (v[2] - v[0]) + fx * (v[3] - v[1]));
}

// --- Scalar: pixel by pixel --------------------------------------------------------------------------

template <typename T>
inline T sample(const WarpFootprint<T>& f, const T* src) {
  const T w[4] = {f.weight(0), f.weight(1), f.weight(2), f.weight(3)};
  const T v[4] = {src[f.offset[0]], src[f.offset[1]], src[f.offset[2]], src[f.offset[3]]};
  return bilinear(w, v);
}

// The flow's gradient of one channel (into gx, gy) and its scatter into dst (if not null).
template <typename T>
inline void sample_backward(const WarpFootprint<T>& f, const T* src, T g, T* dst, bool need_flow, T& gx, T& gy) {
  if (need_flow) {
    T v[4];
    for (int k = 0; k < 4; ++k) v[k] = f.inside[k] * src[f.offset[k]];
    bilinear_gradient(f.fx, f.fy, v, g, gx, gy);
  }
  if (dst != nullptr) {
    for (int k = 0; k < 4; ++k) dst[f.offset[k]] += f.weight(k) * g;
  }
}

template <typename T>
void forward_rows_scalar(const WarpSizes& s, const T* image, const T* flow, T* out, int64_t begin, int64_t end) {
  const int64_t plane = s.H * s.W;
  const bool direct = s.C <= kDirectChannels;
  std::vector<WarpFootprint<T>> row(direct ? 0 : s.W);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / s.H, i = r % s.H;
    const T* flow_x = flow + ((b * 2 + 0) * s.H + i) * s.W;
    const T* flow_y = flow + ((b * 2 + 1) * s.H + i) * s.W;
    const T* src = image + b * s.C * plane;
    T* dst = out + b * s.C * plane + i * s.W;
    if (direct) {
      for (int64_t j = 0; j < s.W; ++j) {
        const auto f = warp_footprint<T>(s, i, j, flow_x[j], flow_y[j]);
        for (int64_t c = 0; c < s.C; ++c) dst[c * plane + j] = sample(f, src + c * plane);
      }
      continue;
    }
    for (int64_t j = 0; j < s.W; ++j) row[j] = warp_footprint<T>(s, i, j, flow_x[j], flow_y[j]);
    for (int64_t c = 0; c < s.C; ++c) {
      for (int64_t j = 0; j < s.W; ++j) dst[c * plane + j] = sample(row[j], src + c * plane);
    }
  }
}

template <typename T>
void backward_rows_scalar(const WarpSizes& s, const T* grad, const T* image, const T* flow, int64_t b,
                          int64_t row_begin, int64_t row_end, T* grad_image_b, T* grad_flow) {
  const int64_t plane = s.H * s.W;
  const bool direct = s.C <= kDirectChannels, need_flow = grad_flow != nullptr;
  std::vector<WarpFootprint<T>> row(direct ? 0 : s.W);
  std::vector<T> gx(s.W), gy(s.W);
  const T* src = image + b * s.C * plane;
  for (int64_t i = row_begin; i < row_end; ++i) {
    const T* flow_x = flow + ((b * 2 + 0) * s.H + i) * s.W;
    const T* flow_y = flow + ((b * 2 + 1) * s.H + i) * s.W;
    const T* g = grad + b * s.C * plane + i * s.W;
    std::fill(gx.begin(), gx.end(), T(0));
    std::fill(gy.begin(), gy.end(), T(0));
    if (direct) {
      for (int64_t j = 0; j < s.W; ++j) {
        const auto f = warp_footprint<T>(s, i, j, flow_x[j], flow_y[j]);
        for (int64_t c = 0; c < s.C; ++c) {
          sample_backward(f, src + c * plane, g[c * plane + j],
                          grad_image_b == nullptr ? nullptr : grad_image_b + c * plane, need_flow, gx[j], gy[j]);
        }
        gx[j] *= f.grad_x;
        gy[j] *= f.grad_y;
      }
    } else {
      for (int64_t j = 0; j < s.W; ++j) row[j] = warp_footprint<T>(s, i, j, flow_x[j], flow_y[j]);
      for (int64_t c = 0; c < s.C; ++c) {
        for (int64_t j = 0; j < s.W; ++j) {  // in order: corners of neighbouring pixels coincide
          sample_backward(row[j], src + c * plane, g[c * plane + j],
                          grad_image_b == nullptr ? nullptr : grad_image_b + c * plane, need_flow, gx[j], gy[j]);
        }
      }
      for (int64_t j = 0; j < s.W; ++j) {
        gx[j] *= row[j].grad_x;
        gy[j] *= row[j].grad_y;
      }
    }
    if (need_flow) {
      std::copy(gx.begin(), gx.end(), grad_flow + ((b * 2 + 0) * s.H + i) * s.W);
      std::copy(gy.begin(), gy.end(), grad_flow + ((b * 2 + 1) * s.H + i) * s.W);
    }
  }
}

// --- Vectors of pixels along the row (the AVX2 build) ------------------------------------------------

// The footprints (warp.h's WarpFootprint) of the n <= size() pixels j … j + n − 1 of a row; lanes from
// n on read offset 0 with weight 0.
template <typename T>
struct VectorFootprint {
  using V = Vectorized<T>;
  using Int = at::vec::int_same_size_t<T>;
  static constexpr int64_t L = V::size();
  Int offset[4][L];
  V weight[4], inside[4];
  V fx, fy, grad_x, grad_y;
  bool interior;  // every lane: the identity of the padding (derivative 1), the whole cell inside

  void fill(const WarpSizes& s, int64_t i, int64_t j, int64_t n, const T* flow_x, const T* flow_y) {
    const V x = V::arange(static_cast<T>(j), 1) + (n == L ? V::loadu(flow_x + j) : V::loadu(flow_x + j, n));
    const V y = V(static_cast<T>(i)) + (n == L ? V::loadu(flow_y + j) : V::loadu(flow_y + j, n));
    const V cell = (x > V(0)) & (x < V(static_cast<T>(s.W - 1))) & (y > V(0)) & (y < V(static_cast<T>(s.H - 1)));
    interior = n == L && cell.zero_mask() == 0;
    if (interior) {
      using I = Vectorized<Int>;
      const V x0 = x.floor(), y0 = y.floor();
      fx = x - x0;
      fy = y - y0;
      const I o = at::vec::convert_to_int_of_same_size(y0 * V(static_cast<T>(s.W)) + x0);
      o.store(offset[0]);
      (o + I(1)).store(offset[1]);
      (o + I(s.W)).store(offset[2]);
      (o + I(s.W + 1)).store(offset[3]);
      const V one(1), wx = one - fx, wy = one - fy;
      weight[0] = wx * wy;
      weight[1] = fx * wy;
      weight[2] = wx * fy;
      weight[3] = fx * fy;
      inside[0] = inside[1] = inside[2] = inside[3] = one;
      grad_x = grad_y = one;
      return;
    }
    T lane_weight[4][L] = {}, lane_inside[4][L] = {};
    T lane_fx[L] = {}, lane_fy[L] = {}, lane_grad_x[L] = {}, lane_grad_y[L] = {};
    for (int64_t l = 0; l < L; ++l) {
      if (l >= n) {
        for (int k = 0; k < 4; ++k) offset[k][l] = 0;
        continue;
      }
      const auto f = warp_footprint<T>(s, i, j + l, flow_x[j + l], flow_y[j + l]);
      for (int k = 0; k < 4; ++k) {
        offset[k][l] = static_cast<Int>(f.offset[k]);
        lane_weight[k][l] = f.weight(k);
        lane_inside[k][l] = f.inside[k];
      }
      lane_fx[l] = f.fx;
      lane_fy[l] = f.fy;
      lane_grad_x[l] = f.grad_x;
      lane_grad_y[l] = f.grad_y;
    }
    for (int k = 0; k < 4; ++k) {
      weight[k] = V::loadu(lane_weight[k]);
      inside[k] = V::loadu(lane_inside[k]);
    }
    fx = V::loadu(lane_fx);
    fy = V::loadu(lane_fy);
    grad_x = V::loadu(lane_grad_x);
    grad_y = V::loadu(lane_grad_y);
  }

  // The four corner values of every lane in the plane src.
  void corners(const T* src, V (&v)[4]) const {
    if constexpr (std::is_same_v<T, float> && L == 8) {
      if (interior) {
        pairs(src, v[0], v[1]);
        pairs(src + (offset[2][0] - offset[0][0]), v[2], v[3]);
        return;
      }
    }
    for (int k = 0; k < 4; ++k) {
      T lanes[L];
      for (int64_t l = 0; l < L; ++l) lanes[l] = src[offset[k][l]];
      v[k] = V::loadu(lanes);
    }
  }

  V sample(const T* src) const {
    V v[4];
    corners(src, v);
    return bilinear(weight, v);
  }

  // The flow's gradient of one channel (grad g, into gx, gy) and its scatter into dst (if not null).
  void backward(int64_t n, const T* src, const V& g, T* dst, bool need_flow, V& gx, V& gy) const {
    if (need_flow) {
      V v[4];
      corners(src, v);
      if (!interior) {
        for (int k = 0; k < 4; ++k) v[k] = inside[k] * v[k];
      }
      bilinear_gradient(fx, fy, v, g, gx, gy);
    }
    if (dst != nullptr) {
      T a[4][L];
      for (int k = 0; k < 4; ++k) (weight[k] * g).store(a[k]);
      // pixel by pixel, in order: their corners may coincide (adding the pairs (x0, x0 + 1) as 64-bit
      // vectors was slower: the pairs of neighbouring pixels overlap, which defeats store forwarding)
      for (int64_t l = 0; l < n; ++l) {
        for (int k = 0; k < 4; ++k) dst[offset[k][l]] += a[k][l];
      }
    }
  }

 private:
  // (src[offset[0]], src[offset[0] + 1]) of every lane: one 64-bit load per lane, split into the even
  // and odd floats.
  void pairs(const float* src, V& first, V& second) const {
    double d[L];
    for (int64_t l = 0; l < L; ++l) std::memcpy(&d[l], src + offset[0][l], sizeof(double));
    using D = Vectorized<double>;
    std::tie(first, second) = at::vec::deinterleave2(at::vec::cast<float>(D(d[0], d[1], d[2], d[3])),
                                                     at::vec::cast<float>(D(d[4], d[5], d[6], d[7])));
  }
};

template <typename T>
inline Vectorized<T> load(const T* p, int64_t n) {
  return n == Vectorized<T>::size() ? Vectorized<T>::loadu(p) : Vectorized<T>::loadu(p, n);
}

template <typename T>
inline void store(T* p, const Vectorized<T>& v, int64_t n) {
  if (n == Vectorized<T>::size()) {
    v.store(p);
  } else {
    v.store(p, n);
  }
}

// Offsets computed in T are exact up to 2^mantissa bits.
template <typename T>
inline bool vector_offsets_exact(const WarpSizes& s) {
  return s.H * s.W <= (int64_t(1) << std::numeric_limits<T>::digits);
}

template <typename T>
void forward_rows_vector(const WarpSizes& s, const T* image, const T* flow, T* out, int64_t begin, int64_t end) {
  if (!vector_offsets_exact<T>(s)) return forward_rows_scalar(s, image, flow, out, begin, end);
  constexpr int64_t L = VectorFootprint<T>::L;
  const int64_t plane = s.H * s.W, vectors = (s.W + L - 1) / L;
  const bool direct = s.C <= kDirectChannels;
  std::vector<VectorFootprint<T>> row(direct ? 1 : vectors);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / s.H, i = r % s.H;
    const T* flow_x = flow + ((b * 2 + 0) * s.H + i) * s.W;
    const T* flow_y = flow + ((b * 2 + 1) * s.H + i) * s.W;
    const T* src = image + b * s.C * plane;
    T* dst = out + b * s.C * plane + i * s.W;
    if (direct) {
      for (int64_t j = 0; j < s.W; j += L) {
        const int64_t n = std::min(L, s.W - j);
        row[0].fill(s, i, j, n, flow_x, flow_y);
        for (int64_t c = 0; c < s.C; ++c) store(dst + c * plane + j, row[0].sample(src + c * plane), n);
      }
      continue;
    }
    for (int64_t v = 0; v < vectors; ++v) row[v].fill(s, i, v * L, std::min(L, s.W - v * L), flow_x, flow_y);
    for (int64_t c = 0; c < s.C; ++c) {
      for (int64_t v = 0; v < vectors; ++v) {
        store(dst + c * plane + v * L, row[v].sample(src + c * plane), std::min(L, s.W - v * L));
      }
    }
  }
}

template <typename T>
void backward_rows_vector(const WarpSizes& s, const T* grad, const T* image, const T* flow, int64_t b,
                          int64_t row_begin, int64_t row_end, T* grad_image_b, T* grad_flow) {
  if (!vector_offsets_exact<T>(s)) {
    return backward_rows_scalar(s, grad, image, flow, b, row_begin, row_end, grad_image_b, grad_flow);
  }
  using V = Vectorized<T>;
  constexpr int64_t L = VectorFootprint<T>::L;
  const int64_t plane = s.H * s.W, vectors = (s.W + L - 1) / L;
  const bool direct = s.C <= kDirectChannels, need_flow = grad_flow != nullptr;
  std::vector<VectorFootprint<T>> row(direct ? 1 : vectors);
  std::vector<V> gx(direct ? 1 : vectors), gy(direct ? 1 : vectors);
  const T* src = image + b * s.C * plane;
  // one vector v of the row: the footprint f, the flow's partial sums gx, gy
  const auto channels = [&](const VectorFootprint<T>& f, int64_t i, int64_t j, int64_t n, int64_t c_begin,
                            int64_t c_end, V& vgx, V& vgy) {
    for (int64_t c = c_begin; c < c_end; ++c) {
      const V g = load(grad + (b * s.C + c) * plane + i * s.W + j, n);
      f.backward(n, src + c * plane, g, grad_image_b == nullptr ? nullptr : grad_image_b + c * plane, need_flow, vgx,
                 vgy);
    }
  };
  const auto store_flow = [&](const VectorFootprint<T>& f, int64_t i, int64_t j, int64_t n, const V& vgx,
                              const V& vgy) {
    store(grad_flow + ((b * 2 + 0) * s.H + i) * s.W + j, vgx * f.grad_x, n);
    store(grad_flow + ((b * 2 + 1) * s.H + i) * s.W + j, vgy * f.grad_y, n);
  };
  for (int64_t i = row_begin; i < row_end; ++i) {
    const T* flow_x = flow + ((b * 2 + 0) * s.H + i) * s.W;
    const T* flow_y = flow + ((b * 2 + 1) * s.H + i) * s.W;
    if (direct) {
      for (int64_t j = 0; j < s.W; j += L) {
        const int64_t n = std::min(L, s.W - j);
        row[0].fill(s, i, j, n, flow_x, flow_y);
        gx[0] = gy[0] = V(0);
        channels(row[0], i, j, n, 0, s.C, gx[0], gy[0]);
        if (need_flow) store_flow(row[0], i, j, n, gx[0], gy[0]);
      }
      continue;
    }
    for (int64_t v = 0; v < vectors; ++v) {
      row[v].fill(s, i, v * L, std::min(L, s.W - v * L), flow_x, flow_y);
      gx[v] = gy[v] = V(0);
    }
    for (int64_t c = 0; c < s.C; ++c) {
      for (int64_t v = 0; v < vectors; ++v) channels(row[v], i, v * L, std::min(L, s.W - v * L), c, c + 1, gx[v], gy[v]);
    }
    if (need_flow) {
      for (int64_t v = 0; v < vectors; ++v) store_flow(row[v], i, v * L, std::min(L, s.W - v * L), gx[v], gy[v]);
    }
  }
}

template <typename T>
const WarpKernels<T>& warp_kernels() {
#ifdef MCMRI_CPU_BASELINE_PASS
  static const WarpKernels<T> table{&forward_rows_scalar<T>, &backward_rows_scalar<T>};
#else
  static const WarpKernels<T> table{&forward_rows_vector<T>, &backward_rows_vector<T>};
#endif
  return table;
}
MCMRI_CPU_FLOAT_KERNELS(warp_kernels, WarpKernels)

}  // namespace mcmri_fast::cpu::MCMRI_CPU_ISA

#ifdef MCMRI_CPU_BASELINE_PASS
#include <ATen/Parallel.h>

#include "parallel_grain.h"

namespace mcmri_fast::cpu {

MCMRI_CPU_PICK_KERNELS(warp_kernels, WarpKernels)

namespace {

at::Tensor warp_fwd(const at::Tensor& image, const at::Tensor& flow, int64_t padding, bool align_corners) {
  const auto s = check_warp_args("warp_fwd", image, flow, padding, align_corners);
  auto out = at::empty_like(image, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "warp_fwd_cpu", [&] {
    const auto& k = warp_kernels<scalar_t>();
    at::parallel_for(0, s.B * s.H, parallel_grain(s.W * s.C), [&](int64_t begin, int64_t end) {
      k.forward_rows(s, image.const_data_ptr<scalar_t>(), flow.const_data_ptr<scalar_t>(),
                     out.mutable_data_ptr<scalar_t>(), begin, end);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> warp_bwd(const at::Tensor& grad, const at::Tensor& image, const at::Tensor& flow,
                                            int64_t padding, bool align_corners, bool need_image, bool need_flow) {
  const auto s = check_warp_args("warp_bwd", image, flow, padding, align_corners, &grad);
  auto grad_image = need_image ? at::zeros_like(image, at::MemoryFormat::Contiguous) : image.new_empty({0});
  auto grad_flow = need_flow ? at::empty_like(flow, at::MemoryFormat::Contiguous) : flow.new_empty({0});
  if (image.numel() == 0 || !(need_image || need_flow)) {
    if (need_flow) grad_flow.zero_();
    return {grad_image, grad_flow};
  }
  // Blocks of rows per sample: enough blocks for every thread; one per sample when only the flow's
  // gradient is wanted would waste threads, so rows are split the same way then (no buffers needed).
  const int64_t threads = at::get_num_threads();
  const int64_t parts = std::clamp<int64_t>((threads + s.B - 1) / s.B, 1, s.H);
  at::Tensor extra;  // the scatter buffers of blocks 1 … parts − 1 of every sample
  if (need_image && parts > 1) extra = at::zeros({parts - 1, s.B, s.C, s.H, s.W}, image.options());
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "warp_bwd_cpu", [&] {
    const auto& k = warp_kernels<scalar_t>();
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    const scalar_t* im = image.const_data_ptr<scalar_t>();
    const scalar_t* fl = flow.const_data_ptr<scalar_t>();
    scalar_t* gi = need_image ? grad_image.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* ge = extra.defined() ? extra.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* gf = need_flow ? grad_flow.mutable_data_ptr<scalar_t>() : nullptr;
    const int64_t sample = s.C * s.H * s.W;
    at::parallel_for(0, s.B * parts, 1, [&](int64_t begin, int64_t end) {
      for (int64_t task = begin; task < end; ++task) {
        const int64_t b = task / parts, part = task % parts;
        const int64_t row_begin = s.H * part / parts, row_end = s.H * (part + 1) / parts;
        scalar_t* target = nullptr;
        if (gi != nullptr) target = part == 0 ? gi + b * sample : ge + ((part - 1) * s.B + b) * sample;
        k.backward_rows(s, g, im, fl, b, row_begin, row_end, target, gf);
      }
    });
  });
  // in block order (deterministic)
  for (int64_t part = 1; part < parts && extra.defined(); ++part) grad_image.add_(extra[part - 1]);
  return {grad_image, grad_flow};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("warp_fwd", &warp_fwd);
  m.impl("warp_bwd", &warp_bwd);
}

}  // namespace mcmri_fast::cpu
#endif
