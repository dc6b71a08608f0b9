"""PReLU with a fused backward: FSMNet's activation after its heads, tails, residual groups and
up-sampling (nn.PReLU(): one slope shared by all channels; per-channel slopes work too).

    out = x where x > 0, else w_c·x;   grad_x = grad where x > 0, else w_c·grad;
    grad_w_c = Σ over the batch and pixels of channel c (all channels for one slope) of x·grad where x ≤ 0

The reference implementation is `mcmri_fast.reference.prelu` (`F.prelu`).

How the fused backends compute it (cpu, cuda, triton): one pass forward; one pass backward that writes
the input's gradient and reduces the slope's: per row (b, c) on the CPU (the row summed in double by
chunks of vector partials), per (row, chunk) on the GPU; the partials are then summed by torch in a
fixed order (deterministic). ATen's CPU backward instead materialises x·grad as a full-size tensor and
reduces it in a second pass (BENCHMARKS.md has the figures). The op saves x and the weight. float16 /
bfloat16 are computed in float32 and rounded once; the slope's gradient is accumulated in float32
(float64 for float64).

The kernels: `prelu_fwd` and `prelu_bwd`, whose contract is csrc/prelu.h (the C++ ops of
csrc/cpu/prelu.cpp and csrc/cuda/prelu.cu, and their Triton twins in mcmri_fast.kernels.prelu).
"""
import torch

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp, gradient_fake

__all__ = ["prelu"]


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
    backend = _prelu.select(x.device)
    if backend == "reference":
        return reference.prelu(x, weight)
    return _prelu(x, weight, backend=backend)


def _validate(x, weight):
    """Checks the arguments; returns x and weight in their promoted dtype."""
    dtype = promoted_float_dtype({"x": x, "weight": weight})
    if x.dim() < 2:
        raise ValueError(f"x must be [B, C, *spatial], got shape {tuple(x.shape)}")
    if tuple(weight.shape) not in ((1,), (x.shape[1],)):
        raise ValueError(f"weight must be [1] or [C] = [{x.shape[1]}] (x's channels), got shape {tuple(weight.shape)}")
    return x.to(dtype), weight.to(dtype)


_prelu = FusedOp("prelu", kernels=("prelu_fwd", "prelu_bwd"))


@_prelu.forward
def _(k, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return k.prelu_fwd(x, weight)


@_prelu.fake
def _(x, weight):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_prelu.backward(saves=("x", "weight"), grads=("x", "weight"))
def _(k, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool
      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight), contiguous; an empty tensor for each one not asked for."""
    grad_x, weight_rows = k.prelu_bwd(grad, x, weight, need_x, need_weight)
    if not need_weight:
        return grad_x, x.new_empty(0)
    # the per-row sums [B, C] of the kernel, over the batch, then over the channels for one shared slope
    grad_weight = weight_rows.sum(0)
    if weight.shape[0] == 1:
        grad_weight = grad_weight.sum().reshape(1)
    return grad_x, grad_weight.to(weight.dtype)


@_prelu.backward_fake
def _(grad, x, weight, need_x, need_weight):
    return gradient_fake(x, need_x), gradient_fake(weight, need_weight)
