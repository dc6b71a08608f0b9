"""Benchmarks of mcmri_fast.ops.instance_norm_leaky_relu: provider x shape x mode.

Shapes: "paper" = the U-Net blocks' normalisation after a convolution: DUN-SA's (widths 16 / 32 / 64 at
256², 128², 64², batch 1 and 2) and fastMRI's U-Net (32 channels at 320²); "small" = CI smoke sizes.
Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates a fixed random gradient to x. Built, warmed and
timed by the `op_run` and `measure` fixtures (conftest.py); extra_info holds GB/s, on CUDA the % of the
measured copy bandwidth and the peak memory of one call, and the speedup over the reference (F.instance_norm
then an in-place F.leaky_relu) measured in this session.
"""
import math

import torch

from mcmri_fast import reference
from mcmri_fast.ops import instance_norm_leaky_relu
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 16, 256, 256), (2, 16, 256, 256), (2, 32, 128, 128), (2, 64, 64, 64), (1, 32, 320, 320)),
    "small": ((1, 8, 16, 16), (2, 4, 33, 31)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"instance_norm_leaky_relu": SHAPES[size]})


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: x and y forward (2 tensors of x's size); backward grad, y and
    grad_x on top (3)."""
    tensors = 2 if mode == "fwd" else 5
    return tensors * math.prod(shape) * itemsize


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((x,), (grad,)): the op's argument and the gradient of its output."""
    g = torch.Generator().manual_seed(0)
    x, grad = (torch.randn(shape, generator=g).to(device) for _ in range(2))
    return (x,), (grad,)


def test_instance_norm_leaky_relu(case, bench_device, op_run, measure):
    run, setup_s = op_run(instance_norm_leaky_relu, reference.instance_norm_leaky_relu, lambda: _inputs(case.shape, bench_device))
    measure(run, setup_s=setup_s, bytes_moved=_bytes_moved(case.shape, case.mode))
