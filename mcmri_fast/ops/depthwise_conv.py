"""Depthwise 3×3 convolution: the projections of Restormer-style channel attention (FSMNet's
query_dw and key_value_dw).

    out[b, c, y, x] = bias[c] + Σ_{i,j ∈ {0,1,2}} weight[c, i, j] · x[b, c, y + i − 1, x + j − 1]

with zero padding 1 and stride 1: `nn.Conv2d(C, C, 3, padding=1, groups=C)`. The reference
implementation is `mcmri_fast.reference.depthwise_conv3x3`.

How the fused backends compute it (cpu, cuda, triton): the forward is a direct stencil, 9 shifted reads
per output. The backward to x is the same stencil with the kernel rotated by 180°; the gradients of the
taps and of the bias, Σ_b Σ_{y,x} grad · x shifted and Σ grad, are per-channel reductions, summed in a
fixed order (no atomics: deterministic). On CPU one pass over grad and x gives all three, channels in
parallel with the batch inside; on GPU each program / block reduces its tile into a row of partial
sums and torch sums the rows in order. Only the gradients asked for are computed. The op saves its
inputs x and weight. float16 / bfloat16 are computed in float32 and rounded once.
"""
import functools

import torch

from .. import reference
from ..backends import select_backend

__all__ = ["depthwise_conv3x3"]

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------------
# Public API: validation and dispatch


def depthwise_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Depthwise 3×3 convolution, zero padding 1, stride 1 (`nn.Conv2d(C, C, 3, padding=1, groups=C)`).

    out[b, c, y, x] = bias[c] + Σ_{i,j} weight[c, i, j] · x[b, c, y + i − 1, x + j − 1]

    Args:
        x: the feature map [B, C, H, W].
        weight: the per-channel kernels, [C, 1, 3, 3] (a grouped Conv2d's weight) or [C, 3, 3].
        bias: [C] or None.

    Returns:
        [B, C, H, W], contiguous, in the promoted dtype of the inputs (float32, float64, float16 or
        bfloat16; the fused backends compute float16 / bfloat16 in float32).

    Gradients flow to x, weight and bias (those that require them) through one fused backward kernel.
    Inputs may have any strides.
    """
    x, weight, bias = _validate(x, weight, bias)
    backend = _select(x.device)
    if backend == "reference":
        return reference.depthwise_conv3x3(x, weight, bias)
    return torch.ops.mcmri_fast.depthwise_conv3x3(x, weight, bias, backend)


@torch.compiler.assume_constant_result
def _select(device: torch.device) -> str:
    # Under torch.compile the choice is made once, at trace time, and baked into the graph.
    return select_backend("depthwise_conv3x3", device)


def _validate(x, weight, bias):
    """Checks the arguments; returns x, weight, bias in their promoted dtype."""
    named = [("x", x), ("weight", weight)] + ([] if bias is None else [("bias", bias)])
    for name, t in named:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got dtype {t.dtype}")
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if tuple(weight.shape) not in ((channels, 1, 3, 3), (channels, 3, 3)):
        raise ValueError(
            f"weight must be [C, 1, 3, 3] or [C, 3, 3] with C = {channels} (x's channels), got shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"bias must be [C] = [{channels}] or None, got shape {tuple(bias.shape)}")
    for name, t in named[1:]:
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
    dtype = torch.promote_types(x.dtype, weight.dtype)
    if bias is not None:
        dtype = torch.promote_types(dtype, bias.dtype)
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


# ---------------------------------------------------------------------------------------------------
# Fused implementation (custom ops, so torch.compile sees one node with a fake implementation)


@functools.lru_cache(maxsize=None)
def _kernels(backend: str):
    """(forward, backward) launchers of a fused backend; the C++ ops serve cpu and cuda alike."""
    if backend == "triton":
        from ..kernels import depthwise_conv as triton_kernels

        return triton_kernels.depthwise_conv3x3_forward, triton_kernels.depthwise_conv3x3_backward
    if backend in ("cpu", "cuda"):
        return torch.ops.mcmri_fast.depthwise_conv3x3_fwd, torch.ops.mcmri_fast.depthwise_conv3x3_bwd
    raise ValueError(f"depthwise_conv3x3: {backend!r} is not a fused backend")


@torch.library.custom_op("mcmri_fast::depthwise_conv3x3", mutates_args=())
def _depthwise_conv3x3_fused(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, backend: str
) -> torch.Tensor:
    forward, _ = _kernels(backend)
    return forward(x, weight, bias)


@_depthwise_conv3x3_fused.register_fake
def _(x, weight, bias, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("mcmri_fast::depthwise_conv3x3_backward", mutates_args=())
def _depthwise_conv3x3_fused_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool, need_bias: bool,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (grad_x, grad_weight, grad_bias), contiguous; an empty tensor for each one not asked for."""
    _, backward = _kernels(backend)
    return backward(grad, x, weight, need_x, need_weight, need_bias)


@_depthwise_conv3x3_fused_backward.register_fake
def _(grad, x, weight, need_x, need_weight, need_bias, backend):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty(0),
        torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else x.new_empty(0),
        x.new_empty(x.shape[1]) if need_bias else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    x, weight, bias, backend = inputs
    # The gradients are stencils and reductions of grad with x and weight: nothing else is kept.
    ctx.save_for_backward(x, weight)
    ctx.has_bias, ctx.backend = bias is not None, backend


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
    need_bias = need_bias and ctx.has_bias
    grad_x, grad_weight, grad_bias = torch.ops.mcmri_fast.depthwise_conv3x3_backward(
        grad, x, weight, need_x, need_weight, need_bias, ctx.backend
    )
    return grad_x if need_x else None, grad_weight if need_weight else None, grad_bias if need_bias else None, None


_depthwise_conv3x3_fused.register_autograd(_backward, setup_context=_setup_context)
