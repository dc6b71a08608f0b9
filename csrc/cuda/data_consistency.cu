// CUDA kernels of the data-consistency spectral blend (the CPU code in csrc/cpu/data_consistency.cpp
// is the reference). Memory-bound elementwise work over spec [B, C, H, W]:
//   - one warp per row r = (b, c, i): a block of 32 x 8 threads handles 8 rows, grid-stride over rows;
//   - the lanes stride over the W columns: coalesced float2 / double2 accesses of spec and grad (which
//     are contiguous); src, mask, weight and grad_src are indexed through their strides (int64 offsets,
//     0 strides for broadcast inputs), so their accesses are coalesced when their W stride is 1 (the
//     source column sj = (j + shift_w) mod W is contiguous across a warp but for one wrap point) and
//     strided otherwise (e.g. an H-major FFT output, stride_w = H: correct, the caller picks the layout);
//   - the backward reduces its per-row weight-gradient partial with warp shuffles, and lane 0 writes it
//     to grad_weight_rows[r] ([B, C, H]): a fixed order, no atomics, deterministic.
// No torch headers here: the binding is data_consistency_binding.cpp. Nothing in it needs sm_80+.
#include <climits>
#include <cstdint>

#include <cuda_runtime.h>

#include "complex_vec.h"
#include "data_consistency_launch.h"

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
__host__ __device__ __forceinline__ RowOf<T> row_of(const DcBlendShape& s, int64_t r, const T* weight) {
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
__host__ __device__ __forceinline__ void fwd_row(const DcBlendShape& s, int64_t r, int lane, int lanes,
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
__host__ __device__ __forceinline__ T bwd_row(const DcBlendShape& s, int64_t r, int lane, int lanes, vec_t<T>* grad,
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
    data_consistency_fwd_kernel(DcBlendShape s, int64_t rows, vec_t<T>* spec, const vec_t<T>* src,
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
    data_consistency_bwd_kernel(DcBlendShape s, int64_t rows, vec_t<T>* grad, const vec_t<T>* src,
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

// Rows to launch and the grid; false when the sizes are out of what the kernels index (W, and
// j + shift_w < 2 W, must fit an int).
inline bool grid_of(const DcBlendShape& s, int64_t* rows, dim3* grid) {
  if (s.W > INT_MAX / 2 || s.B < 0 || s.C < 0 || s.H < 0 || s.W < 0) return false;
  *rows = s.B * s.C * s.H;
  const int64_t blocks = (*rows + kRowsPerBlock - 1) / kRowsPerBlock;
  *grid = dim3(static_cast<unsigned>(blocks < INT_MAX ? blocks : INT_MAX));  // grid-stride beyond
  return true;
}

template <typename T>
cudaError_t launch_fwd(const DcBlendShape& s, vec_t<T>* spec, const vec_t<T>* src, const uint8_t* mask,
                       const T* weight, const vec_t<T>* phase_h, const vec_t<T>* phase_w, cudaStream_t stream) {
  int64_t rows;
  dim3 grid;
  if (!grid_of(s, &rows, &grid)) return cudaErrorInvalidValue;
  if (rows == 0 || s.W == 0) return cudaSuccess;
  data_consistency_fwd_kernel<T><<<grid, dim3(kWarp, kRowsPerBlock), 0, stream>>>(s, rows, spec, src, mask, weight,
                                                                                  phase_h, phase_w);
  return cudaGetLastError();
}

template <typename T, bool kSrcGrad, bool kWeightGrad>
cudaError_t launch_bwd_as(const DcBlendShape& s, int64_t rows, dim3 grid, vec_t<T>* grad, const vec_t<T>* src,
                          const uint8_t* mask, const T* weight, const vec_t<T>* phase_h, const vec_t<T>* phase_w,
                          const vec_t<T>* spec, vec_t<T>* grad_src, T* grad_weight_rows, cudaStream_t stream) {
  data_consistency_bwd_kernel<T, kSrcGrad, kWeightGrad><<<grid, dim3(kWarp, kRowsPerBlock), 0, stream>>>(
      s, rows, grad, src, mask, weight, phase_h, phase_w, spec, grad_src, grad_weight_rows);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_bwd(const DcBlendShape& s, vec_t<T>* grad, const vec_t<T>* src, const uint8_t* mask,
                       const T* weight, const vec_t<T>* phase_h, const vec_t<T>* phase_w, const vec_t<T>* spec,
                       vec_t<T>* grad_src, T* grad_weight_rows, cudaStream_t stream) {
  int64_t rows;
  dim3 grid;
  if (!grid_of(s, &rows, &grid)) return cudaErrorInvalidValue;
  if ((spec == nullptr) != (grad_weight_rows == nullptr)) return cudaErrorInvalidValue;
  // With W == 0 the rows are empty but their weight-gradient partials still exist: the caller zeroes them.
  if (rows == 0 || s.W == 0) return cudaSuccess;
  const bool src_grad = grad_src != nullptr;
  const bool weight_grad = grad_weight_rows != nullptr;
  if (src_grad && weight_grad)
    return launch_bwd_as<T, true, true>(s, rows, grid, grad, src, mask, weight, phase_h, phase_w, spec, grad_src,
                                        grad_weight_rows, stream);
  if (src_grad)
    return launch_bwd_as<T, true, false>(s, rows, grid, grad, src, mask, weight, phase_h, phase_w, spec, grad_src,
                                         grad_weight_rows, stream);
  if (weight_grad)
    return launch_bwd_as<T, false, true>(s, rows, grid, grad, src, mask, weight, phase_h, phase_w, spec, grad_src,
                                         grad_weight_rows, stream);
  return launch_bwd_as<T, false, false>(s, rows, grid, grad, src, mask, weight, phase_h, phase_w, spec, grad_src,
                                        grad_weight_rows, stream);
}

}  // namespace

cudaError_t launch_data_consistency_fwd(const DcBlendShape& s, float2* spec, const float2* src, const uint8_t* mask,
                                        const float* weight, const float2* phase_h, const float2* phase_w,
                                        cudaStream_t stream) {
  return launch_fwd<float>(s, spec, src, mask, weight, phase_h, phase_w, stream);
}

cudaError_t launch_data_consistency_fwd(const DcBlendShape& s, double2* spec, const double2* src,
                                        const uint8_t* mask, const double* weight, const double2* phase_h,
                                        const double2* phase_w, cudaStream_t stream) {
  return launch_fwd<double>(s, spec, src, mask, weight, phase_h, phase_w, stream);
}

cudaError_t launch_data_consistency_bwd(const DcBlendShape& s, float2* grad, const float2* src, const uint8_t* mask,
                                        const float* weight, const float2* phase_h, const float2* phase_w,
                                        const float2* spec, float2* grad_src, float* grad_weight_rows,
                                        cudaStream_t stream) {
  return launch_bwd<float>(s, grad, src, mask, weight, phase_h, phase_w, spec, grad_src, grad_weight_rows, stream);
}

cudaError_t launch_data_consistency_bwd(const DcBlendShape& s, double2* grad, const double2* src,
                                        const uint8_t* mask, const double* weight, const double2* phase_h,
                                        const double2* phase_w, const double2* spec, double2* grad_src,
                                        double* grad_weight_rows, cudaStream_t stream) {
  return launch_bwd<double>(s, grad, src, mask, weight, phase_h, phase_w, spec, grad_src, grad_weight_rows, stream);
}

}  // namespace mcmri_fast::cuda
