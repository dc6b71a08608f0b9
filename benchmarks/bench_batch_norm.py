"""Benchmarks of mcmri_fast.ops.batch_norm_relu (training mode, with the residual of MANet's dense links):
provider x shape x mode.

Shapes: "paper" = MANet's dense-block units, 64 channels at the four levels of a 256² stage (256², batch 1;
128², batch 4; 64² and 32², batch 8); "small" = CI smoke sizes. Modes: "fwd" under torch.no_grad (the
batch statistics still normalise), "fwd+bwd" backpropagates a fixed random gradient to x, the residual, γ
and β. Built, warmed and timed by the `op_run` and `measure` fixtures (conftest.py); extra_info holds GB/s,
on CUDA the % of the measured copy bandwidth and the peak memory of one call, and the speedup over the
reference (the add, F.batch_norm, F.relu) measured in this session.
"""
import math

import torch

from mcmri_fast import reference
from mcmri_fast.ops import batch_norm_relu
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 64, 256, 256), (4, 64, 128, 128), (8, 64, 64, 64), (8, 64, 32, 32)),
    "small": ((1, 8, 16, 16), (2, 16, 9, 11)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"batch_norm_relu": SHAPES[size]})


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: x, residual, t and y forward (4 maps); backward grad and t in,
    grad_t out on top (3)."""
    maps = 4 if mode == "fwd" else 7
    return maps * math.prod(shape) * itemsize


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((x, weight, bias, residual), (grad,)): a convolution's output, BatchNorm2d's initial γ and β."""
    g = torch.Generator().manual_seed(0)
    x, residual, grad = (torch.randn(shape, generator=g).to(device) for _ in range(3))
    C = shape[1]
    return (x, torch.ones(C, device=device), torch.zeros(C, device=device), residual), (grad,)


def _fused(x, weight, bias, residual):
    return batch_norm_relu(x, weight, bias, residual=residual)


def _reference(x, weight, bias, residual):
    return reference.batch_norm_relu(x, weight, bias, residual=residual)


def test_batch_norm_relu(case, bench_device, op_run, measure):
    run, setup_s = op_run(_fused, _reference, lambda: _inputs(case.shape, bench_device))
    measure(run, setup_s=setup_s, bytes_moved=_bytes_moved(case.shape, case.mode))
