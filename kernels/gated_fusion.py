"""Triton kernels of the sigmoid-gated fusion, the twins of the C++ ops torch.ops.mcmri_fast.gated_fusion_fwd
and gated_fusion_bwd (their contract is csrc/gated_fusion.h; the op, mcmri_fast/ops/gated_fusion.py, has
checked the arguments).

Shapes, once contiguous: a, b, grad [B, C, N] and gate [B, 2C, N] (N = the product of the spatial
sizes), one dtype. With s_a = σ(gate[b, c, j]), s_b = σ(gate[b, C + c, j]):

    forward:   out = a s_a + b s_b, replaced by `nonfinite` where not finite (if given)
    backward:  g' = g, or 0 where a s_a + b s_b is not finite (if nonfinite is given)
               grad_a = g' s_a, grad_b = g' s_b, grad_gate = (g' a)(1 - s_a) s_a, (g' b)(1 - s_b) s_b

One program owns BLOCK elements of one row (b, c): the accesses of a row are contiguous, so they
coalesce (and vectorise when N is a multiple of 16, which Triton specialises on). Half precision is
computed in float32, float64 in float64. Offsets are int64: a row times N may exceed 2**31.
"""
import torch
import triton
import triton.language as tl

_MAX_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _row_block(C, N, BLOCK: tl.constexpr):
    """Offsets of this program's elements in a / b / out and in gate's a half, and their mask."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BLOCK)
    row = pid // n_blocks
    j = (pid - row * n_blocks) * BLOCK + tl.arange(0, BLOCK)
    batch = row // C
    c = row - batch * C
    offs = row.to(tl.int64) * N + j
    gate_offs = (batch.to(tl.int64) * 2 * C + c) * N + j
    return offs, gate_offs, j < N


@triton.jit
def _sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def _gated_fusion_fwd_kernel(a_ptr, b_ptr, gate_ptr, out_ptr, C, N, nonfinite,
                             HAS_NONFINITE: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs, gate_offs, mask = _row_block(C, N, BLOCK)
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    ga = tl.load(gate_ptr + gate_offs, mask=mask, other=0.0).to(COMPUTE)
    gb = tl.load(gate_ptr + gate_offs + C * N, mask=mask, other=0.0).to(COMPUTE)
    out = a * _sigmoid(ga) + b * _sigmoid(gb)
    if HAS_NONFINITE:
        out = tl.where(out - out == 0.0, out, nonfinite)  # x - x is nan for nan and ±inf
    tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_fusion_bwd_kernel(grad_ptr, a_ptr, b_ptr, gate_ptr, grad_a_ptr, grad_b_ptr, grad_gate_ptr, C, N,
                             HAS_NONFINITE: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs, gate_offs, mask = _row_block(C, N, BLOCK)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    ga = tl.load(gate_ptr + gate_offs, mask=mask, other=0.0).to(COMPUTE)
    gb = tl.load(gate_ptr + gate_offs + C * N, mask=mask, other=0.0).to(COMPUTE)
    sa = _sigmoid(ga)
    sb = _sigmoid(gb)
    if HAS_NONFINITE:
        # nan_to_num's backward: no gradient where the value before the cleanup was not finite.
        pre = a * sa + b * sb
        g = tl.where(pre - pre == 0.0, g, 0.0)
    dtype = grad_a_ptr.dtype.element_ty
    tl.store(grad_a_ptr + offs, (g * sa).to(dtype), mask=mask)
    tl.store(grad_b_ptr + offs, (g * sb).to(dtype), mask=mask)
    tl.store(grad_gate_ptr + gate_offs, (g * a * (1.0 - sa) * sa).to(dtype), mask=mask)
    tl.store(grad_gate_ptr + gate_offs + C * N, (g * b * (1.0 - sb) * sb).to(dtype), mask=mask)


def _sizes(a) -> tuple[int, int, int]:
    B, C = a.shape[:2]
    return B, C, a.numel() // (B * C) if B * C else 0


def _launch(B: int, C: int, N: int, dtype: torch.dtype) -> tuple[tuple[int], dict]:
    block = min(triton.next_power_of_2(max(N, 1)), _MAX_BLOCK)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    return (B * C * triton.cdiv(N, block),), dict(COMPUTE=compute, BLOCK=block, num_warps=_NUM_WARPS)


def gated_fusion_fwd(a, b, gate, nonfinite: float | None) -> torch.Tensor:
    """torch.ops.mcmri_fast.gated_fusion_fwd (csrc/gated_fusion.h): inputs of any strides, contiguous output."""
    B, C, N = _sizes(a)
    a, b, gate = a.contiguous(), b.contiguous(), gate.contiguous()
    out = torch.empty_like(a)
    if out.numel() == 0:
        return out
    grid, meta = _launch(B, C, N, a.dtype)
    _gated_fusion_fwd_kernel[grid](
        a, b, gate, out, C, N, 0.0 if nonfinite is None else nonfinite, HAS_NONFINITE=nonfinite is not None, **meta
    )
    return out


def gated_fusion_bwd(grad, a, b, gate, nonfinite: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """torch.ops.mcmri_fast.gated_fusion_bwd (csrc/gated_fusion.h): (grad_a, grad_b, grad_gate), contiguous;
    grad of any strides (a stride-0 gradient is materialised: the kernel reads rows contiguously)."""
    B, C, N = _sizes(a)
    grad, a, b, gate = grad.contiguous(), a.contiguous(), b.contiguous(), gate.contiguous()
    grad_a, grad_b, grad_gate = torch.empty_like(a), torch.empty_like(b), torch.empty_like(gate)
    if grad_a.numel() == 0:
        return grad_a, grad_b, grad_gate
    grid, meta = _launch(B, C, N, a.dtype)
    _gated_fusion_bwd_kernel[grid](
        grad, a, b, gate, grad_a, grad_b, grad_gate, C, N, HAS_NONFINITE=nonfinite is not None, **meta
    )
    return grad_a, grad_b, grad_gate
