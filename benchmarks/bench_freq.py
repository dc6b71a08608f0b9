"""Benchmarks of the frequency-branch ops (mcmri_fast.ops.frequency, FSMNet's FreBlock): op x provider x
shape x mode.

Shapes ("paper"): the half spectra [B, 64, H, W//2 + 1] of FSMNet at 240x240 (BraTS, batch 1 and 4) and
320x320 (fastMRI knee, batch 4) for spectrum_to_polar and polar_to_spectrum, and the full-size maps
[B, 64, H, W] for frequency_epilogue; "small" is a CI smoke set. Modes: "fwd" under torch.no_grad,
"fwd+bwd" with fixed random gradients to every input (the residuals included). Providers: reference
(eager), compile (torch.compile of the reference, dynamic=False), cpu, triton, cuda.

The cases are defined here rather than in mcmri_fast.workflows.benchmarking, which holds data consistency's; the
`op_run` and `measure` fixtures of conftest.py build and time them as for the other suites. extra_info holds GB/s (from the bytes
a fused pass must move), peak memory on CUDA, the speedup over the reference measured in this session,
the device and the versions.
"""
import functools
import math

import torch

from mcmri_fast import reference
from mcmri_fast.ops import frequency as frequency_ops
from mcmri_fast.workflows import benchmarking

OPS = ("spectrum_to_polar", "polar_to_spectrum", "frequency_epilogue")
# [B, C, H, W] of the op's input: the half spectrum for the polar ops, the full map for the epilogue.
SHAPES = {
    "paper": {
        "spectrum_to_polar": ((1, 64, 240, 121), (4, 64, 240, 121), (4, 64, 320, 161)),
        "polar_to_spectrum": ((1, 64, 240, 121), (4, 64, 240, 121), (4, 64, 320, 161)),
        "frequency_epilogue": ((1, 64, 240, 240), (4, 64, 240, 240), (4, 64, 320, 320)),
    },
    "small": {
        "spectrum_to_polar": ((1, 8, 16, 9),),
        "polar_to_spectrum": ((1, 8, 16, 9),),
        "frequency_epilogue": ((1, 16, 16, 16),),
    },
}
# Bytes per element a fused pass must read and write (float32; the epilogue per output element with
# C = Co, its finite mask included): the GB/s figure's numerator.
BYTES_PER_ELEMENT = {
    ("spectrum_to_polar", "fwd"): 8 + 2 * 4,
    ("spectrum_to_polar", "fwd+bwd"): (8 + 2 * 4) + (8 + 2 * 4 + 8),
    ("polar_to_spectrum", "fwd"): 4 * 4 + 8,
    ("polar_to_spectrum", "fwd+bwd"): (4 * 4 + 8) + (8 + 4 * 4 + 2 * 4),
    ("frequency_epilogue", "fwd"): 4 + 4 + 4 + 1,
    ("frequency_epilogue", "fwd+bwd"): (4 + 4 + 4 + 1) + (4 + 1 + 4 + 4 + 4),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({op: SHAPES[size][op] for op in OPS})


def _inputs(case: benchmarking.OpCase, device: torch.device):
    """(args, output gradients) of one case."""
    g = torch.Generator().manual_seed(0)
    B, C, H, W = case.shape

    def real(*shape):
        return torch.randn(shape, generator=g).to(device)

    def complex64(*shape):
        return torch.randn(shape, dtype=torch.complex64, generator=g).to(device)

    if case.op == "spectrum_to_polar":
        return (complex64(B, C, H, W),), (real(B, C, H, W), real(B, C, H, W))
    if case.op == "polar_to_spectrum":
        return tuple(real(B, C, H, W) for _ in range(4)), (complex64(B, C, H, W),)
    y, residual = real(B, C, H, W), real(B, C, H, W)
    weight, bias = real(C, C, 1, 1), real(C)
    return (y, weight, bias, residual), (real(B, C, H, W),)


def _ops(case: benchmarking.OpCase):
    """(fused, reference) callables of the case; spectrum_to_polar as FreqBlock calls it, on the half
    spectrum of an even-width signal (W//2 + 1 = 121 columns: W = 240)."""
    fused, ref = getattr(frequency_ops, case.op), getattr(reference, case.op)
    if case.op == "spectrum_to_polar":
        width = 2 * (case.shape[-1] - 1)
        return functools.partial(fused, signal_width=width), functools.partial(ref, signal_width=width)
    return fused, ref


def test_frequency(case, bench_device, op_run, measure):
    run, setup_s = op_run(*_ops(case), lambda: _inputs(case, bench_device))
    measure(
        run,
        setup_s=setup_s,
        bytes_moved=BYTES_PER_ELEMENT[(case.op, case.mode)] * math.prod(case.shape),
    )
