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

The kernels: `gated_fusion_fwd` and `gated_fusion_bwd`, whose contract is csrc/gated_fusion.h (the C++ ops
of csrc/cpu/gated_fusion.cpp and csrc/cuda/gated_fusion.cu, and their Triton twins in
mcmri_fast.kernels.gated_fusion).
"""
import numbers

import torch

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp

__all__ = ["gated_fusion"]


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
    backend = _gated_fusion.select(a.device)
    if backend == "reference":
        return reference.gated_fusion(a, b, gate, nonfinite)
    return _gated_fusion(a, b, gate, nonfinite, backend=backend)


def _validate(a, b, gate, nonfinite):
    """Checks the arguments; returns a, b, gate in their promoted dtype and nonfinite as a float or None."""
    dtype = promoted_float_dtype({"a": a, "b": b, "gate": gate}, like="a")
    if a.dim() < 2:
        raise ValueError(f"a must be [B, C, *spatial], got shape {tuple(a.shape)}")
    if b.shape != a.shape:
        raise ValueError(f"b must have a's shape {tuple(a.shape)}, got {tuple(b.shape)}")
    gate_shape = (a.shape[0], 2 * a.shape[1]) + tuple(a.shape[2:])
    if tuple(gate.shape) != gate_shape:
        raise ValueError(f"gate must be [B, 2C, *spatial] = {list(gate_shape)}, got shape {tuple(gate.shape)}")
    if nonfinite is not None:
        if not isinstance(nonfinite, numbers.Real) or isinstance(nonfinite, bool):
            raise TypeError(f"nonfinite must be None or a real number, got {type(nonfinite).__name__}")
        nonfinite = float(nonfinite)
    return a.to(dtype), b.to(dtype), gate.to(dtype), nonfinite


_gated_fusion = FusedOp("gated_fusion", kernels=("gated_fusion_fwd", "gated_fusion_bwd"))


@_gated_fusion.forward
def _(k, a: torch.Tensor, b: torch.Tensor, gate: torch.Tensor, nonfinite: float | None) -> torch.Tensor:
    return k.gated_fusion_fwd(a, b, gate, nonfinite)


@_gated_fusion.fake
def _(a, b, gate, nonfinite):
    return torch.empty_like(a, memory_format=torch.contiguous_format)


# The backward recomputes σ and the value before the cleanup from the inputs: nothing else is kept.
@_gated_fusion.backward(saves=("a", "b", "gate"), keeps=("nonfinite",), grads=("a", "b", "gate"), need_flags=False)
def _(k, grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor, gate: torch.Tensor, nonfinite: float | None
      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_a, grad_b, grad_gate), contiguous."""
    return k.gated_fusion_bwd(grad, a, b, gate, nonfinite)


@_gated_fusion.backward_fake
def _(grad, a, b, gate, nonfinite):
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (a, b, gate))
