"""Triton kernels of batch norm + ReLU in training mode, the twins of the C++ ops
torch.ops.mcmri_fast.batch_norm_relu_fwd and batch_norm_relu_bwd (their contract is csrc/batch_norm.h; the
op, mcmri_fast/ops/batch_norm.py, has checked the arguments).

Shapes, once contiguous: x, residual, t, y, grad [B, C, N]; per channel c the M = B·N elements
e = b·N + p at (b·C + c)·N + p, reduced over by programs (c, block of BLOCK elements), one partial per
program, which torch combines in order (deterministic, no atomics):

    forward:   t = x + residual (written by the statistics kernel); the block's mean of t − t[0, c, 0] and
               its sum of squared deviations (Chan's combination across blocks, as kernels/instance_norm.py);
               then y = max((t − μ) γ rstd + β, 0)
    backward:  g' = grad where (t − μ) γ rstd + β > 0, else 0;  A = Σ g', S = Σ g' x̂;
               grad_t = γ rstd (g' − A/M − x̂ S/M)

Half precision is computed in float32, float64 in float64. Offsets are int64.
"""
import torch
import triton
import triton.language as tl

from ._statistics import combine_block_statistics

_MAX_BLOCK = 1024
_NUM_WARPS = 4


@triton.jit
def _offsets(c, block, M, C, N, BLOCK: tl.constexpr):
    """The offsets into [B, C, N] of elements block·BLOCK … of channel c (of M = B·N), and their mask."""
    e = block.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    b = e // N
    return (b * C + c) * N + (e - b * N), e < M


