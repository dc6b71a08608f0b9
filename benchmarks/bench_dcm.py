"""Benchmarks of mcmri_fast.ops.dcm_data_consistency (IMA's stage update, eqs. 15, 18, 19): provider x
shape x mask x mode; and of ops.dcm_schedule, computed (cache cleared) and looked up (cached).

Shapes: "paper" = IMA's embeddings (C = 32 channels) at its sizes (IXI 256², batch 1 and 4; fastMRI knee
320², batch 1), with a 1-D random 4x mask (the column path) and a 2-D radial 4x mask, the stage's
dilated mask the third of its 12-stage DCM schedule; "small" = CI smoke sizes. Modes: "fwd" under
torch.no_grad, "fwd+bwd" backpropagates a fixed random gradient to x, z, g, r and the three coefficients.
The reference is the paper's three transforms and three inverse transforms (complex, full spectrum).
Built, warmed and timed by the `op_run` and `measure` fixtures (conftest.py).
"""
import dataclasses
import math

import pytest
import torch

from mcmri_fast import reference
from mcmri_fast.data.masks import RadialMaskFunc, RandomMaskFunc
from mcmri_fast.ops import dcm, dcm_data_consistency, dcm_schedule
from mcmri_fast.workflows import benchmarking


@dataclasses.dataclass(frozen=True)
class Shape:
    """An input shape and the kind of its mask ("1d" columns or "2d" radial)."""

    size: tuple
    mask: str

    def __str__(self) -> str:
        return "x".join(map(str, self.size)) + f"-{self.mask}"


SIZES = {
    "paper": ((1, 32, 256, 256), (4, 32, 256, 256), (1, 32, 320, 320)),
    "small": ((1, 4, 16, 16), (2, 4, 15, 17)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"dcm_data_consistency": [Shape(s, m) for s in SIZES[size] for m in ("1d", "2d")]})


def _masks(shape: Shape, device: torch.device):
    """(M⁰, Mᵗ): bool [W] or [H, W] on device."""
    H, W = shape.size[-2:]
    function = RandomMaskFunc([0.08], [4]) if shape.mask == "1d" else RadialMaskFunc([4])
    mask = function((H, W), seed=0).mask
    return mask.to(device), dcm_schedule(mask, 12)[3].to(device)


def _bytes_moved(shape: Shape, mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: x, z, g, r and out forward (5 images); backward grad and the
    four gradients, reading x, g, r again (8)."""
    return (5 if mode == "fwd" else 13) * math.prod(shape.size) * itemsize


def _inputs(shape: Shape, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = tuple(torch.randn(shape.size, generator=g).to(device) for _ in range(4))
    coefficients = tuple(torch.full((1,), v, device=device) for v in (0.5, 0.3, 0.2))
    return images + coefficients, (torch.randn(shape.size, generator=g).to(device),)


def test_dcm_data_consistency(case, bench_device, op_run, measure):
    mask, dilated = _masks(case.shape, bench_device)
    planar = (lambda m: m.reshape(1, 1, 1, -1)) if mask.dim() == 1 else (lambda m: m.reshape(1, 1, *m.shape))

    def fused(x, z, g, r, step, alpha, lam):
        return dcm_data_consistency(x, z, g, r, mask, dilated, step, alpha, lam)

    def eager(x, z, g, r, step, alpha, lam):
        return reference.dcm_data_consistency(x, z, g, r, planar(mask), planar(dilated), step, alpha, lam)

    run, setup_s = op_run(fused, eager, lambda: _inputs(case.shape, bench_device))
    measure(run, setup_s=setup_s, bytes_moved=_bytes_moved(case.shape, case.mode))


@pytest.mark.parametrize("cached", [False, True], ids=["computed", "cached"])
@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_dcm_schedule(benchmark, kind, cached):
    """The 12-stage schedule of a 256 x 256 mask (a batch of 4 masks), computed from scratch or found in
    the cache (a mask of the same content, another tensor: what a DataLoader hands the model). CPU masks:
    the cache of other devices' masks is by tensor, which a new tensor misses."""
    size = (4, 1, 256) if kind == "1d" else (4, 256, 256)
    mask = torch.rand(size, generator=torch.Generator().manual_seed(0)) < 0.25
    dcm_schedule(mask, 12)

    def run():
        if not cached:
            dcm._SCHEDULES.clear()
        return dcm_schedule(mask.clone(), 12)

    benchmark.group = f"dcm_schedule 12 stages {kind}"
    benchmark(run)
