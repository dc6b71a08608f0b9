"""The unshuffle down-sampling block as one strided convolution: FSMNet's DownSample.

    out = conv1×1(pixel_unshuffle(conv_k×k(x), r))                      (the reference: three steps)
        = conv_(k+r-1)×(k+r-1), stride r, padding k // 2 (x; K)         (the cpu and cuda backends)

The block is linear from x to out, and each output pixel reads only the r × r pixels of the k×k
convolution's output under it: composed, the two convolutions are one (k+r-1)-wide convolution of
stride r, K[o, i] = Σ_c Σ_(a,b) P[o, c, a, b] ⋆ W[c, i] (a full 2-D convolution of the projection's
r × r taps, P = project_weight viewed as [Co, C, r, r] in pixel_unshuffle's channel order, with the
first convolution's k × k taps W). It computes only the pixels the stride keeps: at FSMNet's setting
(C = 64, k = 3, r = 2) 16 multiply-adds per input channel and output pixel where the three steps take
4·9 + 4 = 40, and no unshuffled copy (BENCHMARKS.md has the figures).

This is an algebraic rewrite on torch's convolution (oneDNN on the CPU, cuDNN on CUDA), not a custom
kernel: the composed kernel K is a differentiable function of the weights (a transposed convolution of
two small tensors), so autograd gives the weights' gradients through it, and torch.compile traces it.
The cpu and cuda backends are this rewrite on either device's tensors; there is no Triton kernel, so
forcing triton raises BackendUnavailableError. The reference implementation is
`mcmri_fast.reference.unshuffle_downsample`. Rounding differs from the three steps' (another summation
order), within float32 tolerance.
"""
import torch
import torch.nn.functional as F

from .. import reference
from ._checks import promoted_float_dtype
from ._fused import FusedOp

__all__ = ["unshuffle_downsample"]


def unshuffle_downsample(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    project_weight: torch.Tensor,
    *,
    factor: int = 2,
    conv_bias: torch.Tensor | None = None,
    project_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """out = conv1×1(pixel_unshuffle(conv_k×k(x), factor)), the k×k convolution zero-padded by k // 2.

    Args:
        x: [B, Ci, H, W], H and W divisible by factor.
        conv_weight: [C, Ci, k, k], k odd (the first convolution, `same` padding).
        project_weight: [Co, C·factor², 1, 1] or [Co, C·factor²] (the 1×1 projection; input channel
            c·factor² + a·factor + b holds the unshuffled pixel (a, b) of channel c, as in
            `F.pixel_unshuffle`).
        factor: the down-sampling factor r ≥ 1.
        conv_bias: [C] or None; project_bias: [Co] or None.

    Returns:
        [B, Co, H / factor, W / factor] in the promoted dtype of the inputs.

    The cpu and cuda backends run one convolution of stride `factor` with the composed kernel (see the
    module docstring); gradients flow to x, the weights and the biases through it.
    """
    x, conv_weight, project_weight, conv_bias, project_bias = _validate(
        x, conv_weight, project_weight, factor, conv_bias, project_bias
    )
    if _downsample.select(x.device) == "reference":
        return reference.unshuffle_downsample(x, conv_weight, project_weight, factor, conv_bias, project_bias)
    weight, bias = _composed_kernel(conv_weight, project_weight, factor, conv_bias, project_bias)
    return F.conv2d(x, weight, bias, stride=factor, padding=conv_weight.shape[-1] // 2)


# Only the backend table: the rewrite is plain torch code (autograd and torch.compile go through it), no
# custom op.
_downsample = FusedOp("unshuffle_downsample", supported=("cpu", "cuda", "reference"))


def _composed_kernel(conv_weight, project_weight, factor, conv_bias, project_bias):
    """(K [Co, Ci, k+r-1, k+r-1], bias [Co] or None) of the one strided convolution."""
    dtype = conv_weight.dtype
    # At least float32 and outside autocast: the composition sums C·r² products per tap, once per call.
    compute = torch.promote_types(dtype, torch.float32)
    with torch.autocast(conv_weight.device.type, enabled=False):
        channels = conv_weight.shape[0]
        taps = project_weight.to(compute).reshape(project_weight.shape[0], channels, factor, factor)
        # K[o, i] = Σ_c taps[o, c] (full conv) W[c, i]: a transposed convolution whose batch is the input
        # channel i: input [i, c, k, k] = W permuted, weight [c, o, r, r] = taps permuted, out [i, o, ·, ·].
        kernel = F.conv_transpose2d(conv_weight.to(compute).transpose(0, 1), taps.transpose(0, 1)).transpose(0, 1)
        bias = None if project_bias is None else project_bias.to(compute)
        if conv_bias is not None:
            # the first convolution's bias is the same at every pixel: each output gains Σ_(c,a,b) P·b_c
            through = taps.sum((2, 3)) @ conv_bias.to(compute)
            bias = through if bias is None else bias + through
    return kernel.to(dtype), None if bias is None else bias.to(dtype)


def _validate(x, conv_weight, project_weight, factor, conv_bias, project_bias):
    """Checks the arguments; returns the tensors in their promoted dtype (project_weight as [Co, C·r², 1, 1])."""
    tensors = {"x": x, "conv_weight": conv_weight, "project_weight": project_weight}
    for name, t in (("conv_bias", conv_bias), ("project_bias", project_bias)):
        if t is not None:
            tensors[name] = t
    dtype = promoted_float_dtype(tensors)
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if x.dim() != 4:
        raise ValueError(f"x must be [B, Ci, H, W], got shape {tuple(x.shape)}")
    _, in_channels, height, width = x.shape
    if height % factor or width % factor:
        raise ValueError(f"x's H and W must be divisible by factor = {factor}, got {height} x {width}")
    if (
        conv_weight.dim() != 4
        or conv_weight.shape[1] != in_channels
        or conv_weight.shape[2] != conv_weight.shape[3]
        or conv_weight.shape[2] % 2 == 0
    ):
        raise ValueError(
            f"conv_weight must be [C, Ci, k, k] with Ci = {in_channels} and k odd, got shape {tuple(conv_weight.shape)}"
        )
    channels = conv_weight.shape[0]
    unshuffled = channels * factor * factor
    if not (
        (project_weight.dim() == 4 and project_weight.shape[2:] == (1, 1)) or project_weight.dim() == 2
    ) or project_weight.shape[1] != unshuffled:
        raise ValueError(
            f"project_weight must be [Co, C·factor², 1, 1] or [Co, C·factor²] with C·factor² = {unshuffled}, "
            f"got shape {tuple(project_weight.shape)}"
        )
    out_channels = project_weight.shape[0]
    for name, t, size in (("conv_bias", conv_bias, channels), ("project_bias", project_bias, out_channels)):
        if t is not None and tuple(t.shape) != (size,):
            raise ValueError(f"{name} must be [{size}] or None, got shape {tuple(t.shape)}")
    project_weight = project_weight.reshape(out_channels, unshuffled, 1, 1)
    return tuple(None if t is None else t.to(dtype) for t in (x, conv_weight, project_weight, conv_bias, project_bias))
