"""Triton kernels of PReLU, the twins of the C++ ops torch.ops.mcmri_fast.prelu_fwd and prelu_bwd (their
contract is csrc/prelu.h; the op, mcmri_fast/ops/prelu.py, has checked the arguments).

Shapes, once contiguous: x, grad [B, C, N] (N = the product of the spatial sizes), weight [1] (one
slope) or [C], one dtype. With w the slope of row (b, c):

    forward:   out = x where x > 0, else w x
    backward:  grad_x = grad where x > 0, else w grad;  per row, the sum of x grad where x <= 0

One program owns BLOCK elements of one row (b, c): contiguous accesses. The backward's program writes
its block's partial sum of the slope's gradient to partials[row, block]; torch sums them in order
(deterministic). Half precision is computed in float32, float64 in float64. Offsets are int64.
"""
import torch
import triton
import triton.language as tl

_MAX_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _row_block(C, N, SHARED: tl.constexpr, BLOCK: tl.constexpr):
    """This program's element offsets, their mask, its row and its block within the row, and the
    offset of the row's slope in weight."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BLOCK)
    row = pid // n_blocks
    block = pid - row * n_blocks
    j = block * BLOCK + tl.arange(0, BLOCK)
    slope = 0 if SHARED else row % C
    return row.to(tl.int64) * N + j, j < N, slope


@triton.jit
def _prelu_fwd_kernel(x_ptr, weight_ptr, out_ptr, C, N, SHARED: tl.constexpr, COMPUTE: tl.constexpr,
                      BLOCK: tl.constexpr):
    offs, mask, slope = _row_block(C, N, SHARED, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    w = tl.load(weight_ptr + slope).to(COMPUTE)
    tl.store(out_ptr + offs, tl.where(x > 0, x, w * x).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _prelu_bwd_kernel(grad_ptr, x_ptr, weight_ptr, grad_x_ptr, partials_ptr, C, N, SHARED: tl.constexpr,
                      NEED_X: tl.constexpr, NEED_WEIGHT: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask, slope = _row_block(C, N, SHARED, BLOCK)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    if NEED_X:
        w = tl.load(weight_ptr + slope).to(COMPUTE)
        tl.store(grad_x_ptr + offs, tl.where(x > 0, g, w * g).to(grad_x_ptr.dtype.element_ty), mask=mask)
    if NEED_WEIGHT:
        # masked lanes load x = 0 and g = 0: they add nothing
        tl.store(partials_ptr + tl.program_id(0), tl.sum(tl.where(x > 0, 0.0, x * g), axis=0))


def _launch(B: int, C: int, N: int, dtype: torch.dtype, shared: bool) -> tuple[tuple[int], int, dict]:
    """(grid, blocks per row, meta-parameters)."""
    block = min(triton.next_power_of_2(max(N, 1)), _MAX_BLOCK)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    n_blocks = triton.cdiv(N, block)
    return (B * C * n_blocks,), n_blocks, dict(SHARED=shared, COMPUTE=compute, BLOCK=block, num_warps=_NUM_WARPS)


def _sizes(x) -> tuple[int, int, int]:
    B, C = x.shape[:2]
    return B, C, x.numel() // (B * C) if B * C else 0


def prelu_fwd(x, weight) -> torch.Tensor:
    """torch.ops.mcmri_fast.prelu_fwd (csrc/prelu.h) on CUDA tensors: inputs of any strides, contiguous output."""
    B, C, N = _sizes(x)
    x, weight = x.contiguous(), weight.contiguous()
    out = torch.empty_like(x)
    if out.numel() == 0:
        return out
    grid, _, meta = _launch(B, C, N, x.dtype, weight.shape[0] == 1)
    _prelu_fwd_kernel[grid](x, weight, out, C, N, **meta)
    return out


def prelu_bwd(grad, x, weight, need_x: bool, need_weight: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ops.mcmri_fast.prelu_bwd (csrc/prelu.h): (grad_x, weight_rows [B, C] in float32, float64 for
    float64 x), an empty tensor for each one not asked for; grad of any strides."""
    B, C, N = _sizes(x)
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    grad, x, weight = grad.contiguous(), x.contiguous(), weight.contiguous()
    grad_x = torch.empty_like(x) if need_x else x.new_empty(0)
    grid, n_blocks, meta = _launch(B, C, N, x.dtype, weight.shape[0] == 1)
    partials = x.new_zeros((B, C, n_blocks), dtype=accumulate) if need_weight else x.new_empty(0, dtype=accumulate)
    if x.numel() > 0 and (need_x or need_weight):
        _prelu_bwd_kernel[grid](grad, x, weight, grad_x, partials, C, N, NEED_X=need_x, NEED_WEIGHT=need_weight, **meta)
    return grad_x, partials.sum(-1) if need_weight else partials
