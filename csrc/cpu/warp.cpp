// CPU kernels of the warp (the contract and the per-pixel arithmetic: csrc/warp.h). Rows (b, i) in
// parallel. With few channels (C <= kDirectChannels: DUN-SA's images) each pixel's footprint is used at
// once for its channels; with more, the footprints of a row's W pixels are computed once into small
// buffers and the channels run over them with contiguous loops along the row. Plain loops, compiled
// once: no per-ISA builds (isa_builds.h).
//
// The backward to the flow is per pixel (a sum over the channels): no conflicts. The backward to the
// image scatters into the four corners of every sample, which neighbouring rows share: the rows of one
// sample are split into `parts` blocks, each scattering into a buffer of its own (block 0 into the
// gradient itself), summed at the end; with B at least the number of threads, every sample is one block
// and nothing is summed. (ATen's grid_sampler_2d_backward on the CPU runs one thread per sample: for a
// batch of one it is single-threaded.)
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "../warp.h"
#include "parallel_grain.h"

namespace mcmri_fast::cpu {
namespace {

// The footprints of the W pixels of row (b, i), in structure-of-arrays form.
template <typename T>
struct RowFootprints {
  std::vector<int64_t> offset[4];
  std::vector<T> inside[4], weight[4];
  std::vector<T> fx, fy, grad_x, grad_y;

  explicit RowFootprints(int64_t W) : fx(W), fy(W), grad_x(W), grad_y(W) {
    for (int k = 0; k < 4; ++k) {
      offset[k].resize(W);
      inside[k].resize(W);
      weight[k].resize(W);
    }
  }

  void fill(const WarpSizes& s, const T* flow, int64_t b, int64_t i) {
    const T* flow_x = flow + ((b * 2 + 0) * s.H + i) * s.W;
    const T* flow_y = flow + ((b * 2 + 1) * s.H + i) * s.W;
    for (int64_t j = 0; j < s.W; ++j) {
      const auto f = warp_footprint<T>(s, i, j, flow_x[j], flow_y[j]);
      for (int k = 0; k < 4; ++k) {
        offset[k][j] = f.offset[k];
        inside[k][j] = f.inside[k];
        weight[k][j] = f.weight(k);
      }
      fx[j] = f.fx;
      fy[j] = f.fy;
      grad_x[j] = f.grad_x;
      grad_y[j] = f.grad_y;
    }
  }
};

// Channels up to which a pixel's footprint is used directly rather than buffered for the row.
constexpr int64_t kDirectChannels = 4;

template <typename T>
inline T sample(const WarpFootprint<T>& f, const T* src) {
  return f.weight(0) * src[f.offset[0]] + f.weight(1) * src[f.offset[1]] + f.weight(2) * src[f.offset[2]] +
         f.weight(3) * src[f.offset[3]];
}

template <typename T>
void warp_forward(const WarpSizes& s, const T* image, const T* flow, T* out) {
  const int64_t plane = s.H * s.W;
  at::parallel_for(0, s.B * s.H, parallel_grain(s.W * s.C), [&](int64_t begin, int64_t end) {
    if (s.C <= kDirectChannels) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / s.H, i = r % s.H;
        const T* flow_x = flow + ((b * 2 + 0) * s.H + i) * s.W;
        const T* flow_y = flow + ((b * 2 + 1) * s.H + i) * s.W;
        for (int64_t j = 0; j < s.W; ++j) {
          const auto f = warp_footprint<T>(s, i, j, flow_x[j], flow_y[j]);
          for (int64_t c = 0; c < s.C; ++c) {
            out[(b * s.C + c) * plane + i * s.W + j] = sample(f, image + (b * s.C + c) * plane);
          }
        }
      }
      return;
    }
    RowFootprints<T> row(s.W);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / s.H, i = r % s.H;
      row.fill(s, flow, b, i);
      for (int64_t c = 0; c < s.C; ++c) {
        const T* src = image + (b * s.C + c) * plane;
        T* dst = out + (b * s.C + c) * plane + i * s.W;
        for (int64_t j = 0; j < s.W; ++j) {
          dst[j] = row.weight[0][j] * src[row.offset[0][j]] + row.weight[1][j] * src[row.offset[1][j]] +
                   row.weight[2][j] * src[row.offset[2][j]] + row.weight[3][j] * src[row.offset[3][j]];
        }
      }
    }
  });
}

