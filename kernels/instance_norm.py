"""Triton kernels of instance norm + LeakyReLU, the twins of the C++ ops
torch.ops.mcmri_fast.instance_norm_leaky_relu_fwd and instance_norm_leaky_relu_bwd (their contract is
csrc/instance_norm.h; the op, mcmri_fast/ops/instance_norm.py, has checked the arguments).

Shapes, once contiguous: x, y, grad [B, C, N] (N = the product of the spatial sizes), rstd [B, C]. With
s the negative slope and, per row (b, c), μ its mean, σ² its biased variance and rstd = 1 / sqrt(σ² + eps):

    forward:   x̂ = (x − μ) rstd,  y = x̂ where x̂ > 0, else s x̂
    backward:  x̂ = y where y > 0, else y / s;  g' = grad where y > 0, else s grad;
               grad_x = rstd (g' − mean(g') − x̂ mean(grad y))   (the means over the row)

Each pass is two kernels over the same grid, one program per BLOCK elements of one row (b, c):
contiguous accesses. The first writes its block's partials to [B, C, blocks]: the forward the block's
mean and its sum of squared deviations from that mean (two passes over the block held in registers,
not E[x²] − μ², which cancels when |μ| ≫ σ), the backward its sums of g' and of grad y. Torch combines
them per row in order (Chan's combination for the forward; deterministic, no atomics); the second
kernel is the pointwise map with the row's statistics. The forward works on x − x[row, 0] (the row's
first element; the difference is exact when |μ| ≫ σ): the blocks' means are then of the order of σ,
not of μ, and rounding them (float32: by up to |μ| 6e-8) spoils neither the spread between the blocks
nor the centring x − μ. Half precision is computed in float32, float64 in float64; the slope is read
from a tensor of that dtype (a Python float argument would reach the kernel as float32). Offsets are
int64.
"""
import torch
import triton
import triton.language as tl

from ._statistics import combine_block_statistics

_MAX_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _row_block(N, BLOCK: tl.constexpr):
    """This program's element offsets, their mask, its row, and the number of the row's elements in
    its block."""
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BLOCK)
    row = pid // n_blocks
    block = pid - row * n_blocks
    j = block * BLOCK + tl.arange(0, BLOCK)
    return row.to(tl.int64) * N + j, j < N, row, tl.minimum(N - block * BLOCK, BLOCK)


@triton.jit
def _shift(x_ptr, row, N, COMPUTE: tl.constexpr):
    """The row's first element: the forward's statistics are of x minus it."""
    return tl.load(x_ptr + row.to(tl.int64) * N).to(COMPUTE)


