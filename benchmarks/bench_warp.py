"""Benchmarks of mcmri_fast.ops.warp (DUN-SA's T(x_ref, φ), its spatial-alignment module's hot path):
provider x shape x mode.

Shapes: "paper" = DUN-SA's reference image (1 x 1 x 256²), a complex image as its 2 real channels at
batch 4 (4 x 2 x 256²) and a 64-channel feature map (1 x 64 x 128²); "small" = CI smoke sizes. The flow
is a smooth random field of a few pixels (N(0, 2²) on a grid 16x coarser, upsampled bilinearly) plus
sub-pixel noise (0.5 N(0, 1)), seed 0; reflection padding (the op's default, SAN's), align_corners False.
Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates a fixed random gradient to image and flow.
The reference is `mcmri_fast.reference.warp`: F.grid_sample on the grid built from the flow (the grid's
construction is part of its work). Built, warmed and timed by the `op_run` and `measure` fixtures
(conftest.py); extra_info holds GB/s, on CUDA the % of the measured copy bandwidth and the peak memory of
one call, and the speedup over the reference measured in this session.
"""

import torch
import torch.nn.functional as F

from mcmri_fast import reference
from mcmri_fast.ops import warp
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 1, 256, 256), (4, 2, 256, 256), (1, 64, 128, 128)),
    "small": ((1, 1, 16, 16), (2, 3, 15, 17)),
}
PADDING = "reflection"
# The flow: N(0, SMOOTH²) pixels on a grid COARSE times coarser, upsampled, plus N(0, NOISE²).
SMOOTH, COARSE, NOISE = 2.0, 16, 0.5


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"warp": SHAPES[size]})


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: image and flow read and out written forward (2C + 2 planes
    of H x W per batch item); backward grad, image and flow read, grad_image and grad_flow written on
    top (3C + 4)."""
    B, C, H, W = shape
    planes = 2 * C + 2 if mode == "fwd" else 5 * C + 6
    return planes * B * H * W * itemsize


def _flow(B: int, H: int, W: int, g: torch.Generator) -> torch.Tensor:
    """[B, 2, H, W]: a smooth field of a few pixels plus sub-pixel noise."""
    coarse = SMOOTH * torch.randn(B, 2, max(2, H // COARSE), max(2, W // COARSE), generator=g)
    smooth = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
    return smooth + NOISE * torch.randn(B, 2, H, W, generator=g)


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((image, flow), (grad,)): the op's arguments and the gradient of its output."""
    g = torch.Generator().manual_seed(0)
    B, _, H, W = shape
    image = torch.randn(shape, generator=g)
    flow = _flow(B, H, W, g)
    grad = torch.randn(shape, generator=g)
    return (image.to(device), flow.to(device)), (grad.to(device),)


def test_warp(case, bench_device, op_run, measure):
    run, setup_s = op_run(
        lambda image, flow: warp(image, flow, padding=PADDING),
        lambda image, flow: reference.warp(image, flow, PADDING),
        lambda: _inputs(case.shape, bench_device),
    )
    measure(run, setup_s=setup_s, bytes_moved=_bytes_moved(case.shape, case.mode))
