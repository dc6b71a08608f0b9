"""Sigmoid-gated fusion of two feature maps: the gate that ends FSMNet's CMS- and FS-fusion blocks.

    out = a·σ(gate[:, :C]) + b·σ(gate[:, C:])

gate holds the logits (the output of the conv before the sigmoid). With `nonfinite` a number, nan and
±inf results are replaced by it (FSMNet: 1e-5), and the gradient is zero where the value before the
replacement was not finite (torch.nan_to_num's backward). The reference implementation is
`mcmri_fast.reference.gated_fusion`.

How the fused backends compute it (cpu, cuda, triton): one pass forward (reads a, b, gate; writes out)
and one pass backward (reads grad, a, b, gate; writes grad_a, grad_b, grad_gate). The backward
recomputes σ and, with `nonfinite`, the value before the replacement: the op saves only its inputs,
where the reference's autograd keeps both sigmoids and the products (three more tensors of a's size
and the gate's). float16 / bfloat16 are computed in float32 and rounded once.
"""
import functools
import numbers

import torch

from .. import reference
from ..backends import select_backend

__all__ = ["gated_fusion"]

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------------
# Public API: validation and dispatch


def gated_fusion(
    a: torch.Tensor,
    b: torch.Tensor,
    gate: torch.Tensor,
    *,
    nonfinite: float | None = None,
) -> torch.Tensor:
    """Sigmoid-gated fusion out = a·σ(gate[:, :C]) + b·σ(gate[:, C:]).

    Args:
        a, b: the two feature maps [B, C, *spatial] (e.g. [B, C, H, W] or [B, C, N]).
        gate: the gate logits [B, 2C, *spatial]: channels [0, C) gate a, channels [C, 2C) gate b.
        nonfinite: if a number, nan and ±inf results are replaced by it (FSMNet passes 1e-5); the
            gradient is then zero where the result before the replacement was not finite.

    Returns:
        [B, C, *spatial], contiguous, in the promoted dtype of the inputs (float32, float64, float16 or
        bfloat16; the fused backends compute float16 / bfloat16 in float32).

    Gradients flow to a, b and gate through one fused backward kernel. Inputs may have any strides.
    """
    a, b, gate, nonfinite = _validate(a, b, gate, nonfinite)
    backend = _select(a.device)
    if backend == "reference":
        return reference.gated_fusion(a, b, gate, nonfinite)
    return torch.ops.mcmri_fast.gated_fusion(a, b, gate, nonfinite, backend)


@torch.compiler.assume_constant_result
def _select(device: torch.device) -> str:
    # Under torch.compile the choice is made once, at trace time, and baked into the graph.
    return select_backend("gated_fusion", device)


def _validate(a, b, gate, nonfinite):
    """Checks the arguments; returns a, b, gate in their promoted dtype and nonfinite as a float or None."""
    for name, t in (("a", a), ("b", b), ("gate", gate)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32, float64, float16 or bfloat16, got dtype {t.dtype}")
    if a.dim() < 2:
        raise ValueError(f"a must be [B, C, *spatial], got shape {tuple(a.shape)}")
    if b.shape != a.shape:
        raise ValueError(f"b must have a's shape {tuple(a.shape)}, got {tuple(b.shape)}")
    gate_shape = (a.shape[0], 2 * a.shape[1]) + tuple(a.shape[2:])
    if tuple(gate.shape) != gate_shape:
        raise ValueError(f"gate must be [B, 2C, *spatial] = {list(gate_shape)}, got shape {tuple(gate.shape)}")
    for name, t in (("b", b), ("gate", gate)):
        if t.device != a.device:
            raise ValueError(f"{name} must be on a's device {a.device}, got {t.device}")
    if nonfinite is not None:
        if not isinstance(nonfinite, numbers.Real) or isinstance(nonfinite, bool):
            raise TypeError(f"nonfinite must be None or a real number, got {type(nonfinite).__name__}")
        nonfinite = float(nonfinite)
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), gate.dtype)
    return a.to(dtype), b.to(dtype), gate.to(dtype), nonfinite


# ---------------------------------------------------------------------------------------------------
# Fused implementation (custom ops, so torch.compile sees one node with a fake implementation)


@functools.lru_cache(maxsize=None)
def _kernels(backend: str):
    """(forward, backward) launchers of a fused backend; the C++ ops serve cpu and cuda alike."""
    if backend == "triton":
        from ..kernels import gated_fusion as triton_kernels

        return triton_kernels.gated_fusion_forward, triton_kernels.gated_fusion_backward
    if backend in ("cpu", "cuda"):
        return torch.ops.mcmri_fast.gated_fusion_fwd, torch.ops.mcmri_fast.gated_fusion_bwd
    raise ValueError(f"gated_fusion: {backend!r} is not a fused backend")


@torch.library.custom_op("mcmri_fast::gated_fusion", mutates_args=())
def _gated_fusion_fused(
    a: torch.Tensor, b: torch.Tensor, gate: torch.Tensor, nonfinite: float | None, backend: str
) -> torch.Tensor:
    forward, _ = _kernels(backend)
    return forward(a, b, gate, nonfinite)


@_gated_fusion_fused.register_fake
def _(a, b, gate, nonfinite, backend):
    return torch.empty_like(a, memory_format=torch.contiguous_format)


@torch.library.custom_op("mcmri_fast::gated_fusion_backward", mutates_args=())
def _gated_fusion_fused_backward(
    grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gate: torch.Tensor, nonfinite: float | None, backend: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (grad_a, grad_b, grad_gate), contiguous."""
    _, backward = _kernels(backend)
    return backward(grad, a, b, gate, nonfinite)


@_gated_fusion_fused_backward.register_fake
def _(grad, a, b, gate, nonfinite, backend):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (a, b, gate))


def _setup_context(ctx, inputs, output):
    a, b, gate, nonfinite, backend = inputs
    # The backward recomputes σ and the value before the cleanup from the inputs: nothing else is kept.
    ctx.save_for_backward(a, b, gate)
    ctx.nonfinite, ctx.backend = nonfinite, backend


def _backward(ctx, grad):
    a, b, gate = ctx.saved_tensors
    grad_a, grad_b, grad_gate = torch.ops.mcmri_fast.gated_fusion_backward(grad, a, b, gate, ctx.nonfinite, ctx.backend)
    need_a, need_b, need_gate = ctx.needs_input_grad[:3]
    return grad_a if need_a else None, grad_b if need_b else None, grad_gate if need_gate else None, None, None


_gated_fusion_fused.register_autograd(_backward, setup_context=_setup_context)
