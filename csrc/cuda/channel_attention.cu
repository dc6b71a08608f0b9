// CUDA kernels of channel attention's N-sized passes (the contract: csrc/channel_attention.h; the CPU
// code in csrc/cpu/channel_attention.cpp and the reference define what they compute;
// mcmri_fast/ops/channel_attention.py orchestrates them):
//   - gram: the Gram a bᵀ and the squared row norms are a reduction over all N pixels, split across
//     blocks: block (s, bh) reduces pixel chunk s of head bh, tile by tile through shared memory; its
//     threads own (entry, lane) pairs (entries: the da x db Gram values, then the da + db squared norms;
//     lanes split a tile's pixels when there are fewer entries than threads) with accumulators in
//     shared memory, summed over the lanes at the end into the block's own partial slot, which torch
//     then sums over the splits in order (deterministic, no atomics);
//   - fwd (out = attn v) and bwd (gq, gk, gv from one read of q, k, grad_out): one thread per pixel
//     of a head; the tiny per-head matrices are read through the read-only cache (a warp reads the same
//     address: a broadcast), the pixel's column of q / k / v / grad_out from global memory (coalesced
//     across the warp, re-read per output row from L1).
// Values are converted to the accumulation type (float, double for double) on load. Nothing in it needs
// sm_80+.
#include <ATen/AccumulateType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <climits>
#include <cstdint>
#include <tuple>

#include "../channel_attention.h"
#include "cuda_types.h"

