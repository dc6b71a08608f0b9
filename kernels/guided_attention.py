"""Triton kernels of the guided attention, the twins of the C++ ops torch.ops.mcmri_fast.guided_attention_*
(their contract is csrc/guided_attention.h; the op, mcmri_fast/ops/guided_attention.py, has checked the
arguments and runs the small steps on [B, C] and [B, N] tensors itself).

Shapes, once contiguous: f1, f2, grad [B, C, N] (N = H·W), ca [B, C], sa [B, N].

    spatial max:   m[b, c] = max_p f1[b, c, p] and its first p        (programs: (row b·C + c, pixel block))
    channel max:   s[b, p] = max_c f1[b, c, p] · ca[b, c] and its first c   (programs: (b, pixel block), the
                   channels looped inside)
    apply:         out = f2 · (1 + f1 · ca · sa)                        (programs: (row, pixel block))
    backward pass: gA = grad · f2; grad_f1 = gA · ca · sa; grad_f2 = grad · (1 + f1 · ca · sa);
                   Σ_c gA · f1 · ca per pixel; Σ_p gA · f1 · sa per channel (programs: (b, pixel block),
                   the channels looped inside)

The reductions over pixels write one partial per (row or channel, pixel block), which torch combines in
order (deterministic, no atomics). A NaN wins a max (the first NaN), as in the C++ ops. Half precision is
computed in float32, float64 in float64. Offsets are int64.
"""
import torch
import triton
import triton.language as tl

_MAX_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _first_max(x, positions, valid, BIG: tl.constexpr):
    """The block's maximum of x over the valid lanes and its first position (a NaN wins: the first NaN)."""
    is_nan = (x != x) & valid
    first_nan = tl.min(tl.where(is_nan, positions, BIG), axis=0)
    clean = tl.where(valid & (x == x), x, float("-inf"))
    m = tl.max(clean, axis=0)
    first = tl.min(tl.where(valid & (clean == m), positions, BIG), axis=0)
    has_nan = first_nan < BIG
    return tl.where(has_nan, float("nan"), m), tl.where(has_nan, first_nan, first)


