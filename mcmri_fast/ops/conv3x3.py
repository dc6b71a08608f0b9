"""Dense 3×3 convolution, zero padding 1, stride 1: most of FSMNet's multiply-adds (its residual blocks,
the convolutions on the spectrum's amplitude and phase, the fusions).

    out[b, o, y, x] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] · x[b, c, y + i − 1, x + j − 1]
    grad_x = grad ⋆ weight rotated by 180° (inputs and outputs swapped),
    grad_weight[o, c] = Σ_b Σ_pixels grad[b, o] · x[b, c] shifted,   grad_bias = Σ grad

The reference implementation is `mcmri_fast.reference.conv3x3` (`F.conv2d`).

Backends: cpu and reference. How the cpu backend computes it: Winograd's minimal filtering F(4×4, 3×3),
for the forward and for the backward to x (the same convolution with the rotated kernels): 4× fewer
multiply-adds than the direct convolution, plus transforms of the input and output tiles. oneDNN's direct
convolution already runs near this CPU's peak, so only fewer multiply-adds make it faster (BENCHMARKS.md
has the figures, per instruction set). csrc/cpu/conv3x3_winograd.cpp holds what every instruction set
shares (the weight transform, the blocks of tiles); the vector code is AVX-512
(conv3x3_winograd_avx512.cpp, 16 tiles a vector) on CPUs that have it, else AVX2 + FMA
(conv3x3_winograd_avx2.cpp, 8 tiles a vector), as the library's CPU ISA (`mcmri_fast.cpu_isa`) allows.
The weight's and bias's gradients are torch's (oneDNN). The kernel runs for float32 on CPUs with AVX2
(and the caps allowing it), Co ≥ 8 (computed in packs of 8: the last pack of another count, IMA's 36
channels, holds zero kernels whose results are not stored), C ≥ 8 and planes at least 8 × 8; other inputs take torch's convolution inside
the same op. Rounding: Winograd's transforms have coefficients up to 8, so
the result's error is ~20× the direct convolution's, ~1e-5 of the output's largest value at C = 64
(float32), as in the Winograd convolutions of cuDNN and oneDNN; both builds round alike.

CUDA tensors take the reference, torch's convolution: cuDNN picks its own algorithms (Winograd and
implicit GEMM among them), which a hand-written kernel would not beat. So the op has no cuda or triton
backend, and forcing one raises BackendUnavailableError.

The kernels: `conv3x3_fwd`, `conv3x3_bwd` and `conv3x3_winograd_applies`, whose contract is
csrc/conv3x3.h (the C++ ops of csrc/cpu/conv3x3.cpp).
"""
import torch

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp, gradient_fake

__all__ = ["conv3x3"]


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """3×3 convolution, zero padding 1, stride 1 (`nn.Conv2d(C, Co, 3, padding=1)`).

    out[b, o, y, x] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] · x[b, c, y + i − 1, x + j − 1]

    Args:
        x: [B, C, H, W].
        weight: [Co, C, 3, 3].
        bias: [Co] or None.

    Returns:
        [B, Co, H, W], contiguous, in the promoted dtype of the inputs.

    Gradients flow to x, weight and bias (those that require them). Inputs may have any strides.
    """
    x, weight, bias = _validate(x, weight, bias)
    backend = _conv3x3.select(x.device)
    if backend == "reference":
        return reference.conv3x3(x, weight, bias)
    return _conv3x3(x, weight, bias, backend=backend)


def _validate(x, weight, bias):
    """Checks the arguments; returns them in their promoted dtype."""
    tensors = {"x": x, "weight": weight} if bias is None else {"x": x, "weight": weight, "bias": bias}
    dtype = promoted_float_dtype(tensors)
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    if weight.dim() != 4 or weight.shape[1:] != (x.shape[1], 3, 3):
        raise ValueError(f"weight must be [Co, C, 3, 3] with C = {x.shape[1]}, got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must be [Co] = [{weight.shape[0]}] or None, got shape {tuple(bias.shape)}")
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def winograd_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the cpu backend computes conv3x3(x, weight) with its Winograd kernel (else torch's
    convolution): float32, a CPU with AVX2 or AVX-512 (the caps allowing it), Co ≥ 8, C ≥ 8, H and W ≥ 8."""
    return x.device.type == "cpu" and bool(torch.ops.mcmri_fast.conv3x3_winograd_applies(x, weight))


_conv3x3 = FusedOp("conv3x3", kernels=("conv3x3_fwd", "conv3x3_bwd"), supported=("cpu", "reference"))


@_conv3x3.forward
def _(k, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return k.conv3x3_fwd(x, weight, bias)


@_conv3x3.fake
def _(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


@_conv3x3.backward(saves=("x", "weight"), grads=("x", "weight", "bias"))
def _(k, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool,
      need_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight, grad_bias), contiguous; an empty tensor for each one not asked for."""
    return k.conv3x3_bwd(grad, x, weight, need_x, need_weight, need_bias)


@_conv3x3.backward_fake
def _(grad, x, weight, need_x, need_weight, need_bias):
    grad_bias = weight.new_empty(weight.shape[0]) if need_bias else x.new_empty(0)
    return gradient_fake(x, need_x), gradient_fake(weight, need_weight), grad_bias