namespace mcmri_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxTile = 128;               // pixels per shared-memory tile of the Gram kernel
constexpr int64_t kMinSplitPixels = 1024;   // pixels per Gram block at least
constexpr int64_t kTargetBlocks = 512;      // Gram blocks to aim for (a few per SM)
constexpr size_t kMaxSharedBytes = 48 * 1024;  // the default dynamic shared-memory limit

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_acc(float x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <typename T>
__device__ __forceinline__ T from_acc(double x) { return x; }

template <typename Acc>
__device__ __forceinline__ Acc ro_load(const Acc* p) { return __ldg(p); }

// Entries of the Gram block: da * db Gram values, then (with norms) da + db squared row norms.
struct GramLayout {
  int da, db, entries, lanes, pairs, tile;
};

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
    channel_attention_gram_kernel(const T* __restrict__ a, const T* __restrict__ b, GramLayout g, int64_t N,
                                  int64_t chunk, int64_t splits, bool with_norms, Acc* __restrict__ gram_partial,
                                  Acc* __restrict__ a_sq_partial, Acc* __restrict__ b_sq_partial) {
  extern __shared__ __align__(sizeof(double)) unsigned char shared_bytes[];
  Acc* acc = reinterpret_cast<Acc*>(shared_bytes);  // [pairs]: pair p = lane * entries + entry
  Acc* tile_a = acc + g.pairs;                       // [da, tile]
  Acc* tile_b = tile_a + static_cast<int64_t>(g.da) * g.tile;  // [db, tile]
  const int64_t split = blockIdx.x, bh = blockIdx.y;
  const T* a_rows = a + bh * g.da * N;
  const T* b_rows = b + bh * g.db * N;
  const int64_t begin = split * chunk;
  const int64_t end = begin + chunk < N ? begin + chunk : N;
  for (int p = threadIdx.x; p < g.pairs; p += blockDim.x) acc[p] = Acc(0);
  const int rows = g.da + g.db;
  for (int64_t n0 = begin; n0 < end; n0 += g.tile) {
    const int len = static_cast<int>(end - n0 < g.tile ? end - n0 : g.tile);
    __syncthreads();  // the previous tile is consumed
    for (int idx = threadIdx.x; idx < rows * g.tile; idx += blockDim.x) {
      const int r = idx / g.tile, col = idx - r * g.tile;
      Acc value = Acc(0);
      if (col < len) value = r < g.da ? to_acc(a_rows[r * N + n0 + col]) : to_acc(b_rows[(r - g.da) * N + n0 + col]);
      (r < g.da ? tile_a + r * g.tile : tile_b + (r - g.da) * g.tile)[col] = value;
    }
    __syncthreads();
    for (int p = threadIdx.x; p < g.pairs; p += blockDim.x) {
      const int lane = p / g.entries, e = p - lane * g.entries;
      const Acc* x;
      const Acc* y;
      if (e < g.da * g.db) {
        x = tile_a + (e / g.db) * g.tile;
        y = tile_b + (e % g.db) * g.tile;
      } else {
        const int r = e - g.da * g.db;  // a squared norm: of a row of a, then of b
        x = r < g.da ? tile_a + r * g.tile : tile_b + (r - g.da) * g.tile;
        y = x;
      }
      Acc sum = Acc(0);
      for (int col = lane; col < len; col += g.lanes) sum += x[col] * y[col];
      acc[p] += sum;
    }
  }
  __syncthreads();
  const int64_t slot = bh * splits + split;
  for (int e = threadIdx.x; e < g.entries; e += blockDim.x) {
    Acc sum = Acc(0);
    for (int lane = 0; lane < g.lanes; ++lane) sum += acc[lane * g.entries + e];
    if (e < g.da * g.db) {
      gram_partial[slot * g.da * g.db + e] = sum;
    } else if (with_norms) {
      const int r = e - g.da * g.db;
      if (r < g.da) a_sq_partial[slot * g.da + r] = sum;
      else b_sq_partial[slot * g.db + (r - g.da)] = sum;
    }
  }
}

// The pixel of this thread: head bh, pixel n (false past the end).
__device__ __forceinline__ bool pixel_of(int64_t N, int64_t blocks_per_head, int64_t* bh, int64_t* n) {
  *bh = blockIdx.x / blocks_per_head;
  *n = (blockIdx.x - *bh * blocks_per_head) * kThreads + threadIdx.x;
  return *n < N;
}

// out_row(i)[n] = self_coef * self_row(i)[n] + sum_r coef(i, r) rows[r * N + n], for i in [0, n_out).
template <typename T, typename Acc, typename Coef, typename SelfCoef>
__device__ __forceinline__ void combine_column(T* out, const T* self, SelfCoef self_coef, const T* rows, int n_rows,
                                               int n_out, Coef coef, int64_t N, int64_t n) {
  for (int i = 0; i < n_out; ++i) {
    Acc sum = self ? self_coef(i) * to_acc(self[i * N + n]) : Acc(0);
    for (int r = 0; r < n_rows; ++r) sum += coef(i, r) * to_acc(rows[r * N + n]);
    out[i * N + n] = from_acc<T>(sum);
  }
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
    channel_attention_fwd_kernel(const Acc* __restrict__ attn, const T* __restrict__ v, T* __restrict__ out, int dq,
                                 int dk, int64_t N, int64_t blocks_per_head) {
  int64_t bh, n;
  if (!pixel_of(N, blocks_per_head, &bh, &n)) return;
  const Acc* A = attn + bh * dq * dk;
  combine_column<T, Acc>(out + bh * dq * N, static_cast<const T*>(nullptr), [](int) { return Acc(0); },
                         v + bh * dk * N, dk, dq, [&](int i, int j) { return ro_load(A + i * dk + j); }, N, n);
}

template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads)
    channel_attention_bwd_kernel(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ grad_out,
                                 const Acc* __restrict__ attn, const Acc* __restrict__ mq,
                                 const Acc* __restrict__ coef_q, const Acc* __restrict__ coef_k, T* __restrict__ gq,
                                 T* __restrict__ gk, T* __restrict__ gv, int dq, int dk, int64_t N,
                                 int64_t blocks_per_head) {
  int64_t bh, n;
  if (!pixel_of(N, blocks_per_head, &bh, &n)) return;
  const T* Q = q + bh * dq * N;
  const T* K = k + bh * dk * N;
  const Acc* A = attn + bh * dq * dk;
  const Acc* M = mq + bh * dq * dk;
  const Acc* cq = coef_q + bh * dq;
  const Acc* ck = coef_k + bh * dk;
  // gq_i = cq_i q_i + sum_j M_ij k_j;  gk_j = ck_j k_j + sum_i M_ij q_i;  gv_j = sum_i A_ij gO_i
  combine_column<T, Acc>(gq + bh * dq * N, Q, [&](int i) { return ro_load(cq + i); }, K, dk, dq,
                         [&](int i, int j) { return ro_load(M + i * dk + j); }, N, n);
  combine_column<T, Acc>(gk + bh * dk * N, K, [&](int j) { return ro_load(ck + j); }, Q, dq, dk,
                         [&](int j, int i) { return ro_load(M + i * dk + j); }, N, n);
  combine_column<T, Acc>(gv + bh * dk * N, static_cast<const T*>(nullptr), [](int) { return Acc(0); },
                         grad_out + bh * dq * N, dq, dk, [&](int j, int i) { return ro_load(A + i * dk + j); }, N, n);
}

// The pixel-parallel grid: BH x cdiv(N, kThreads) blocks in x; false if it does not fit.
inline bool pixel_grid(int64_t BH, int64_t N, int64_t* blocks_per_head, dim3* grid) {
  *blocks_per_head = (N + kThreads - 1) / kThreads;
  const int64_t blocks = BH * *blocks_per_head;
  if (blocks > INT_MAX) return false;
  *grid = dim3(static_cast<unsigned>(blocks));
  return true;
}

inline bool head_dims_ok(int64_t da, int64_t db) { return da > 0 && db > 0 && da <= 4096 && db <= 4096; }

// The number S of pixel chunks the Gram reduction of [BH, d, N] blocks is split into (its partials'
// second dim): enough blocks to fill a GPU, chunks of at least a few tiles.
int64_t gram_splits(int64_t BH, int64_t N) {
  const int64_t by_size = (N + kMinSplitPixels - 1) / kMinSplitPixels;
  const int64_t by_occupancy = (kTargetBlocks + BH - 1) / (BH > 0 ? BH : 1);
  const int64_t splits = by_size < by_occupancy ? by_size : by_occupancy;
  return splits < 1 ? 1 : (splits > 65535 ? 65535 : splits);
}

void check_head_dims(const char* op, int64_t da, int64_t db) {
  TORCH_CHECK(head_dims_ok(da, db), op, ": the CUDA kernels take heads of 1 to 4096 channels, got ", da, " and ", db);
}

// Partials of the Gram a bᵀ and of the squared row norms: block (bh, s) sums pixel chunk s of head bh
// into gram_partial [BH, S, da, db] and, with norms (a_sq_partial and b_sq_partial not null),
// a_sq_partial [BH, S, da] and b_sq_partial [BH, S, db].
template <typename T, typename Acc>
void launch_gram(const T* a, const T* b, int64_t BH, int64_t da, int64_t db, int64_t N, int64_t splits,
                 Acc* gram_partial, Acc* a_sq_partial, Acc* b_sq_partial) {
  check_head_dims("channel_attention_gram", da, db);
  const bool with_norms = a_sq_partial != nullptr;
  GramLayout g;
  g.da = static_cast<int>(da);
  g.db = static_cast<int>(db);
  g.entries = g.da * g.db + (with_norms ? g.da + g.db : 0);
  g.lanes = g.entries < kThreads ? kThreads / g.entries : 1;
  g.pairs = g.entries * g.lanes;
  const size_t acc_bytes = static_cast<size_t>(g.pairs) * sizeof(Acc);
  const size_t row_bytes = static_cast<size_t>(g.da + g.db) * sizeof(Acc);
  TORCH_CHECK(acc_bytes + row_bytes <= kMaxSharedBytes, "channel_attention_gram: heads of ", da, " and ", db,
              " channels need more shared memory than the CUDA kernel has");
  const size_t tile = (kMaxSharedBytes - acc_bytes) / row_bytes;
  g.tile = static_cast<int>(tile < static_cast<size_t>(kMaxTile) ? tile : kMaxTile);
  const size_t shared = acc_bytes + row_bytes * g.tile;
  const int64_t chunk = (N + splits - 1) / splits;
  channel_attention_gram_kernel<T, Acc><<<dim3(static_cast<unsigned>(splits), static_cast<unsigned>(BH)), kThreads,
                                          shared, c10::cuda::getCurrentCUDAStream()>>>(
      a, b, g, N, chunk, splits, with_norms, gram_partial, a_sq_partial, b_sq_partial);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The pixel-parallel grid of a [BH, d, N] pass, and its blocks per head.
dim3 pixel_grid_of(const char* op, int64_t BH, int64_t N, int64_t* blocks_per_head) {
  dim3 grid;
  TORCH_CHECK(pixel_grid(BH, N, blocks_per_head, &grid), op, ": ", BH, " heads of ", N,
              " pixels are too many for the CUDA grid");
  return grid;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_gram(const at::Tensor& a, const at::Tensor& b,
                                                                      bool with_norms) {
  check_gram_args(a, b);
  c10::cuda::CUDAGuard guard(a.device());
  const int64_t BH = a.size(0), da = a.size(1), db = b.size(1), N = a.size(2);
  TORCH_CHECK(BH <= 65535, "channel_attention_gram: batch x heads = ", BH, " is too large for the CUDA kernels");
  const int64_t splits = gram_splits(BH, N);
  const auto options = a.options().dtype(accumulate_type_of(a.scalar_type()));
  // Zeroed: with no rows on one side the kernel has nothing to write, and the sums are then 0.
  at::Tensor gram = at::zeros({BH, splits, da, db}, options);
  at::Tensor a_sq = with_norms ? at::zeros({BH, splits, da}, options) : at::empty({0}, options);
  at::Tensor b_sq = with_norms ? at::zeros({BH, splits, db}, options) : at::empty({0}, options);
  if (BH > 0 && da > 0 && db > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "channel_attention_gram_cuda", [&] {
      using acc_t = at::acc_type<scalar_t, true>;
      launch_gram(cuda_cptr<scalar_t>(a), cuda_cptr<scalar_t>(b), BH, da, db, N, splits,
                  gram.mutable_data_ptr<acc_t>(), with_norms ? a_sq.mutable_data_ptr<acc_t>() : nullptr,
                  with_norms ? b_sq.mutable_data_ptr<acc_t>() : nullptr);
    });
  }
  // The splits summed in order (a fixed reduction: deterministic).
  if (!with_norms) return {gram.sum(1), a_sq, b_sq};
  return {gram.sum(1), a_sq.sum(1).sqrt(), b_sq.sum(1).sqrt()};
}

at::Tensor channel_attention_apply(const at::Tensor& attn, const at::Tensor& v) {
  check_apply_args(attn, v);
  c10::cuda::CUDAGuard guard(v.device());
  const int64_t BH = v.size(0), dk = v.size(1), N = v.size(2), dq = attn.size(1);
  at::Tensor out = at::empty({BH, dq, N}, v.options());
  if (out.numel() == 0) return out;
  check_head_dims("channel_attention_apply", dq, dk);
  int64_t blocks_per_head;
  const dim3 grid = pixel_grid_of("channel_attention_apply", BH, N, &blocks_per_head);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "channel_attention_apply_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    channel_attention_fwd_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        attn.const_data_ptr<acc_t>(), cuda_cptr<scalar_t>(v), cuda_ptr<scalar_t>(out), static_cast<int>(dq),
        static_cast<int>(dk), N, blocks_per_head);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> channel_attention_backward_pass(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& mq,
    const at::Tensor& dq, const at::Tensor& dk) {
  check_backward_pass_args(q, k, grad_out, attn, mq, dq, dk);
  c10::cuda::CUDAGuard guard(q.device());
  at::Tensor gq = at::empty_like(q), gk = at::empty_like(k), gv = at::empty_like(k);
  const int64_t BH = q.size(0), d_q = q.size(1), d_k = k.size(1), N = q.size(2);
  if (BH == 0 || N == 0 || d_q == 0 || d_k == 0) return {gq, gk, gv};
  check_head_dims("channel_attention_backward_pass", d_q, d_k);
  int64_t blocks_per_head;
  const dim3 grid = pixel_grid_of("channel_attention_backward_pass", BH, N, &blocks_per_head);
  const auto dtype = q.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "channel_attention_backward_pass_cuda", [&] {
    using acc_t = at::acc_type<scalar_t, true>;
    channel_attention_bwd_kernel<<<grid, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        cuda_cptr<scalar_t>(q), cuda_cptr<scalar_t>(k), cuda_cptr<scalar_t>(grad_out), attn.const_data_ptr<acc_t>(),
        mq.const_data_ptr<acc_t>(), dq.const_data_ptr<acc_t>(), dk.const_data_ptr<acc_t>(), cuda_ptr<scalar_t>(gq),
        cuda_ptr<scalar_t>(gk), cuda_ptr<scalar_t>(gv), static_cast<int>(d_q), static_cast<int>(d_k), N,
        blocks_per_head);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gq, gk, gv};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("channel_attention_gram", &channel_attention_gram);
  m.impl("channel_attention_apply", &channel_attention_apply);
  m.impl("channel_attention_backward_pass", &channel_attention_backward_pass);
}

}  // namespace mcmri_fast::cuda
