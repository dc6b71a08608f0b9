// CUDA kernels of the sigmoid-gated fusion (the contract: csrc/gated_fusion.h; csrc/cpu/gated_fusion.cpp
// computes the same on the CPU). Memory-bound elementwise work over a [B, C, N]:
//   - one thread per pack of kVec consecutive elements of a row (b, c), grid-stride over the packs;
//     kVec = 16 bytes / sizeof(T) when N is a multiple of it and every pointer is 16-byte aligned (a
//     pack then never straddles two rows, and its loads and stores are single 16-byte accesses), else 1;
//   - the gate of a's half is gate[b, c, j], that of b's half C·N elements further;
//   - float16 / bfloat16 are computed in float, float64 in double.
// Nothing in it needs sm_80+.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <initializer_list>

#include "../gated_fusion.h"
#include "compute_type.cuh"
#include "cuda_types.h"

namespace mcmri_fast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65535;
constexpr int kPackBytes = 16;

__device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

template <typename T, int kVec>
struct alignas(sizeof(T) * kVec) Pack {
  T v[kVec];
};

template <typename T, int kVec>
__device__ __forceinline__ Pack<T, kVec> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, kVec>*>(p);
}
template <typename T, int kVec>
__device__ __forceinline__ void store_pack(T* p, const Pack<T, kVec>& pack) {
  *reinterpret_cast<Pack<T, kVec>*>(p) = pack;
}

// Offsets of pack p: in a / b / out ([B, C, N]) and of gate[b, c, j] in gate ([B, 2C, N]).
struct PackOffsets {
  int64_t element, gate;
};
__device__ __forceinline__ PackOffsets offsets_of(const GatedFusionSizes& s, int64_t element) {
  const int64_t row = element / s.N, j = element - row * s.N;
  const int64_t batch = row / s.C, c = row - batch * s.C;
  return {element, (batch * 2 * s.C + c) * s.N + j};
}

template <typename T, int kVec, bool kClean>
__global__ void gated_fusion_fwd_kernel(GatedFusionSizes s, int64_t packs, const T* __restrict__ a,
                                        const T* __restrict__ b, const T* __restrict__ gate, T* __restrict__ out,
                                        compute_t<T> fill) {
  const int64_t gate_b = s.C * s.N;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < packs; p += int64_t(gridDim.x) * blockDim.x) {
    const PackOffsets o = offsets_of(s, p * kVec);
    const auto va = load_pack<T, kVec>(a + o.element), vb = load_pack<T, kVec>(b + o.element);
    const auto vga = load_pack<T, kVec>(gate + o.gate), vgb = load_pack<T, kVec>(gate + o.gate + gate_b);
    Pack<T, kVec> result;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      compute_t<T> value =
          to_compute(va.v[k]) * sigmoid(to_compute(vga.v[k])) + to_compute(vb.v[k]) * sigmoid(to_compute(vgb.v[k]));
      if (kClean && !isfinite(value)) value = fill;
      result.v[k] = from_compute<T>(value);
    }
    store_pack<T, kVec>(out + o.element, result);
  }
}

template <typename T, int kVec, bool kClean>
__global__ void gated_fusion_bwd_kernel(GatedFusionSizes s, int64_t packs, const T* __restrict__ grad,
                                        const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ gate,
                                        T* __restrict__ grad_a, T* __restrict__ grad_b, T* __restrict__ grad_gate) {
  using C = compute_t<T>;
  const int64_t gate_b = s.C * s.N;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < packs; p += int64_t(gridDim.x) * blockDim.x) {
    const PackOffsets o = offsets_of(s, p * kVec);
    const auto vg = load_pack<T, kVec>(grad + o.element);
    const auto va = load_pack<T, kVec>(a + o.element), vb = load_pack<T, kVec>(b + o.element);
    const auto vga = load_pack<T, kVec>(gate + o.gate), vgb = load_pack<T, kVec>(gate + o.gate + gate_b);
    Pack<T, kVec> da, db, dga, dgb;
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const C x = to_compute(va.v[k]), y = to_compute(vb.v[k]);
      const C sa = sigmoid(to_compute(vga.v[k])), sb = sigmoid(to_compute(vgb.v[k]));
      C g = to_compute(vg.v[k]);
      // nan_to_num's backward: no gradient where the value before the cleanup was not finite.
      if (kClean && !isfinite(x * sa + y * sb)) g = C(0);
      da.v[k] = from_compute<T>(g * sa);
      db.v[k] = from_compute<T>(g * sb);
      // The operation order of mul's and sigmoid's backward: (g a)(1 - s)s.
      dga.v[k] = from_compute<T>(g * x * (C(1) - sa) * sa);
      dgb.v[k] = from_compute<T>(g * y * (C(1) - sb) * sb);
    }
    store_pack<T, kVec>(grad_a + o.element, da);
    store_pack<T, kVec>(grad_b + o.element, db);
    store_pack<T, kVec>(grad_gate + o.gate, dga);
    store_pack<T, kVec>(grad_gate + o.gate + gate_b, dgb);
  }
}

template <typename T>
constexpr int kWideVec = kPackBytes / int(sizeof(T));

inline bool pack_aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kPackBytes == 0; }