@triton.jit
def _instance_norm_stats_kernel(x_ptr, mean_partials_ptr, m2_partials_ptr, N, COMPUTE: tl.constexpr,
                                BLOCK: tl.constexpr):
    offs, mask, row, count = _row_block(N, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    # x − x[row, 0], 0 in the masked lanes: they add nothing to the sum, and their deviations are masked
    # out of M2 (the block's true count divides the sum)
    x = tl.where(mask, x - _shift(x_ptr, row, N, COMPUTE), 0.0)
    mean = tl.sum(x, axis=0) / count.to(COMPUTE)
    deviation = tl.where(mask, x - mean, 0.0)
    tl.store(mean_partials_ptr + tl.program_id(0), mean)
    tl.store(m2_partials_ptr + tl.program_id(0), tl.sum(deviation * deviation, axis=0))


@triton.jit
def _instance_norm_leaky_relu_fwd_kernel(x_ptr, mean_ptr, rstd_ptr, slope_ptr, y_ptr, N, COMPUTE: tl.constexpr,
                                         BLOCK: tl.constexpr):
    offs, mask, row, _ = _row_block(N, BLOCK)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(COMPUTE) - _shift(x_ptr, row, N, COMPUTE)
    x_hat = (x - tl.load(mean_ptr + row)) * tl.load(rstd_ptr + row)
    s = tl.load(slope_ptr)
    tl.store(y_ptr + offs, tl.where(x_hat > 0, x_hat, s * x_hat).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _instance_norm_bwd_sums_kernel(grad_ptr, y_ptr, slope_ptr, g_partials_ptr, gy_partials_ptr, N,
                                   COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask, _, _ = _row_block(N, BLOCK)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    s = tl.load(slope_ptr)
    # masked lanes load grad = 0 and y = 0: they add nothing
    tl.store(g_partials_ptr + tl.program_id(0), tl.sum(tl.where(y > 0, g, s * g), axis=0))
    tl.store(gy_partials_ptr + tl.program_id(0), tl.sum(g * y, axis=0))


@triton.jit
def _instance_norm_leaky_relu_bwd_kernel(grad_ptr, y_ptr, rstd_ptr, a_ptr, b_ptr, slope_ptr, grad_x_ptr, N,
                                         COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask, row, _ = _row_block(N, BLOCK)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    s = tl.load(slope_ptr)
    positive = y > 0
    x_hat = tl.where(positive, y, y / s)
    g = tl.where(positive, g, s * g)
    grad_x = tl.load(rstd_ptr + row) * (g - tl.load(a_ptr + row) - x_hat * tl.load(b_ptr + row))
    tl.store(grad_x_ptr + offs, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)


def _launch(B: int, C: int, N: int, dtype: torch.dtype) -> tuple[tuple[int], int, dict]:
    """(grid, blocks per row, meta-parameters)."""
    block = min(triton.next_power_of_2(max(N, 1)), _MAX_BLOCK)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    n_blocks = triton.cdiv(N, block)
    return (B * C * n_blocks,), n_blocks, dict(COMPUTE=compute, BLOCK=block, num_warps=_NUM_WARPS)


def _sizes(x) -> tuple[int, int, int]:
    B, C = x.shape[:2]
    return B, C, x.numel() // (B * C) if B * C else 0


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def instance_norm_leaky_relu_fwd(x, negative_slope: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.ops.mcmri_fast.instance_norm_leaky_relu_fwd (csrc/instance_norm.h) on CUDA tensors: (y
    contiguous in x's dtype, rstd [B, C] in float32, float64 for float64 x); x of any strides."""
    B, C, N = _sizes(x)
    accumulate = _accumulate_dtype(x.dtype)
    x = x.contiguous()
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y, x.new_zeros((B, C), dtype=accumulate)
    grid, n_blocks, meta = _launch(B, C, N, x.dtype)
    # Every slot is written: program (row, block) stores its block's partials.
    mean_partials = x.new_empty((B, C, n_blocks), dtype=accumulate)
    m2_partials = x.new_empty((B, C, n_blocks), dtype=accumulate)
    _instance_norm_stats_kernel[grid](x, mean_partials, m2_partials, N, **meta)
    # Chan's combination of the blocks of a row; mean is the mean of x − x[row, 0]
    mean, rstd = combine_block_statistics(mean_partials, m2_partials, N, meta["BLOCK"], eps)
    slope = torch.full((1,), negative_slope, dtype=accumulate, device=x.device)
    _instance_norm_leaky_relu_fwd_kernel[grid](x, mean, rstd, slope, y, N, **meta)
    return y, rstd


def instance_norm_leaky_relu_bwd(grad, y, rstd, negative_slope: float) -> torch.Tensor:
    """torch.ops.mcmri_fast.instance_norm_leaky_relu_bwd (csrc/instance_norm.h): grad_x, contiguous in y's
    dtype; grad of any strides, rstd as the forward returned it."""
    B, C, N = _sizes(y)
    accumulate = _accumulate_dtype(y.dtype)
    grad, y, rstd = grad.contiguous(), y.contiguous(), rstd.contiguous()
    grad_x = torch.empty_like(y)
    if y.numel() == 0:
        return grad_x
    grid, n_blocks, meta = _launch(B, C, N, y.dtype)
    slope = torch.full((1,), negative_slope, dtype=accumulate, device=y.device)
    g_partials = y.new_empty((B, C, n_blocks), dtype=accumulate)
    gy_partials = y.new_empty((B, C, n_blocks), dtype=accumulate)
    _instance_norm_bwd_sums_kernel[grid](grad, y, slope, g_partials, gy_partials, N, **meta)
    # The blocks of a row summed in order (deterministic): a = mean(g'), b = mean(grad y).
    a = g_partials.sum(-1) / N
    b = gy_partials.sum(-1) / N
    _instance_norm_leaky_relu_bwd_kernel[grid](grad, y, rstd, a, b, slope, grad_x, N, **meta)
    return grad_x