@triton.jit
def _batch_norm_stats_kernel(x_ptr, residual_ptr, t_ptr, mean_partials_ptr, m2_partials_ptr, M, C, N, n_blocks,
                             HAS_RESIDUAL: tl.constexpr, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    c = pid // n_blocks
    block = pid - c * n_blocks
    offs, mask = _offsets(c, block, M, C, N, BLOCK)
    t = tl.load(x_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    first = tl.load(x_ptr + c.to(tl.int64) * N).to(COMPUTE)
    if HAS_RESIDUAL:
        # summed in COMPUTE and rounded once; the statistics are of the rounded t (what the backward reads)
        rounded = (t + tl.load(residual_ptr + offs, mask=mask, other=0.0).to(COMPUTE)).to(t_ptr.dtype.element_ty)
        tl.store(t_ptr + offs, rounded, mask=mask)
        t = rounded.to(COMPUTE)
        first = (first + tl.load(residual_ptr + c.to(tl.int64) * N).to(COMPUTE)).to(t_ptr.dtype.element_ty).to(COMPUTE)
    # minus the channel's first element
    t = tl.where(mask, t - first, 0.0)
    count = tl.minimum(M - block.to(tl.int64) * BLOCK, BLOCK).to(COMPUTE)
    mean = tl.sum(t, axis=0) / count
    deviation = tl.where(mask, t - mean, 0.0)
    tl.store(mean_partials_ptr + pid, mean)
    tl.store(m2_partials_ptr + pid, tl.sum(deviation * deviation, axis=0))


@triton.jit
def _affine(t, mu, scale, beta):
    """(t − μ) γ rstd + β: the forward's y and the backward's mask from one expression."""
    return (t - mu) * scale + beta


@triton.jit
def _batch_norm_relu_fwd_kernel(t_ptr, mean_ptr, rstd_ptr, weight_ptr, bias_ptr, y_ptr, M, C, N, n_blocks,
                                COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    c = pid // n_blocks
    offs, mask = _offsets(c, pid - c * n_blocks, M, C, N, BLOCK)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    y = _affine(t, tl.load(mean_ptr + c), tl.load(weight_ptr + c) * tl.load(rstd_ptr + c), tl.load(bias_ptr + c))
    tl.store(y_ptr + offs, tl.maximum(y, 0.0).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _batch_norm_bwd_sums_kernel(grad_ptr, t_ptr, mean_ptr, rstd_ptr, weight_ptr, bias_ptr, a_partials_ptr,
                                s_partials_ptr, M, C, N, n_blocks, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    c = pid // n_blocks
    offs, mask = _offsets(c, pid - c * n_blocks, M, C, N, BLOCK)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    mu, rstd = tl.load(mean_ptr + c), tl.load(rstd_ptr + c)
    positive = _affine(t, mu, tl.load(weight_ptr + c) * rstd, tl.load(bias_ptr + c)) > 0
    g = tl.where(positive & mask, g, 0.0)
    tl.store(a_partials_ptr + pid, tl.sum(g, axis=0))
    tl.store(s_partials_ptr + pid, tl.sum(g * ((t - mu) * rstd), axis=0))


@triton.jit
def _batch_norm_relu_bwd_kernel(grad_ptr, t_ptr, mean_ptr, rstd_ptr, weight_ptr, bias_ptr, a_ptr, s_ptr, grad_t_ptr,
                                M, C, N, n_blocks, COMPUTE: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    c = pid // n_blocks
    offs, mask = _offsets(c, pid - c * n_blocks, M, C, N, BLOCK)
    g = tl.load(grad_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    t = tl.load(t_ptr + offs, mask=mask, other=0.0).to(COMPUTE)
    mu, rstd = tl.load(mean_ptr + c), tl.load(rstd_ptr + c)
    scale = tl.load(weight_ptr + c) * rstd
    g = tl.where(_affine(t, mu, scale, tl.load(bias_ptr + c)) > 0, g, 0.0)
    grad_t = scale * (g - tl.load(a_ptr + c) - (t - mu) * rstd * tl.load(s_ptr + c))
    tl.store(grad_t_ptr + offs, grad_t.to(grad_t_ptr.dtype.element_ty), mask=mask)


def _launch(B: int, C: int, N: int, dtype: torch.dtype) -> tuple[tuple[int], int, dict]:
    """(grid, blocks per channel, meta-parameters)."""
    block = min(triton.next_power_of_2(max(B * N, 1)), _MAX_BLOCK)
    compute = tl.float64 if dtype == torch.float64 else tl.float32
    n_blocks = triton.cdiv(B * N, block)
    return (C * n_blocks,), n_blocks, dict(COMPUTE=compute, BLOCK=block, num_warps=_NUM_WARPS)


def _sizes(x) -> tuple[int, int, int]:
    B, C = x.shape[:2]
    return B, C, x.numel() // (B * C)


def batch_norm_relu_fwd(x, residual, weight, bias, eps: float):
    """torch.ops.mcmri_fast.batch_norm_relu_fwd (csrc/batch_norm.h): (y, t or an empty tensor, mean [C],
    rstd [C]); x and residual of any strides."""
    B, C, N = _sizes(x)
    x = x.contiguous()
    weight, bias = weight.contiguous(), bias.contiguous()
    accumulate = weight.dtype
    grid, n_blocks, meta = _launch(B, C, N, x.dtype)
    has_residual = residual is not None
    t = torch.empty_like(x) if has_residual else x.new_empty(0)
    residual = residual.contiguous() if has_residual else x
    # Every slot is written: program (channel, block) stores its block's partials.
    mean_partials = x.new_empty((C, n_blocks), dtype=accumulate)
    m2_partials = x.new_empty((C, n_blocks), dtype=accumulate)
    _batch_norm_stats_kernel[grid](x, residual, t if has_residual else x, mean_partials, m2_partials, B * N, C, N,
                                   n_blocks, HAS_RESIDUAL=has_residual, **meta)
    # Chan's combination of the blocks of a channel; the means are of t − t[0, c, 0]
    shifted, rstd = combine_block_statistics(mean_partials, m2_partials, B * N, meta["BLOCK"], eps)
    source = t if has_residual else x
    mean = shifted + source.view(B, C, N)[0, :, 0].to(accumulate)
    y = torch.empty_like(x)
    _batch_norm_relu_fwd_kernel[grid](source, mean, rstd, weight, bias, y, B * N, C, N, n_blocks, **meta)
    return y, t, mean, rstd


def batch_norm_relu_bwd(grad, t, mean, rstd, weight, bias):
    """torch.ops.mcmri_fast.batch_norm_relu_bwd (csrc/batch_norm.h): (grad_t contiguous, grad_weight [C],
    grad_bias [C]); grad of any strides."""
    B, C, N = _sizes(t)
    grad, t = grad.contiguous(), t.contiguous()
    mean, rstd, weight, bias = (v.contiguous() for v in (mean, rstd, weight, bias))
    grid, n_blocks, meta = _launch(B, C, N, t.dtype)
    M = B * N
    a_partials = t.new_empty((C, n_blocks), dtype=mean.dtype)
    s_partials = t.new_empty((C, n_blocks), dtype=mean.dtype)
    _batch_norm_bwd_sums_kernel[grid](grad, t, mean, rstd, weight, bias, a_partials, s_partials, M, C, N, n_blocks,
                                      **meta)
    # the blocks of a channel summed in order (deterministic)
    grad_bias, grad_weight = a_partials.sum(-1), s_partials.sum(-1)
    grad_t = torch.empty_like(t)
    _batch_norm_relu_bwd_kernel[grid](grad, t, mean, rstd, weight, bias, grad_bias / M, grad_weight / M, grad_t, M, C,
                                      N, n_blocks, **meta)
    return grad_t, grad_weight, grad_bias
