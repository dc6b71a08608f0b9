// CUDA kernels of the data-consistency spectral blend (the contract: csrc/data_consistency.h; the CPU
// code in csrc/cpu/data_consistency.cpp is the reference). Memory-bound elementwise work over spec
// [B, C, H, W]:
//   - one warp per row r = (b, c, i): a block of 32 x 8 threads handles 8 rows, grid-stride over rows;
//   - the lanes stride over the W columns: coalesced float2 / double2 accesses of spec and grad (which
//     are contiguous); src, mask, weight and grad_src are indexed through their strides (int64 offsets,
//     0 strides for broadcast inputs), so their accesses are coalesced when their W stride is 1 (the
//     source column sj = (j + shift_w) mod W is contiguous across a warp but for one wrap point) and
//     strided otherwise (e.g. an H-major FFT output, stride_w = H: correct, the caller picks the layout);
//   - the backward reduces its per-row weight-gradient partial with warp shuffles, and lane 0 writes it
//     to grad_weight_rows[r] ([B, C, H]): a fixed order, no atomics, deterministic.
// Complex data are float2 / double2 (complex_vec.h). The column ops (dc_blend_columns_*) have no CUDA
// implementation: listing the sampled columns would synchronise with the host. Nothing in it needs sm_80+.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>
#include <cstdint>
#include <type_traits>

#include "../data_consistency.h"
#include "cuda_types.h"

namespace mcmri_fast::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // blockDim = (32, 8)

// Complex arithmetic on float2 / double2 with the operation order of c10::complex.
template <typename V>
__host__ __device__ __forceinline__ V cmul(V a, V b) {
  V r;
  r.x = a.x * b.x - a.y * b.y;
  r.y = a.x * b.y + a.y * b.x;
  return r;
}
template <typename V>
__host__ __device__ __forceinline__ V conj_mul(V a, V b) {  // conj(a) * b
  V r;
  r.x = a.x * b.x + a.y * b.y;
  r.y = a.x * b.y - a.y * b.x;
  return r;
}
template <typename V, typename T>
__host__ __device__ __forceinline__ V scale(T s, V a) {
  V r;
  r.x = s * a.x;
  r.y = s * a.y;
  return r;
}

// Unroll hint for the device pass only (the host compiler of __host__ __device__ code would warn).
#ifdef __CUDA_ARCH__
#define DC_DEVICE_UNROLL2 _Pragma("unroll 2")
#else
#define DC_DEVICE_UNROLL2
#endif

