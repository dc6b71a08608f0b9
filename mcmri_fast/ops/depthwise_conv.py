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

The kernels: `depthwise_conv3x3_fwd` and `depthwise_conv3x3_bwd`, whose contract is csrc/depthwise_conv.h
(the C++ ops of csrc/cpu/depthwise_conv.cpp and csrc/cuda/depthwise_conv.cu, and their Triton twins in
mcmri_fast.kernels.depthwise_conv).
"""
import torch

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp, gradient_fake

__all__ = ["depthwise_conv3x3"]


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
    backend = _depthwise_conv3x3.select(x.device)
    if backend == "reference":
        return reference.depthwise_conv3x3(x, weight, bias)
    return _depthwise_conv3x3(x, weight, bias, backend=backend)


def _validate(x, weight, bias):
    """Checks the arguments; returns x, weight, bias in their promoted dtype."""
    dtype = promoted_float_dtype({"x": x, "weight": weight} | ({} if bias is None else {"bias": bias}))
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if tuple(weight.shape) not in ((channels, 1, 3, 3), (channels, 3, 3)):
        raise ValueError(
            f"weight must be [C, 1, 3, 3] or [C, 3, 3] with C = {channels} (x's channels), got shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"bias must be [C] = [{channels}] or None, got shape {tuple(bias.shape)}")
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


_depthwise_conv3x3 = FusedOp("depthwise_conv3x3", kernels=("depthwise_conv3x3_fwd", "depthwise_conv3x3_bwd"),
                             triton_module="depthwise_conv")


@_depthwise_conv3x3.forward
def _(k, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return k.depthwise_conv3x3_fwd(x, weight, bias)


@_depthwise_conv3x3.fake
def _(x, weight, bias):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# The gradients are stencils and reductions of grad with x and weight: nothing else is kept.
@_depthwise_conv3x3.backward(saves=("x", "weight"), grads=("x", "weight", "bias"))
def _(k, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool, need_bias: bool
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight, grad_bias), contiguous; an empty tensor for each one not asked for."""
    return k.depthwise_conv3x3_bwd(grad, x, weight, need_x, need_weight, need_bias)


@_depthwise_conv3x3.backward_fake
def _(grad, x, weight, need_x, need_weight, need_bias):
    return (gradient_fake(x, need_x), gradient_fake(weight, need_weight),
            x.new_empty(x.shape[1]) if need_bias else x.new_empty(0))