// Whether the 16-byte packs apply: they must not straddle rows (N a multiple of the pack) and every
// pointer must be aligned to them (all offsets are then multiples of the pack).
template <typename T>
bool use_wide_packs(const GatedFusionSizes& s, std::initializer_list<const void*> pointers) {
  if (s.N % kWideVec<T> != 0) return false;
  for (const void* p : pointers) {
    if (!pack_aligned(p)) return false;
  }
  return true;
}

inline dim3 grid_of(int64_t packs) {
  const int64_t blocks = (packs + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(blocks < kMaxBlocks ? blocks : kMaxBlocks));
}

template <typename T, int kVec>
void launch_fwd_as(const GatedFusionSizes& s, const T* a, const T* b, const T* gate, T* out, bool clean,
                   compute_t<T> fill) {
  const int64_t packs = s.B * s.C * s.N / kVec;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (clean) {
    gated_fusion_fwd_kernel<T, kVec, true><<<grid_of(packs), kThreads, 0, stream>>>(s, packs, a, b, gate, out, fill);
  } else {
    gated_fusion_fwd_kernel<T, kVec, false><<<grid_of(packs), kThreads, 0, stream>>>(s, packs, a, b, gate, out, fill);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T, int kVec>
void launch_bwd_as(const GatedFusionSizes& s, const T* grad, const T* a, const T* b, const T* gate, T* grad_a,
                   T* grad_b, T* grad_gate, bool clean) {
  const int64_t packs = s.B * s.C * s.N / kVec;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (clean) {
    gated_fusion_bwd_kernel<T, kVec, true>
        <<<grid_of(packs), kThreads, 0, stream>>>(s, packs, grad, a, b, gate, grad_a, grad_b, grad_gate);
  } else {
    gated_fusion_bwd_kernel<T, kVec, false>
        <<<grid_of(packs), kThreads, 0, stream>>>(s, packs, grad, a, b, gate, grad_a, grad_b, grad_gate);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor gated_fusion_fwd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& gate,
                            std::optional<double> nonfinite) {
  const auto s = check_gated_fusion_args("gated_fusion_fwd", a, b, gate);
  c10::cuda::CUDAGuard guard(a.device());
  const auto a_c = a.contiguous(), b_c = b.contiguous(), gate_c = gate.contiguous();
  auto out = at::empty_like(a_c, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gated_fusion_fwd_cuda", [&] {
    using T = cuda_t<scalar_t>;
    const T *pa = cuda_cptr<scalar_t>(a_c), *pb = cuda_cptr<scalar_t>(b_c), *pgate = cuda_cptr<scalar_t>(gate_c);
    T* pout = cuda_ptr<scalar_t>(out);
    const bool clean = nonfinite.has_value();
    const auto fill = static_cast<compute_t<T>>(nonfinite.value_or(0.0));
    if (use_wide_packs<T>(s, {pa, pb, pgate, pout})) {
      launch_fwd_as<T, kWideVec<T>>(s, pa, pb, pgate, pout, clean, fill);
    } else {
      launch_fwd_as<T, 1>(s, pa, pb, pgate, pout, clean, fill);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> gated_fusion_bwd(const at::Tensor& grad, const at::Tensor& a,
                                                                const at::Tensor& b, const at::Tensor& gate,
                                                                std::optional<double> nonfinite) {
  const auto s = check_gated_fusion_args("gated_fusion_bwd", a, b, gate, &grad);
  c10::cuda::CUDAGuard guard(a.device());
  // A stride-0 gradient (out.sum().backward()) is materialised here: the kernel reads rows contiguously.
  const auto grad_c = grad.contiguous(), a_c = a.contiguous(), b_c = b.contiguous(), gate_c = gate.contiguous();
  auto grad_a = at::empty_like(a_c, at::MemoryFormat::Contiguous);
  auto grad_b = at::empty_like(b_c, at::MemoryFormat::Contiguous);
  auto grad_gate = at::empty_like(gate_c, at::MemoryFormat::Contiguous);
  if (grad_a.numel() == 0) return {grad_a, grad_b, grad_gate};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "gated_fusion_bwd_cuda", [&] {
    using T = cuda_t<scalar_t>;
    const T *pg = cuda_cptr<scalar_t>(grad_c), *pa = cuda_cptr<scalar_t>(a_c), *pb = cuda_cptr<scalar_t>(b_c),
            *pgate = cuda_cptr<scalar_t>(gate_c);
    T *da = cuda_ptr<scalar_t>(grad_a), *db = cuda_ptr<scalar_t>(grad_b), *dgate = cuda_ptr<scalar_t>(grad_gate);
    const bool clean = nonfinite.has_value();
    if (use_wide_packs<T>(s, {pg, pa, pb, pgate, da, db, dgate})) {
      launch_bwd_as<T, kWideVec<T>>(s, pg, pa, pb, pgate, da, db, dgate, clean);
    } else {
      launch_bwd_as<T, 1>(s, pg, pa, pb, pgate, da, db, dgate, clean);
    }
  });
  return {grad_a, grad_b, grad_gate};
}

}  // namespace

TORCH_LIBRARY_IMPL(mcmri_fast, CUDA, m) {
  m.impl("gated_fusion_fwd", &gated_fusion_fwd);
  m.impl("gated_fusion_bwd", &gated_fusion_bwd);
}

}  // namespace mcmri_fast::cuda
