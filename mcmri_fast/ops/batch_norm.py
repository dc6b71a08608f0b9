"""Batch norm + ReLU in one op, with the residual of MANet's dense links added before the normalisation
(conv3×3 → + Σ o_j → BatchNorm2d → ReLU, 4 per dense block, 18 dense blocks per Dense U-Net pair):

    t = x + residual,  x̂ = (t − μ_c) · rstd_c,  rstd_c = 1 / sqrt(σ²_c + eps)   (μ, σ² biased, per channel c
    over the batch and the pixels, in training mode),  y = max(γ_c x̂ + β_c, 0)
    backward: g' = grad where y > 0, else 0;  grad_t = γ rstd (g' − mean(g') − x̂ mean(g' x̂));
              grad_γ = Σ g' x̂,  grad_β = Σ g';  grad_x = grad_residual = grad_t

The reference is `mcmri_fast.reference.batch_norm_relu` (the add, `F.batch_norm`, `F.relu`).

How the fused backends compute it (training mode; cpu, cuda, triton): the forward reads x and the residual
once, writing t, reads t for the variance (the two-pass variance; on the CPU a channel is one thread's and
stays in its cache) and once more to write y; the backward reads grad and t for the channel's two sums and
again to write grad_t. The op keeps t (x itself without a residual: the tensor ATen's batch norm keeps too)
and [C] statistics; ATen's sequence runs the add, the statistics, the normalisation and the ReLU as passes
of their own and keeps the ReLU's output besides (BENCHMARKS.md has the figures). The running statistics
are updated from the batch's, as F.batch_norm does (the unbiased variance, `momentum`). In eval mode the
running statistics normalise and the op runs the reference: a module folds them into its convolution
instead (`nn.ConvBatchNormReLU`).

The kernels: `batch_norm_relu_fwd` and `batch_norm_relu_bwd`, whose contract is csrc/batch_norm.h (the C++
ops of csrc/cpu/batch_norm.cpp and csrc/cuda/batch_norm.cu, and their Triton twins in
mcmri_fast.kernels.batch_norm).
"""
import math
import numbers

import torch

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp

__all__ = ["batch_norm_relu"]


def batch_norm_relu(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    running_mean: torch.Tensor | None = None,
    running_var: torch.Tensor | None = None,
    *,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """`F.relu(F.batch_norm(x + residual, running_mean, running_var, weight, bias, training, momentum, eps))`.

    Args:
        x: [B, C, *spatial] (e.g. a convolution's output), more than one value per channel in training.
        weight, bias: γ and β [C] (None: 1 and 0, BatchNorm2d(affine=False)).
        running_mean, running_var: [C] or None; updated in place in training mode (momentum, the unbiased
            variance), used for the normalisation in eval mode (then both are needed).
        training: batch statistics (True) or the running ones.
        momentum: the running statistics' update factor, in [0, 1].
        eps: added to the variance, >= 0.
        residual: None or a tensor of x's shape and dtype added to x before the normalisation.

    x and residual: float32, float64, float16 or bfloat16 (the fused backends compute the last two in
    float32); weight, bias and the running statistics any floating dtype. Any strides.

    Returns:
        x's shape, contiguous, in x's dtype. Gradients flow to x, residual, weight and bias (one fused
        backward kernel in training mode).
    """
    tensors = {"x": x}
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var),
                    ("residual", residual)):
        if t is not None:
            tensors[name] = t
    promoted_float_dtype(tensors)
    if x.dim() < 2:
        raise ValueError(f"x must be [B, C, *spatial], got shape {tuple(x.shape)}")
    C = x.shape[1]
    for name in ("weight", "bias", "running_mean", "running_var"):
        t = tensors.get(name)
        if t is not None and tuple(t.shape) != (C,):
            raise ValueError(f"{name} must be [C] = [{C}], got shape {tuple(t.shape)}")
    if residual is not None and (residual.shape != x.shape or residual.dtype != x.dtype):
        raise ValueError(f"residual must have x's shape {tuple(x.shape)} and dtype {x.dtype}, got "
                         f"{tuple(residual.shape)} {residual.dtype}")
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {type(training).__name__}")
    for name, value in (("momentum", momentum), ("eps", eps)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if momentum > 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if not training:
        if running_mean is None:
            raise ValueError("eval mode (training=False) needs running_mean and running_var")
        return reference.batch_norm_relu(x, weight, bias, running_mean, running_var, False, momentum, eps, residual)
    count = x.numel() // C if C else 0
    if count <= 1:
        raise ValueError(f"x needs more than one value per channel for batch statistics, got shape {tuple(x.shape)}")
    backend = _batch_norm_relu.select(x.device)
    if backend == "reference":
        return reference.batch_norm_relu(x, weight, bias, running_mean, running_var, True, momentum, eps, residual)
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    gamma = x.new_ones(C, dtype=accumulate) if weight is None else weight.to(accumulate)
    beta = x.new_zeros(C, dtype=accumulate) if bias is None else bias.to(accumulate)
    y, _, mean, rstd = _batch_norm_relu(x, residual, gamma, beta, float(eps), backend=backend)
    if running_mean is not None:
        with torch.no_grad():
            # F.batch_norm's update: the unbiased variance of the batch
            variance = (rstd.square().reciprocal() - eps).clamp_min(0) * (count / (count - 1))
            running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
            running_var.mul_(1 - momentum).add_(variance.to(running_var.dtype), alpha=momentum)
    return y


_batch_norm_relu = FusedOp("batch_norm_relu", kernels=("batch_norm_relu_fwd", "batch_norm_relu_bwd"), triton_module="batch_norm")


@_batch_norm_relu.forward
def _(k, x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor, eps: float
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, t = x + residual (empty without one), mean [C], rstd [C] in the accumulation dtype)."""
    return k.batch_norm_relu_fwd(x, residual, weight, bias, eps)


@_batch_norm_relu.fake
def _(x, residual, weight, bias, eps):
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    t = torch.empty_like(y) if residual is not None else x.new_empty(0)
    return y, t, torch.empty_like(weight), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    x, residual, weight, bias, _, backend = inputs
    _, t, mean, rstd = output
    ctx.mark_non_differentiable(t, mean, rstd)
    ctx.set_materialize_grads(False)
    # t, or x itself without a residual: what the backward reads, and no copy of it
    ctx.save_for_backward(x if residual is None else t, mean, rstd, weight, bias)
    ctx.has_residual, ctx.backend = residual is not None, backend


def _autograd(ctx, grad, *_grad_statistics):
    if grad is None:
        return (None,) * 6
    need_x, need_residual, need_weight, need_bias = ctx.needs_input_grad[:4]
    grad_t, grad_weight, grad_bias = _batch_norm_relu.backward_op(grad, *ctx.saved_tensors, ctx.backend)
    return (grad_t if need_x else None, grad_t if need_residual and ctx.has_residual else None,
            grad_weight if need_weight else None, grad_bias if need_bias else None, None, None)


@_batch_norm_relu.backward(setup_context=_setup_context, autograd=_autograd)
def _(k, grad: torch.Tensor, t: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, weight: torch.Tensor,
      bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_t contiguous, grad_weight [C], grad_bias [C]); grad of any strides."""
    return k.batch_norm_relu_bwd(grad, t, mean, rstd, weight, bias)


@_batch_norm_relu.backward_fake
def _(grad, t, mean, rstd, weight, bias):
    return torch.empty_like(t, memory_format=torch.contiguous_format), torch.empty_like(weight), torch.empty_like(bias)
