"""1×1 (pointwise) convolution as matrix products on the NCHW planes: the channel projections of FSMNet's
attention (q, kv, out), frequency blocks (the conv before the FFT) and up-sampling.

    out[b] = W · x[b] + bias        (x[b] viewed as [C, H·W]; W [Co, C])
    grad_x[b] = Wᵀ · grad[b],   grad_W = Σ_b grad[b] · x[b]ᵀ,   grad_bias = Σ_(b, pixels) grad

The reference implementation is `mcmri_fast.reference.conv1x1` (`F.conv2d` with a 1×1 kernel).

Backends: cpu and reference. How the cpu backend computes it: no custom kernel, the fastest library GEMM
for the layout. For float32, and bfloat16 where oneDNN has it (AVX-512 CPUs, see `onednn_supports`),
oneDNN's matrix product (`torch.ops.mkldnn._linear_pointwise`, the op Inductor lowers linear layers to),
which reads x[b] as the transpose of its [H·W, C] operand in place: oneDNN's 1×1 convolution instead
reorders every NCHW map to its blocked layout and back, and ATen's matmul is MKL's, which runs its AVX2
code on AMD CPUs (BENCHMARKS.md has the figures). Other dtypes use `torch.matmul`. At B > 1 each sample
is one product and the outputs are stacked (one copy). Results agree with `F.conv2d` to float32 rounding
(another summation order in the weight's gradient).

CUDA tensors take the reference, torch's convolution (cuDNN), a library call as this op's is on the CPU:
the op has no cuda or triton backend, and forcing one raises BackendUnavailableError.
"""
import functools
import logging

import torch

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp, gradient_fake

__all__ = ["conv1x1", "onednn_supports"]

logger = logging.getLogger(__name__)

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """1×1 convolution: out[b, o] = Σ_c weight[o, c]·x[b, c] + bias[o] at every pixel.

    Args:
        x: [B, C, H, W].
        weight: [Co, C, 1, 1] (a Conv2d's weight) or [Co, C].
        bias: [Co] or None.

    Returns:
        [B, Co, H, W], contiguous, in the promoted dtype of the inputs.

    Gradients flow to x, weight and bias (those that require them) through matrix products. Inputs may
    have any strides.
    """
    x, weight, bias = _validate(x, weight, bias)
    backend = _conv1x1.select(x.device)
    if backend == "reference":
        return reference.conv1x1(x, weight, bias)
    return _conv1x1(x, weight.reshape(weight.shape[0], -1), bias, backend=backend)


def _validate(x, weight, bias):
    """Checks the arguments; returns them in their promoted dtype."""
    tensors = {"x": x, "weight": weight} if bias is None else {"x": x, "weight": weight, "bias": bias}
    dtype = promoted_float_dtype(tensors)
    if x.dim() != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
    channels = x.shape[1]
    if not (weight.dim() == 2 or (weight.dim() == 4 and weight.shape[2:] == (1, 1))) or weight.shape[1] != channels:
        raise ValueError(f"weight must be [Co, C, 1, 1] or [Co, C] with C = {channels}, got shape {tuple(weight.shape)}")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must be [Co] = [{weight.shape[0]}] or None, got shape {tuple(bias.shape)}")
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


@functools.lru_cache(maxsize=None)
def onednn_supports(dtype: torch.dtype) -> bool:
    """Whether oneDNN's matrix product runs `dtype` on this CPU, decided once per process and dtype.

    oneDNN has no bfloat16 inner product below AVX-512 (AVX2-only CPUs, or its ISA capped with
    ONEDNN_MAX_CPU_ISA), and it says so only by failing to create the primitive; so one tiny product is
    tried here, once, and the other dtypes and ISAs take `torch.matmul`.
    """
    if dtype not in _ONEDNN_DTYPES or not torch.backends.mkldnn.is_available():
        return False
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return False
    try:
        _linear(torch.ones(2, 8, dtype=dtype), torch.ones(8, 8, dtype=dtype))
    except RuntimeError as exc:
        logger.debug("conv1x1: oneDNN cannot run %s products on this CPU (%s); using torch.matmul", dtype, exc)
        return False
    return True


def _linear(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a [M, K] · wᵀ ([N, K], any strides: oneDNN reads a transposed view in place) → [M, N], oneDNN's."""
    return torch.ops.mkldnn._linear_pointwise(a.contiguous(), w, None, "none", [], "")


def _apply(a: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """a [M, K] applied to each plane [K, N] of planes [B, K, N] → [B, M, N] contiguous. oneDNN takes one
    product per sample (stacked: a copy at B > 1); matmul one batched call."""
    if not onednn_supports(a.dtype):
        return torch.matmul(a, planes)
    products = [_linear(a, plane.t()) for plane in planes]
    return products[0].unsqueeze(0) if len(products) == 1 else torch.stack(products)


def _sum_of_products(grads: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """Σ_b grads[b] · planes[b]ᵀ ([B, M, N] and [B, K, N] → [M, K]): the weight's gradient."""
    if not onednn_supports(grads.dtype):
        return torch.matmul(grads, planes.transpose(1, 2)).sum(0)
    # planes[b] is the transpose of the product's right operand as it stands: oneDNN reads it in place
    total = _linear(grads[0], planes[0])
    for b in range(1, planes.shape[0]):
        total = total + _linear(grads[b], planes[b])
    return total


# The cpu backend's kernels are the library calls above (no C++ op of its own).
_conv1x1 = FusedOp("conv1x1", supported=("cpu", "reference"))


@_conv1x1.forward
def _(k, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    B, C, H, W = x.shape
    out = _apply(weight, x.contiguous().view(B, C, H * W))
    if bias is not None:
        out.add_(bias.view(1, -1, 1))
    return out.view(B, weight.shape[0], H, W)


@_conv1x1.fake
def _(x, weight, bias):
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]))


@_conv1x1.backward(saves=("x", "weight"), grads=("x", "weight", "bias"))
def _(k, grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_weight: bool,
      need_bias: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_weight [Co, C], grad_bias); an empty tensor for each one not asked for."""
    B, C, H, W = x.shape
    grads = grad.contiguous().view(B, weight.shape[0], H * W)
    # distinct empties: a custom op's outputs must not alias each other
    grad_x, grad_weight, grad_bias = (x.new_empty(0) for _ in range(3))
    if need_x:
        grad_x = _apply(weight.t().contiguous(), grads).view(B, C, H, W)
    if need_weight:
        grad_weight = _sum_of_products(grads, x.contiguous().view(B, C, H * W))
    if need_bias:
        grad_bias = grads.sum((0, 2))
    return grad_x, grad_weight, grad_bias


@_conv1x1.backward_fake
def _(grad, x, weight, need_x, need_weight, need_bias):
    grad_bias = weight.new_empty(weight.shape[0]) if need_bias else x.new_empty(0)
    return gradient_fake(x, need_x), gradient_fake(weight, need_weight), grad_bias
