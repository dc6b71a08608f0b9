"""Benchmarks of mcmri_fast.ops.prelu: provider x shape x mode.

Shapes: "paper" = FSMNet's PReLU after a 64-channel convolution at its sizes (BraTS 240², batch 1 and
4; fastMRI knee 320², batch 4), one shared slope as nn.PReLU() has; "small" = CI smoke sizes. Modes:
"fwd" under torch.no_grad, "fwd+bwd" backpropagates a fixed random gradient to x and the slope. Built,
warmed and timed by the `op_run` and `measure` fixtures (conftest.py); extra_info holds GB/s, on CUDA
the % of the measured copy bandwidth and the peak memory of one call, and the speedup over the
reference measured in this session.
"""
import math

import torch

from mcmri_fast import reference
from mcmri_fast.ops import prelu
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 64, 240, 240), (4, 64, 240, 240), (4, 64, 320, 320)),
    "small": ((1, 8, 16, 16), (2, 16, 33, 31)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"prelu": SHAPES[size]})


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: x and out forward (2 tensors of x's size); backward grad,
    x and grad_x on top (3)."""
    tensors = 2 if mode == "fwd" else 5
    return tensors * math.prod(shape) * itemsize


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((x, weight), (grad,)): the op's arguments and the gradient of its output."""
    g = torch.Generator().manual_seed(0)
    x, grad = (torch.randn(shape, generator=g).to(device) for _ in range(2))
    return (x, torch.full((1,), 0.25, device=device)), (grad,)


def test_prelu(case, bench_device, op_run, measure):
    run, setup_s = op_run(prelu, reference.prelu, lambda: _inputs(case.shape, bench_device))
    measure(run, setup_s=setup_s, bytes_moved=_bytes_moved(case.shape, case.mode))