// Read-only loads of the small inputs (mask, weight, phases) through the read-only data cache.
template <typename P>
__host__ __device__ __forceinline__ P ro_load(const P* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

// The row r = (b, c, i) of spec: offsets of its row in spec / grad, of its source row si in src,
// mask and grad_src (through their strides), and its weight.
template <typename T>
struct RowOf {
  int64_t row;       // r * W: spec, grad (contiguous)
  int64_t src;       // src[b, c, si, 0]
  int64_t mask;      // mask[b, si, 0]
  int64_t grad_src;  // grad_src[b, c, si, 0]
  int i;
  T w;
};

template <typename T>
__host__ __device__ __forceinline__ RowOf<T> row_of(const BlendSizes& s, int64_t r, const T* weight) {
  RowOf<T> row;
  const int64_t i = r % s.H;
  const int64_t bc = r / s.H;
  const int64_t c = bc % s.C;
  const int64_t b = bc / s.C;
  const int64_t si = i + s.shift_h < s.H ? i + s.shift_h : i + s.shift_h - s.H;
  row.row = r * s.W;
  row.src = b * s.src_stride[0] + c * s.src_stride[1] + si * s.src_stride[2];
  row.mask = b * s.mask_stride[0] + si * s.mask_stride[1];
  row.grad_src = b * s.grad_src_stride[0] + c * s.grad_src_stride[1] + si * s.grad_src_stride[2];
  row.i = static_cast<int>(i);
  row.w = ro_load(weight + c * s.weight_stride);
  return row;
}

// The part of row r that lane `lane` of `lanes` handles: columns j = lane, lane + lanes, ...
// (__host__ __device__ so that a host program can check the logic against the CPU code.)
template <typename T>
__host__ __device__ __forceinline__ void fwd_row(const BlendSizes& s, int64_t r, int lane, int lanes,
                                                 vec_t<T>* spec, const vec_t<T>* src,
                                                 const uint8_t* __restrict__ mask, const T* __restrict__ weight,
                                                 const vec_t<T>* __restrict__ phase_h,
                                                 const vec_t<T>* __restrict__ phase_w) {
  using V = vec_t<T>;
  const RowOf<T> row = row_of<T>(s, r, weight);
  const int W = static_cast<int>(s.W);
  const int shift = static_cast<int>(s.shift_w);
  V* out = spec + row.row;
  const V* src_row = src + row.src;
  const uint8_t* mask_row = mask + row.mask;
  const int64_t src_w = s.src_stride[3];
  const int64_t mask_w = s.mask_stride[2];
  const V phi_i = ro_load(phase_h + row.i);
  const T w = row.w;
  DC_DEVICE_UNROLL2
  for (int j = lane; j < W; j += lanes) {
    int sj = j + shift;
    if (sj >= W) sj -= W;
    if (ro_load(mask_row + sj * mask_w)) {
      const V k = out[j];
      const V p = cmul(cmul(phi_i, ro_load(phase_w + j)), src_row[sj * src_w]);
      V o;
      o.x = k.x + w * (p.x - k.x);
      o.y = k.y + w * (p.y - k.y);
      out[j] = o;
    }
  }
}

// Returns this lane's partial of the weight gradient of row r (0 unless kWeightGrad).
template <typename T, bool kSrcGrad, bool kWeightGrad>
__host__ __device__ __forceinline__ T bwd_row(const BlendSizes& s, int64_t r, int lane, int lanes, vec_t<T>* grad,
                                              const vec_t<T>* src, const uint8_t* __restrict__ mask,
                                              const T* __restrict__ weight, const vec_t<T>* __restrict__ phase_h,
                                              const vec_t<T>* __restrict__ phase_w, const vec_t<T>* spec,
                                              vec_t<T>* grad_src) {
  using V = vec_t<T>;
  const RowOf<T> row = row_of<T>(s, r, weight);
  const int W = static_cast<int>(s.W);
  const int shift = static_cast<int>(s.shift_w);
  V* g = grad + row.row;
  const V* src_row = src + row.src;
  const uint8_t* mask_row = mask + row.mask;
  const V* spec_row = kWeightGrad ? spec + row.row : nullptr;
  V* gsrc_row = kSrcGrad ? grad_src + row.grad_src : nullptr;
  const int64_t src_w = s.src_stride[3];
  const int64_t mask_w = s.mask_stride[2];
  const int64_t gsrc_w = s.grad_src_stride[3];
  const V phi_i = ro_load(phase_h + row.i);
  const T w = row.w;
  const T one_minus_w = T(1) - w;
  T acc = 0;  // float32 accumulates in float32, float64 in float64
  DC_DEVICE_UNROLL2
  for (int j = lane; j < W; j += lanes) {
    int sj = j + shift;
    if (sj >= W) sj -= W;
    if (ro_load(mask_row + sj * mask_w)) {
      const V gy = g[j];
      const V phi = cmul(phi_i, ro_load(phase_w + j));
      if (kSrcGrad) gsrc_row[sj * gsrc_w] = conj_mul(phi, scale(w, gy));
      if (kWeightGrad) {
        const V ps = cmul(phi, src_row[sj * src_w]);
        const V k = spec_row[j];
        acc += gy.x * (ps.x - k.x) + gy.y * (ps.y - k.y);  // Re(conj(gy) (phi src - spec))
      }
      g[j] = scale(one_minus_w, gy);
    } else if (kSrcGrad) {
      V z;
      z.x = T(0);
      z.y = T(0);
      gsrc_row[sj * gsrc_w] = z;
    }
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kWarp* kRowsPerBlock)
    data_consistency_fwd_kernel(BlendSizes s, int64_t rows, vec_t<T>* spec, const vec_t<T>* src,
                                const uint8_t* __restrict__ mask, const T* __restrict__ weight,
                                const vec_t<T>* __restrict__ phase_h, const vec_t<T>* __restrict__ phase_w) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y; r < rows; r += stride) {
    fwd_row<T>(s, r, threadIdx.x, kWarp, spec, src, mask, weight, phase_h, phase_w);
  }
}

// All lanes of a warp share threadIdx.y, hence the row and the trip count of the row loop, so the
// full-mask shuffles below are reached by the whole warp together.
template <typename T, bool kSrcGrad, bool kWeightGrad>
__global__ void __launch_bounds__(kWarp* kRowsPerBlock)
    data_consistency_bwd_kernel(BlendSizes s, int64_t rows, vec_t<T>* grad, const vec_t<T>* src,
                                const uint8_t* __restrict__ mask, const T* __restrict__ weight,
                                const vec_t<T>* __restrict__ phase_h, const vec_t<T>* __restrict__ phase_w,
                                const vec_t<T>* spec, vec_t<T>* grad_src, T* grad_weight_rows) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kRowsPerBlock;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.y; r < rows; r += stride) {
    T acc = bwd_row<T, kSrcGrad, kWeightGrad>(s, r, threadIdx.x, kWarp, grad, src, mask, weight, phase_h, phase_w,
                                              spec, grad_src);
    if (kWeightGrad) {
#pragma unroll
      for (int offset = kWarp / 2; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
      if (threadIdx.x == 0) grad_weight_rows[r] = acc;
    }
  }
}


