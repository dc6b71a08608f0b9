"""Benchmarks of mcmri_fast.ops.conv1x1: provider x shape x mode.

Shapes: "paper" = FSMNet's 1×1 convolutions at its top scale (BraTS 240², batch 1 and 4): the attention's
q and output projections (64 → 64) and its key-value projection (64 → 128), and one level down (120²);
"small" = CI smoke sizes. A shape id is the input's with the output channels appended
(BxCxHxWxCo). Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates a fixed random gradient to x
and the weight. Built, warmed and timed by the `op_run` and `measure` fixtures (conftest.py);
extra_info holds the GMAC/s and the speedup over the reference (`F.conv2d`) measured in this session.
"""
import torch

from mcmri_fast import reference
from mcmri_fast.ops import conv1x1
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": ((1, 64, 240, 240, 64), (1, 64, 240, 240, 128), (1, 64, 120, 120, 64), (4, 64, 240, 240, 64)),
    "small": ((1, 8, 16, 16, 8), (2, 8, 9, 7, 16)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"conv1x1": SHAPES[size]})


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((x, weight), (grad,)): the op's arguments and the gradient of its output."""
    batch, channels, height, width, out_channels = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=g)
    weight = torch.randn(out_channels, channels, 1, 1, generator=g) / channels**0.5
    grad = torch.randn(batch, out_channels, height, width, generator=g)
    return (x.to(device), weight.to(device)), (grad.to(device),)


def test_conv1x1(case, bench_device, op_run, measure, benchmark):
    run, setup_s = op_run(conv1x1, reference.conv1x1, lambda: _inputs(case.shape, bench_device))
    batch, channels, height, width, out_channels = case.shape
    macs = batch * channels * height * width * out_channels * (1 if case.mode == "fwd" else 3)
    measure(run, setup_s=setup_s, extra_info={"macs": macs})
    if benchmark.enabled:
        benchmark.extra_info["gmac_per_s"] = macs / benchmark.stats.stats.median / 1e9
