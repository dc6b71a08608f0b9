"""PReLU with a fused backward: FSMNet's activation after its heads, tails, residual groups and
up-sampling (nn.PReLU(): one slope shared by all channels; per-channel slopes work too).

    out = x where x > 0, else w_c·x;   grad_x = grad where x > 0, else w_c·grad;
    grad_w_c = Σ over the batch and pixels of channel c (all channels for one slope) of x·grad where x ≤ 0

The reference implementation is `mcmri_fast.reference.prelu` (`F.prelu`).

How the fused backends compute it (cpu, cuda, triton): one pass forward; one pass backward that writes
the input's gradient and reduces the slope's: per row (b, c) on the CPU (the row summed in double by
chunks of vector partials), per (row, chunk) on the GPU; the partials are then summed by torch in a
fixed order (deterministic). ATen's CPU backward materialises x·grad as a full-size tensor and reduces
it in a second pass: 10.3 ms fwd+bwd against 1.4 at 1×64×240² (BENCHMARKS.md). The op saves x and
the weight. float16 / bfloat16 are computed in float32 and rounded once; the slope's gradient is
accumulated in float32 (float64 for float64).
"""
import functools

import torch

from .. import reference
from ..backends import select_backend
from ._checks import promoted_float_dtype

__all__ = ["prelu"]


# ---------------------------------------------------------------------------------------------------
# Public API: validation and dispatch


def prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """PReLU: out = x where x > 0, else weight[c]·x (`F.prelu`, `nn.PReLU`).

    Args:
        x: [B, C, *spatial] (e.g. [B, C, H, W]).
        weight: the slopes, [1] (one shared by all channels, nn.PReLU()'s default) or [C].

    Returns:
        [B, C, *spatial], contiguous, in the promoted dtype of the inputs (float32, float64, float16 or
        bfloat16; the fused backends compute float16 / bfloat16 in float32).

    Gradients flow to x and weight (those that require them) through one fused backward kernel. Inputs
    may have any strides.
    """
    x, weight = _validate(x, weight)
    backend = _select(x.device)
    if backend == "reference":
        return reference.prelu(x, weight)
    return torch.ops.mcmri_fast.prelu(x, weight, backend)


@torch.compiler.assume_constant_result
def _select(device: torch.device) -> str:
    # Under torch.compile the choice is made once, at trace time, and baked into the graph.
    return select_backend("prelu", device)


def _validate(x, weight):
    """Checks the arguments; returns x and weight in their promoted dtype."""
    dtype = promoted_float_dtype({"x": x, "weight": weight})
    if x.dim() < 2:
        raise ValueError(f"x must be [B, C, *spatial], got shape {tuple(x.shape)}")
    if tuple(weight.shape) not in ((1,), (x.shape[1],)):
        raise ValueError(f"weight must be [1] or [C] = [{x.shape[1]}] (x's channels), got shape {tuple(weight.shape)}")
    return x.to(dtype), weight.to(dtype)


# ---------------------------------------------------------------------------------------------------
# Fused implementation (custom ops, so torch.compile sees one node with a fake implementation)


@functools.lru_cache(maxsize=None)
def _kernels(backend: str):
    """(forward, backward) launchers of a fused backend; the C++ ops serve cpu and cuda alike."""
    if backend == "triton":
        from ..kernels import prelu as triton_kernels

        return triton_kernels.prelu_forward, triton_kernels.prelu_backward
    if backend in ("cpu", "cuda"):
        return torch.ops.mcmri_fast.prelu_fwd, torch.ops.mcmri_fast.prelu_bwd
    raise ValueError(f"prelu: {backend!r} is not a fused backend")


@torch.library.custom_op("mcmri_fast::prelu", mutates_args=())
def _prelu_fused(x: torch.Tensor, weight: torch.Tensor, backend: str) -> torch.Tensor:
    forward, _ = _kernels(backend)
    return forward(x, weight)


@_prelu_fused.register_fake
def _(x, weight, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("mcmri_fast::prelu_backward", mutates_args=())
def _prelu_fused_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (grad_x, grad_weight), contiguous; an empty tensor for each one not asked for."""
    _, backward = _kernels(backend)
    grad_x, weight_rows = backward(grad, x, weight, need_x, need_weight)
    if not need_weight:
        return grad_x, x.new_empty(0)
    # the per-row sums [B, C] of the kernel, over the batch, then over the channels for one shared slope
    grad_weight = weight_rows.sum(0)
    if weight.shape[0] == 1:
        grad_weight = grad_weight.sum().reshape(1)
    return grad_x, grad_weight.to(weight.dtype)


@_prelu_fused_backward.register_fake
def _(grad, x, weight, need_x, need_weight, backend):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format) if need_x else x.new_empty(0),
        torch.empty_like(weight, memory_format=torch.contiguous_format) if need_weight else x.new_empty(0),
    )


def _setup_context(ctx, inputs, output):
    x, weight, backend = inputs
    ctx.save_for_backward(x, weight)
    ctx.backend = backend


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    need_x, need_weight = ctx.needs_input_grad[:2]
    grad_x, grad_weight = torch.ops.mcmri_fast.prelu_backward(grad, x, weight, need_x, need_weight, ctx.backend)
    return grad_x if need_x else None, grad_weight if need_weight else None, None


_prelu_fused.register_autograd(_backward, setup_context=_setup_context)