// One warp per row, kRowsPerBlock rows a block; beyond INT_MAX blocks the kernels grid-stride.
dim3 grid_of(int64_t rows) {
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  return dim3(static_cast<unsigned>(blocks < INT_MAX ? blocks : INT_MAX));
}

// The kernels index columns as int: W, and j + shift_w < 2 W, must fit one.
void check_width(const BlendSizes& s) {
  TORCH_CHECK(s.W <= INT_MAX / 2, "dc_blend: W = ", s.W, " is too large for the CUDA kernels");
}

void dc_blend_(at::Tensor spec, const at::Tensor& src, const at::Tensor& mask, const at::Tensor& weight,
               const at::Tensor& phase_h, const at::Tensor& phase_w, int64_t shift_h, int64_t shift_w) {
  const auto s = check_blend_args(spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w);
  if (spec.numel() == 0) return;
  check_width(s);
  c10::cuda::CUDAGuard guard(spec.device());
  const int64_t rows = s.B * s.C * s.H;
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_cuda", [&] {
    data_consistency_fwd_kernel<scalar_t>
        <<<grid_of(rows), dim3(kWarp, kRowsPerBlock), 0, c10::cuda::getCurrentCUDAStream()>>>(
            s, rows, vec_ptr<scalar_t>(spec), vec_cptr<scalar_t>(src), mask.const_data_ptr<uint8_t>(),
            weight.const_data_ptr<scalar_t>(), vec_cptr<scalar_t>(phase_h), vec_cptr<scalar_t>(phase_w));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// Returns grad_weight_rows [B, C, H] (empty without spec); writes grad_src in place when given.
at::Tensor dc_blend_backward_(at::Tensor grad_spec, const at::Tensor& src, const at::Tensor& mask,
                              const at::Tensor& weight, const at::Tensor& phase_h, const at::Tensor& phase_w,
                              int64_t shift_h, int64_t shift_w, const c10::optional<at::Tensor>& spec,
                              const c10::optional<at::Tensor>& grad_src) {
  const auto s =
      check_blend_backward_args(grad_spec, src, mask, weight, phase_h, phase_w, shift_h, shift_w, spec, grad_src);
  c10::cuda::CUDAGuard guard(grad_spec.device());
  auto grad_weight_rows = spec.has_value() ? at::empty({s.B, s.C, s.H}, weight.options()) : at::empty({0}, weight.options());
  if (grad_spec.numel() == 0) {
    // No elements (W may be 0 with rows left): the partial sums are 0, as on the CPU; grad_src is empty.
    grad_weight_rows.zero_();
    return grad_weight_rows;
  }
  check_width(s);
  const int64_t rows = s.B * s.C * s.H;
  AT_DISPATCH_FLOATING_TYPES(weight.scalar_type(), "dc_blend_backward_cuda", [&] {
    // The kernel for the outputs asked for: grad_src and the weight gradient are compile-time switches.
    const auto launch = [&](auto src_grad, auto weight_grad) {
      data_consistency_bwd_kernel<scalar_t, decltype(src_grad)::value, decltype(weight_grad)::value>
          <<<grid_of(rows), dim3(kWarp, kRowsPerBlock), 0, c10::cuda::getCurrentCUDAStream()>>>(
              s, rows, vec_ptr<scalar_t>(grad_spec), vec_cptr<scalar_t>(src), mask.const_data_ptr<uint8_t>(),
              weight.const_data_ptr<scalar_t>(), vec_cptr<scalar_t>(phase_h), vec_cptr<scalar_t>(phase_w),
              spec.has_value() ? vec_cptr<scalar_t>(*spec) : nullptr,
              grad_src.has_value() ? vec_ptr<scalar_t>(*grad_src) : nullptr,
              spec.has_value() ? grad_weight_rows.mutable_data_ptr<scalar_t>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    using yes = std::true_type;
    using no = std::false_type;
    if (grad_src.has_value()) {
      spec.has_value() ? launch(yes{}, yes{}) : launch(yes{}, no{});
    } else {
      spec.has_value() ? launch(no{}, yes{}) : launch(no{}, no{});
    }
  });
  return grad_weight_rows;
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("dc_blend_", &dc_blend_);
  m.impl("dc_blend_backward_", &dc_blend_backward_);
}

}  // namespace mcmri_fast::cuda