@triton.jit
def _pixel_block(N, BLOCK: tl.constexpr):
    """This program's row (or sample), its pixels j of the row's N, and their mask: programs (row, block)."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BLOCK)
    row = pid // n_blocks
    j = (pid - row * n_blocks) * BLOCK + tl.arange(0, BLOCK)
    return row, j, j < N


@triton.jit
def _guided_attention_spatial_max_kernel(f1_ptr, max_ptr, index_ptr, N, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    row, j, valid = _pixel_block(N, BLOCK)
    x = tl.load(f1_ptr + row.to(tl.int64) * N + j, mask=valid, other=0.0).to(COMPUTE)
    m, first = _first_max(x, j.to(tl.int64), valid, BIG=2**62)
    tl.store(max_ptr + pid, m)
    tl.store(index_ptr + pid, first)


@triton.jit
def _guided_attention_channel_max_kernel(f1_ptr, ca_ptr, s_ptr, index_ptr, C, N, COMPUTE: tl.constexpr,
                                         BLOCK: tl.constexpr):
    b, j, valid = _pixel_block(N, BLOCK)
    base = b.to(tl.int64) * C * N + j
    best = tl.load(f1_ptr + base, mask=valid, other=0.0).to(COMPUTE) * tl.load(ca_ptr + b * C).to(COMPUTE)
    which = tl.zeros([BLOCK], dtype=tl.int64)
    for c in range(1, C):
        a = tl.load(f1_ptr + base + c * N, mask=valid, other=0.0).to(COMPUTE) * tl.load(ca_ptr + b * C + c).to(COMPUTE)
        take = (a > best) | ((a != a) & (best == best))
        best = tl.where(take, a, best)
        which = tl.where(take, c, which)
    tl.store(s_ptr + b.to(tl.int64) * N + j, best, mask=valid)
    tl.store(index_ptr + b.to(tl.int64) * N + j, which, mask=valid)


@triton.jit
def _guided_attention_apply_kernel(f1_ptr, f2_ptr, ca_ptr, sa_ptr, out_ptr, C, N, COMPUTE: tl.constexpr,
                                   BLOCK: tl.constexpr):
    row, j, valid = _pixel_block(N, BLOCK)
    offs = row.to(tl.int64) * N + j
    x1 = tl.load(f1_ptr + offs, mask=valid, other=0.0).to(COMPUTE)
    x2 = tl.load(f2_ptr + offs, mask=valid, other=0.0).to(COMPUTE)
    sa = tl.load(sa_ptr + (row // C).to(tl.int64) * N + j, mask=valid, other=0.0)
    out = x2 * (1 + x1 * tl.load(ca_ptr + row) * sa)
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _guided_attention_backward_pass_kernel(grad_ptr, f1_ptr, f2_ptr, ca_ptr, sa_ptr, grad_f1_ptr, grad_f2_ptr,
                                           pixel_sums_ptr, channel_partials_ptr, C, N, COMPUTE: tl.constexpr,
                                           BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b, j, valid = _pixel_block(N, BLOCK)
    sa = tl.load(sa_ptr + b.to(tl.int64) * N + j, mask=valid, other=0.0)
    pixel = tl.zeros([BLOCK], dtype=COMPUTE)
    for c in range(C):
        offs = (b.to(tl.int64) * C + c) * N + j
        g = tl.load(grad_ptr + offs, mask=valid, other=0.0).to(COMPUTE)
        x1 = tl.load(f1_ptr + offs, mask=valid, other=0.0).to(COMPUTE)
        x2 = tl.load(f2_ptr + offs, mask=valid, other=0.0).to(COMPUTE)
        scale = tl.load(ca_ptr + b * C + c).to(COMPUTE)
        ga = g * x2
        ga_f1 = ga * x1  # 0 in the masked lanes
        tl.store(grad_f1_ptr + offs, (ga * scale * sa).to(grad_f1_ptr.dtype.element_ty), mask=valid)
        tl.store(grad_f2_ptr + offs, (g * (1 + x1 * scale * sa)).to(grad_f2_ptr.dtype.element_ty), mask=valid)
        pixel += ga_f1 * scale
        tl.store(channel_partials_ptr + pid.to(tl.int64) * C + c, tl.sum(ga_f1 * sa, axis=0))
    tl.store(pixel_sums_ptr + b.to(tl.int64) * N + j, pixel, mask=valid)


def _meta(N: int, dtype: torch.dtype) -> tuple[int, int, dict]:
    """(block, blocks per row, meta-parameters)."""
    block = min(triton.next_power_of_2(max(N, 1)), _MAX_BLOCK)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    return block, triton.cdiv(N, block), dict(COMPUTE=compute, BLOCK=block, num_warps=_NUM_WARPS)


def _sizes(f1) -> tuple[int, int, int]:
    B, C = f1.shape[:2]
    return B, C, f1.numel() // (B * C)


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def guided_attention_spatial_max(f1) -> tuple[torch.Tensor, torch.Tensor]:
    """(max [B, C] accumulation dtype, first index [B, C] int64) over the pixels of f1 (any strides)."""
    B, C, N = _sizes(f1)
    f1 = f1.contiguous()
    _, n_blocks, meta = _meta(N, f1.dtype)
    accumulate = _accumulate_dtype(f1.dtype)
    # every slot is written: program (row, block) stores its block's maximum and first position
    values = f1.new_empty((B * C, n_blocks), dtype=accumulate)
    indices = f1.new_empty((B * C, n_blocks), dtype=torch.long)
    _guided_attention_spatial_max_kernel[(B * C * n_blocks,)](f1, values, indices, N, **meta)
    # the blocks in order: the first block holding the row's maximum (a NaN: the first NaN's)
    best = values.amax(dim=1, keepdim=True)
    holds = (values == best) | (values.isnan() & best.isnan())
    block = holds.to(torch.uint8).argmax(dim=1, keepdim=True)
    return best.view(B, C), indices.gather(1, block).view(B, C)


def guided_attention_channel_max(f1, ca) -> tuple[torch.Tensor, torch.Tensor]:
    """(s [B, N] accumulation dtype, first channel [B, N] int64) of max_c f1 · ca."""
    B, C, N = _sizes(f1)
    f1, ca = f1.contiguous(), ca.contiguous()
    _, n_blocks, meta = _meta(N, f1.dtype)
    s = f1.new_empty((B, N), dtype=ca.dtype)
    index = f1.new_empty((B, N), dtype=torch.long)
    _guided_attention_channel_max_kernel[(B * n_blocks,)](f1, ca, s, index, C, N, **meta)
    return s, index


def guided_attention_apply(f1, f2, ca, sa) -> torch.Tensor:
    """out = f2 · (1 + f1 · ca · sa), contiguous in f2's dtype."""
    B, C, N = _sizes(f1)
    f1, f2, ca, sa = f1.contiguous(), f2.contiguous(), ca.contiguous(), sa.contiguous()
    _, n_blocks, meta = _meta(N, f1.dtype)
    out = torch.empty_like(f2)
    _guided_attention_apply_kernel[(B * C * n_blocks,)](f1, f2, ca, sa, out, C, N, **meta)
    return out


def guided_attention_backward_pass(grad, f1, f2, ca, sa):
    """(grad_f1 dense part, grad_f2, pixel sums [B, N], channel sums [B, C]) (csrc/guided_attention.h)."""
    B, C, N = _sizes(f1)
    grad, f1, f2, ca, sa = (t.contiguous() for t in (grad, f1, f2, ca, sa))
    _, n_blocks, meta = _meta(N, f1.dtype)
    grad_f1, grad_f2 = torch.empty_like(f1), torch.empty_like(f2)
    pixel_sums = f1.new_empty((B, N), dtype=ca.dtype)
    # every slot is written: program (b, block) stores one partial per channel
    partials = f1.new_empty((B, n_blocks, C), dtype=ca.dtype)
    _guided_attention_backward_pass_kernel[(B * n_blocks,)](
        grad, f1, f2, ca, sa, grad_f1, grad_f2, pixel_sums, partials, C, N, **meta)
    return grad_f1, grad_f2, pixel_sums, partials.sum(dim=1)
