"""Warp: an image sampled bilinearly at the positions a displacement field points to (DUN-SA's T(x_ref, φ),
its spatial-alignment module's hot path: 12 times a forward pass, at full resolution).

    out[b, c, i, j] = image[b, c] at (x, y) = (j + flow[b, 0, i, j], i + flow[b, 1, i, j])

The flow is in pixels (channel 0 along W, channel 1 along H), the field itself: no normalised grid. The
reference implementation is `mcmri_fast.reference.warp`: `F.grid_sample` (bilinear) on the grid built
from the flow, which PyTorch's eager path needs as extra passes and whose CPU backward runs one thread
per sample.

How the fused backends compute it (cpu, cuda, triton): one pass forward, each pixel's bilinear footprint
(four corner offsets and weights, after the padding mode's transform) computed once for all channels;
one pass backward that writes the flow's gradient (a per-pixel sum over the channels) and scatters the
image's (atomics on the GPU; per-block buffers on the CPU, see csrc/cpu/warp.cpp). The formulas are
ATen's GridSampler.h in pixel units (csrc/warp.h): the padding modes, align_corners and the derivative
conventions at the clipping edges are grid_sample's. float16 / bfloat16 are computed in float32.

The kernels: `warp_fwd` and `warp_bwd`, whose contract is csrc/warp.h (the C++ ops of csrc/cpu/warp.cpp
and csrc/cuda/warp.cu, and their Triton twins in mcmri_fast.kernels.warp).
"""
import torch

from .. import reference
from ..data.channels import channels_to_complex, complex_to_channels
from ._checks import FLOAT_DTYPES
from ._fused import FusedOp, gradient_fake

__all__ = ["warp"]

# The padding modes (F.grid_sample's) and their codes in the C++ and Triton kernels (csrc/warp.h).
PADDINGS = {"zeros": 0, "border": 1, "reflection": 2}


def warp(image: torch.Tensor, flow: torch.Tensor, *, padding: str = "reflection", align_corners: bool = False
         ) -> torch.Tensor:
    """Bilinear sampling of `image` at p + flow(p) for every pixel p.

    Args:
        image: [B, C, H, W], real (float32, float64, float16, bfloat16) or complex (its real and
            imaginary parts are warped alike).
        flow: [B, 2, H, W] real, the displacement in pixels: flow[:, 0] along W (x), flow[:, 1] along H (y).
        padding: what a sample outside the image reads (`F.grid_sample`'s modes): "zeros", "border" (the
            nearest edge pixel) or "reflection" (the image mirrored at its edges; the default, SAN's).
        align_corners: the edges of the reflection and the clipping, as in `F.grid_sample`: False (the
            default) reflects about the outer edges of the border pixels, True about their centres. The
            sampled positions are p + flow(p) in pixels either way. True needs H, W ≥ 2.

    Returns:
        [B, C, H, W], contiguous, in the promoted dtype of image and flow (complex for a complex image;
        complex64 for a complex-half one).

    Gradients flow to image and flow (those that require them) through one fused backward kernel.
    """
    image, flow, padding_code, dtype, was_complex = _validate(image, flow, padding, align_corners)
    backend = _warp.select(image.device)
    if backend == "reference":
        out = reference.warp(image, flow, padding, align_corners)
    else:
        out = _warp(image.contiguous(), flow.contiguous(), padding_code, align_corners, backend=backend)
    return _from_planes(out, dtype, was_complex)


def _validate(image, flow, padding, align_corners):
    """Checks the arguments; returns (image as real planes [B, C or 2C, H, W], flow, the padding's code,
    the output's dtype, whether the image was complex), image and flow in the compute dtype."""
    for name, t in (("image", image), ("flow", flow)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not (image.is_complex() or image.dtype in FLOAT_DTYPES):
        raise TypeError(f"image must be a real floating or complex tensor, got dtype {image.dtype}")
    if flow.dtype not in FLOAT_DTYPES:
        raise TypeError(f"flow must be a real floating tensor (displacements in pixels), got dtype {flow.dtype}")
    if flow.device != image.device:
        raise ValueError(f"flow must be on image's device {image.device}, got {flow.device}")
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(f"padding must be one of {tuple(PADDINGS)}, got {padding!r}")
    if not isinstance(align_corners, bool):
        raise TypeError(f"align_corners must be a bool, got {type(align_corners).__name__}")
    if image.dim() != 4:
        raise ValueError(f"image must be [B, C, H, W], got shape {tuple(image.shape)}")
    B, _, H, W = image.shape
    if tuple(flow.shape) != (B, 2, H, W):
        raise ValueError(f"flow must be [B, 2, H, W] = [{B}, 2, {H}, {W}] (image's batch and size), got shape "
                         f"{tuple(flow.shape)}")
    if align_corners and min(H, W) < 2:
        raise ValueError(f"align_corners=True needs H, W >= 2 (its normalised grid has no scale on a size-1 axis), "
                         f"got {H}x{W}")
    was_complex = image.is_complex()
    real = image.real.dtype if was_complex else image.dtype
    dtype = torch.promote_types(real, flow.dtype)
    compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    planes = complex_to_channels(image) if was_complex else image
    # .to() of a tensor already in the dtype costs microseconds: a sizeable part of a small warp
    planes = planes if planes.dtype == compute else planes.to(compute)
    flow = flow if flow.dtype == compute else flow.to(compute)
    return planes, flow, PADDINGS[padding], dtype, was_complex


def _from_planes(out: torch.Tensor, dtype: torch.dtype, was_complex: bool) -> torch.Tensor:
    """The op's output from the warped planes: back to complex, or to the output dtype."""
    if not was_complex:
        return out if out.dtype == dtype else out.to(dtype)
    return channels_to_complex(out.to(dtype))


_warp = FusedOp("warp", kernels=("warp_fwd", "warp_bwd"))


@_warp.forward
def _(k, image: torch.Tensor, flow: torch.Tensor, padding: int, align_corners: bool) -> torch.Tensor:
    return k.warp_fwd(image, flow, padding, align_corners)


@_warp.fake
def _(image, flow, padding, align_corners):
    return torch.empty_like(image, memory_format=torch.contiguous_format)


@_warp.backward(saves=("image", "flow"), keeps=("padding", "align_corners"), grads=("image", "flow"))
def _(k, grad: torch.Tensor, image: torch.Tensor, flow: torch.Tensor, padding: int, align_corners: bool,
      need_image: bool, need_flow: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_image, grad_flow), contiguous; an empty tensor for each one not asked for."""
    return k.warp_bwd(grad.contiguous(), image, flow, padding, align_corners, need_image, need_flow)


@_warp.backward_fake
def _(grad, image, flow, padding, align_corners, need_image, need_flow):
    return gradient_fake(image, need_image), gradient_fake(flow, need_flow)
