"""Benchmarks of mcmri_fast.ops.depthwise_conv3x3: provider x shape x mode.

Shapes: "paper" = FSMNet's channel-attention projections (query_dw on 64 channels, key_value_dw on 128;
BraTS 240², batch 1 and 4; fastMRI knee 320², batch 4), without bias as FSMNet runs them; "small" = CI
smoke sizes. Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates a fixed random gradient to x and
the weight. Each case is built and warmed (compiled, for `compile`) outside the timed rounds by the
`op_run` fixture and timed by `measure` (conftest.py); extra_info holds GB/s, on CUDA the % of the
measured copy bandwidth and the peak memory of one call, and the speedup over the reference measured in
this session.
"""
import math

import torch

from mcmri_fast import reference
from mcmri_fast.ops import depthwise_conv3x3
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 64, 240, 240), (1, 128, 240, 240), (4, 128, 240, 240), (4, 128, 320, 320)),
    "small": ((1, 8, 16, 16),),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"depthwise_conv3x3": SHAPES[size]})


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: x and out forward (2 maps); backward grad, x and grad_x on
    top (3 more; the weight and its gradient are negligible)."""
    maps = 2 if mode == "fwd" else 5
    return maps * math.prod(shape) * itemsize


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((x, weight), (grad,)): the op's arguments and the gradient of its output."""
    g = torch.Generator().manual_seed(0)
    x, grad = (torch.randn(shape, generator=g).to(device) for _ in range(2))
    weight = torch.randn(shape[1], 1, 3, 3, generator=g).to(device)
    return (x, weight), (grad,)


def test_depthwise_conv3x3(case, bench_device, op_run, measure):
    run, setup_s = op_run(
        lambda x, weight: depthwise_conv3x3(x, weight),
        lambda x, weight: reference.depthwise_conv3x3(x, weight),
        lambda: _inputs(case.shape, bench_device),
    )
    measure(
        run,
        setup_s=setup_s,
        bytes_moved=_bytes_moved(case.shape, case.mode),
    )
