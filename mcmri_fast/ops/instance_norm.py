"""Instance norm + LeakyReLU in one op: fastMRI's U-Net block normalisation and activation (conv3×3 →
InstanceNorm2d → LeakyReLU(0.2)), which DUN-SA's SA-Net, Z-Net and S-Net run after every convolution.

    x̂ = (x − μ_bc) · rstd_bc,  rstd_bc = 1 / sqrt(σ²_bc + eps)   (μ, σ² biased, per sample and channel)
    y = x̂ > 0 ? x̂ : s · x̂                                        (s = negative_slope)
    grad_x = rstd_bc · (g' − mean(g') − x̂ · mean(grad · y)),  g' = y > 0 ? grad : s · grad

The reference implementation is `mcmri_fast.reference.instance_norm_leaky_relu` (`F.instance_norm` then
`F.leaky_relu`).

How the fused backends compute it (cpu, cuda, triton): the forward reads each row (b, c) for its mean and
variance (two passes, in cache on the CPU) and writes y; the backward reads grad and y for two sums per row
and writes grad_x. The op saves y (the next convolution keeps it anyway) and rstd [B, C], and recovers
x̂ from y (x̂ = y / s where y ≤ 0), so negative_slope must be positive. ATen instead runs batch norm over
the reshaped input, then the activation: a pass each forward and backward more, and x kept beside y
(BENCHMARKS.md has the figures). On the CPU a row is one thread's, summed in double by chunks of vector
partials; on the GPU chunks of a row are reduced per program / block and combined by torch in a fixed
order (deterministic). float16 / bfloat16 are computed in float32 and rounded once.

The kernels: `instance_norm_leaky_relu_fwd` and `instance_norm_leaky_relu_bwd`, whose contract is
csrc/instance_norm.h (the C++ ops of csrc/cpu/instance_norm.cpp and csrc/cuda/instance_norm.cu, and their
Triton twins in mcmri_fast.kernels.instance_norm).
"""
import math
import numbers

import torch

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp

__all__ = ["instance_norm_leaky_relu"]


def instance_norm_leaky_relu(x: torch.Tensor, negative_slope: float = 0.2, eps: float = 1e-5) -> torch.Tensor:
    """`nn.InstanceNorm2d(C)` (no affine, no running statistics) then `nn.LeakyReLU(negative_slope)`.

    Args:
        x: [B, C, *spatial] (e.g. [B, C, H, W]), more than one spatial element (as `F.instance_norm`).
        negative_slope: the activation's slope below zero, > 0 (the backward recovers the normalised
            input from the output).
        eps: added to the variance, >= 0.

    Returns:
        x's shape, contiguous, in x's dtype (float32, float64, float16 or bfloat16; the fused backends
        compute float16 / bfloat16 in float32).

    The gradient flows to x through one fused backward kernel. x may have any strides.
    """
    promoted_float_dtype({"x": x})
    if x.dim() < 3:
        raise ValueError(f"x must be [B, C, *spatial], got shape {tuple(x.shape)}")
    if math.prod(x.shape[2:]) <= 1:
        raise ValueError(f"x needs more than one spatial element per channel for its statistics, got shape {tuple(x.shape)}")
    for name, value, low in (("negative_slope", negative_slope, "> 0"), ("eps", eps, ">= 0")):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
        if not math.isfinite(value) or not (value > 0 if low == "> 0" else value >= 0):
            raise ValueError(f"{name} must be finite and {low}, got {value}")
    backend = _instance_norm.select(x.device)
    if backend == "reference":
        return reference.instance_norm_leaky_relu(x, negative_slope, eps)
    return _instance_norm(x, float(negative_slope), float(eps), backend=backend)[0]


_instance_norm = FusedOp("instance_norm_leaky_relu", kernels=("instance_norm_leaky_relu_fwd", "instance_norm_leaky_relu_bwd"),
                         triton_module="instance_norm")


@_instance_norm.forward
def _(k, x: torch.Tensor, negative_slope: float, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, rstd [B, C] in float32, float64 for float64 x: for the backward)."""
    return k.instance_norm_leaky_relu_fwd(x, negative_slope, eps)


@_instance_norm.fake
def _(x, negative_slope, eps):
    accumulate = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:2], dtype=accumulate)


def _setup_context(ctx, inputs, output):
    _, negative_slope, _, backend = inputs
    y, rstd = output
    ctx.mark_non_differentiable(rstd)
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(y, rstd)
    ctx.negative_slope, ctx.backend = negative_slope, backend


def _autograd(ctx, grad, _grad_rstd):
    if grad is None or not ctx.needs_input_grad[0]:
        return None, None, None, None
    y, rstd = ctx.saved_tensors
    return _instance_norm.backward_op(grad, y, rstd, ctx.negative_slope, ctx.backend), None, None, None


@_instance_norm.backward(setup_context=_setup_context, autograd=_autograd)
def _(k, grad: torch.Tensor, y: torch.Tensor, rstd: torch.Tensor, negative_slope: float) -> torch.Tensor:
    """grad_x, contiguous; grad of any strides."""
    return k.instance_norm_leaky_relu_bwd(grad, y, rstd, negative_slope)


@_instance_norm.backward_fake
def _(grad, y, rstd, negative_slope):
    return torch.empty_like(y, memory_format=torch.contiguous_format)
