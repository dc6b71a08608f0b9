"""Benchmarks of mcmri_fast.ops.guided_attention: provider x shape x mode.

Shapes: "paper" = MANet's attention places (64 channels: after the first pooling of a 256² stage, batch 1;
at 128², batch 4; the deepest levels, batch 8 at 32²); "small" = CI smoke sizes. Modes: "fwd" under
torch.no_grad, "fwd+bwd" backpropagates a fixed random gradient to f1, f2 and the three weights. Built,
warmed and timed by the `op_run` and `measure` fixtures (conftest.py); extra_info holds GB/s, on CUDA the %
of the measured copy bandwidth and the peak memory of one call, and the speedup over the reference (the
authors' modules as functions: adaptive max pool, two 1×1 convolutions, torch.max, a 7×7 convolution and
the products) measured in this session.
"""
import math

import torch

from mcmri_fast import reference
from mcmri_fast.ops import guided_attention
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 64, 256, 256), (4, 64, 128, 128), (8, 64, 32, 32)),
    "small": ((1, 16, 16, 16), (2, 64, 9, 11)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"guided_attention": SHAPES[size]})


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: f1, f2 and out forward (3 maps); backward grad, f1, f2, grad_f1
    and grad_f2 on top (5)."""
    maps = 3 if mode == "fwd" else 8
    return maps * math.prod(shape) * itemsize


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((f1, f2, ca_down, ca_up, sa_weight), (grad,)): MANet's weight shapes (C/16 hidden, a 7×7 kernel)."""
    g = torch.Generator().manual_seed(0)
    B, C, H, W = shape
    f1, f2, grad = (torch.randn(shape, generator=g).to(device) for _ in range(3))
    reduced = max(1, C // 16)
    ca_down = (torch.randn(reduced, C, 1, 1, generator=g) / C**0.5).to(device)
    ca_up = (torch.randn(C, reduced, 1, 1, generator=g) / reduced**0.5).to(device)
    sa_weight = (torch.randn(1, 1, 7, 7, generator=g) / 7).to(device)
    return (f1, f2, ca_down, ca_up, sa_weight), (grad,)


def _fused(f1, f2, ca_down, ca_up, sa_weight):
    return guided_attention(f1, f2, (ca_down, ca_up), sa_weight)


def test_guided_attention(case, bench_device, op_run, measure):
    run, setup_s = op_run(_fused, reference.guided_attention, lambda: _inputs(case.shape, bench_device))
    measure(run, setup_s=setup_s, bytes_moved=_bytes_moved(case.shape, case.mode))