// Rows [row_begin, row_end) of sample b: the flow's gradient of those pixels (if grad_flow) and their
// scatter into grad_image_b, the [C, H, W] planes of sample b of a gradient buffer (if given).
template <typename T>
void warp_backward_rows(const WarpSizes& s, const T* grad, const T* image, const T* flow, int64_t b, int64_t row_begin,
                        int64_t row_end, T* grad_image_b, T* grad_flow) {
  const int64_t plane = s.H * s.W;
  if (s.C <= kDirectChannels) {
    for (int64_t i = row_begin; i < row_end; ++i) {
      const T* flow_x = flow + ((b * 2 + 0) * s.H + i) * s.W;
      const T* flow_y = flow + ((b * 2 + 1) * s.H + i) * s.W;
      for (int64_t j = 0; j < s.W; ++j) {
        const auto f = warp_footprint<T>(s, i, j, flow_x[j], flow_y[j]);
        T gx = 0, gy = 0;
        for (int64_t c = 0; c < s.C; ++c) {
          const T g = grad[(b * s.C + c) * plane + i * s.W + j];
          if (grad_flow != nullptr) {
            const T* src = image + (b * s.C + c) * plane;
            const T v0 = f.inside[0] * src[f.offset[0]], v1 = f.inside[1] * src[f.offset[1]];
            const T v2 = f.inside[2] * src[f.offset[2]], v3 = f.inside[3] * src[f.offset[3]];
            gx += g * ((T(1) - f.fy) * (v1 - v0) + f.fy * (v3 - v2));
            gy += g * ((T(1) - f.fx) * (v2 - v0) + f.fx * (v3 - v1));
          }
          if (grad_image_b != nullptr) {
            T* dst = grad_image_b + c * plane;
            for (int k = 0; k < 4; ++k) dst[f.offset[k]] += f.weight(k) * g;
          }
        }
        if (grad_flow != nullptr) {
          grad_flow[((b * 2 + 0) * s.H + i) * s.W + j] = gx * f.grad_x;
          grad_flow[((b * 2 + 1) * s.H + i) * s.W + j] = gy * f.grad_y;
        }
      }
    }
    return;
  }
  RowFootprints<T> row(s.W);
  std::vector<T> gx(s.W), gy(s.W);
  for (int64_t i = row_begin; i < row_end; ++i) {
    row.fill(s, flow, b, i);
    std::fill(gx.begin(), gx.end(), T(0));
    std::fill(gy.begin(), gy.end(), T(0));
    for (int64_t c = 0; c < s.C; ++c) {
      const T* g = grad + (b * s.C + c) * plane + i * s.W;
      if (grad_flow != nullptr) {
        const T* src = image + (b * s.C + c) * plane;
        for (int64_t j = 0; j < s.W; ++j) {
          const T v0 = row.inside[0][j] * src[row.offset[0][j]], v1 = row.inside[1][j] * src[row.offset[1][j]];
          const T v2 = row.inside[2][j] * src[row.offset[2][j]], v3 = row.inside[3][j] * src[row.offset[3][j]];
          const T fx = row.fx[j], fy = row.fy[j];
          gx[j] += g[j] * ((T(1) - fy) * (v1 - v0) + fy * (v3 - v2));
          gy[j] += g[j] * ((T(1) - fx) * (v2 - v0) + fx * (v3 - v1));
        }
      }
      if (grad_image_b != nullptr) {
        T* dst = grad_image_b + c * plane;
        for (int64_t j = 0; j < s.W; ++j) {  // in order: corners of neighbouring pixels coincide
          for (int k = 0; k < 4; ++k) dst[row.offset[k][j]] += row.weight[k][j] * g[j];
        }
      }
    }
    if (grad_flow != nullptr) {
      T* out_x = grad_flow + ((b * 2 + 0) * s.H + i) * s.W;
      T* out_y = grad_flow + ((b * 2 + 1) * s.H + i) * s.W;
      for (int64_t j = 0; j < s.W; ++j) {
        out_x[j] = gx[j] * row.grad_x[j];
        out_y[j] = gy[j] * row.grad_y[j];
      }
    }
  }
}

at::Tensor warp_fwd(const at::Tensor& image, const at::Tensor& flow, int64_t padding, bool align_corners) {
  const auto s = check_warp_args("warp_fwd", image, flow, padding, align_corners);
  auto out = at::empty_like(image, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(image.scalar_type(), "warp_fwd_cpu", [&] {
    warp_forward<scalar_t>(s, image.const_data_ptr<scalar_t>(), flow.const_data_ptr<scalar_t>(),
                           out.mutable_data_ptr<scalar_t>());
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
        warp_backward_rows<scalar_t>(s, g, im, fl, b, row_begin, row_end, target, gf);
      }
    });
  });
  if (extra.defined()) grad_image.add_(extra.sum(0));
  return {grad_image, grad_flow};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CPU, m) {
  m.impl("warp_fwd", &warp_fwd);
  m.impl("warp_bwd", &warp_bwd);
}

}  // namespace mcmri_fast::cpu
