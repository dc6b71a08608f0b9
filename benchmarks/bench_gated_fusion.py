"""Benchmarks of mcmri_fast.ops.gated_fusion: provider x shape x mode.

Shapes: "paper" = FSMNet's fusion gate at its sizes (64 channels; BraTS 240², batch 1 and 4; fastMRI
knee 320², batch 4); "small" = CI smoke sizes. Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates
a fixed random gradient to a, b and the gate. The cleanup of non-finite values is on, as FSMNet runs it.
The cases are local to this file (mcmri_fast.workflows.benchmarking holds data consistency's). Each case is built
and warmed (compiled, for `compile`) outside the timed rounds by the `op_run` fixture and timed by `measure`
(conftest.py); extra_info holds GB/s, on CUDA the % of the measured copy bandwidth and the peak memory of
one call, and the speedup over the reference measured in this session.
"""
import math

import torch

from mcmri_fast import reference
from mcmri_fast.ops import gated_fusion
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 64, 240, 240), (4, 64, 240, 240), (4, 64, 320, 320)),
    "small": ((1, 8, 16, 16), (2, 16, 33, 31)),
}
NONFINITE = 1e-5  # FSMNet's replacement of non-finite values


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"gated_fusion": SHAPES[size]})


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: a, b, gate (2x) and out forward (5 tensors of a's size);
    backward grad, a, b, gate (2x), grad_a, grad_b and grad_gate (2x) on top (9)."""
    tensors = 5 if mode == "fwd" else 14
    return tensors * math.prod(shape) * itemsize


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((a, b, gate), (grad,)): the op's arguments and the gradient of its output."""
    g = torch.Generator().manual_seed(0)
    B, C, *spatial = shape
    a, b, grad = (torch.randn(shape, generator=g).to(device) for _ in range(3))
    gate = torch.randn((B, 2 * C, *spatial), generator=g).to(device)
    return (a, b, gate), (grad,)


def test_gated_fusion(case, bench_device, op_run, measure):
    run, setup_s = op_run(
        lambda a, b, gate: gated_fusion(a, b, gate, nonfinite=NONFINITE),
        lambda a, b, gate: reference.gated_fusion(a, b, gate, NONFINITE),
        lambda: _inputs(case.shape, bench_device),
    )
    measure(
        run,
        setup_s=setup_s,
        bytes_moved=_bytes_moved(case.shape, case.mode),
    )
