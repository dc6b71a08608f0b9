"""Triton kernels of the sigmoid-gated fusion, the GPU twin of the C++ ops
torch.ops.mcmri_fast.gated_fusion_fwd and gated_fusion_bwd (csrc/gated_fusion_ops.cpp is the contract;
csrc/cpu/gated_fusion.cpp implements it on the CPU).

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


def _check(condition: bool, *message) -> None:
    if not condition:
        raise RuntimeError("".join(str(part) for part in message))


def _check_args(op: str, a, b, gate, grad=None):
    """The checks of check_gated_fusion_args (csrc/gated_fusion_args.h); returns (B, C, N)."""
    _check(a.dim() >= 2, op, ": a must be [B, C, *spatial], got ", tuple(a.shape))
    _check(a.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16),
           op, ": a must be float32, float64, float16 or bfloat16, got ", a.dtype)
    _check(b.shape == a.shape and b.dtype == a.dtype, op, ": b must match a, got ", tuple(b.shape), " ", b.dtype)
    gate_shape = (a.shape[0], 2 * a.shape[1]) + tuple(a.shape[2:])
    _check(tuple(gate.shape) == gate_shape and gate.dtype == a.dtype,
           op, ": gate must be [B, 2C, *spatial] = ", list(gate_shape), " of a's dtype, got ", tuple(gate.shape))
    if grad is not None:
        _check(grad.shape == a.shape and grad.dtype == a.dtype, op, ": grad must match a, got ", tuple(grad.shape))
    for t in (b, gate, grad):
        if t is not None:
            _check(t.device == a.device, op, ": all tensors must be on ", a.device, ", got ", t.device)
    B, C = a.shape[:2]
    return B, C, a.numel() // (B * C) if B * C else 0


def _launch(B: int, C: int, N: int, dtype: torch.dtype) -> tuple[tuple[int], dict]:
    block = min(triton.next_power_of_2(max(N, 1)), _MAX_BLOCK)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    return (B * C * triton.cdiv(N, block),), dict(COMPUTE=compute, BLOCK=block, num_warps=_NUM_WARPS)


def gated_fusion_forward(a, b, gate, nonfinite: float | None) -> torch.Tensor:
    """The semantics of torch.ops.mcmri_fast.gated_fusion_fwd: inputs of any strides, contiguous output."""
    B, C, N = _check_args("gated_fusion_fwd", a, b, gate)
    a, b, gate = a.contiguous(), b.contiguous(), gate.contiguous()
    out = torch.empty_like(a)
    if out.numel() == 0:
        return out
    grid, meta = _launch(B, C, N, a.dtype)
    _gated_fusion_fwd_kernel[grid](
        a, b, gate, out, C, N, 0.0 if nonfinite is None else nonfinite, HAS_NONFINITE=nonfinite is not None, **meta
    )
    return out


def gated_fusion_backward(grad, a, b, gate, nonfinite: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The semantics of torch.ops.mcmri_fast.gated_fusion_bwd: (grad_a, grad_b, grad_gate), contiguous;
    grad of any strides (a stride-0 gradient is materialised: the kernel reads rows contiguously)."""
    B, C, N = _check_args("gated_fusion_bwd", a, b, gate, grad)
    grad, a, b, gate = grad.contiguous(), a.contiguous(), b.contiguous(), gate.contiguous()
    grad_a, grad_b, grad_gate = torch.empty_like(a), torch.empty_like(b), torch.empty_like(gate)
    if grad_a.numel() == 0:
        return grad_a, grad_b, grad_gate
    grid, meta = _launch(B, C, N, a.dtype)
    _gated_fusion_bwd_kernel[grid](
        grad, a, b, gate, grad_a, grad_b, grad_gate, C, N, HAS_NONFINITE=nonfinite is not None, **meta
    )
    return grad_a, grad_b, grad_gate
