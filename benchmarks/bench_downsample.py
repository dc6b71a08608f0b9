"""Benchmarks of mcmri_fast.ops.unshuffle_downsample: provider x shape x mode.

Shapes: "paper" = FSMNet's DownSample inputs (64 channels, conv3×3 → pixel-unshuffle(2) → conv1×1, no
biases) at its top scale (BraTS 240², batch 1 and 4; fastMRI knee 320², batch 4) and one level down
(120²); "small" = CI smoke sizes. Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates a fixed
random gradient to x and both weights. Built, warmed and timed by the `op_run` and `measure` fixtures
(conftest.py); extra_info holds the multiply-adds the provider computes and the GMAC/s, and the
speedup over the reference measured in this session. The fused backends all run the same composed
strided convolution (torch's: oneDNN, cuDNN); the reference and `compile` run the three steps.
"""
import torch

from mcmri_fast import reference
from mcmri_fast.ops import unshuffle_downsample
from mcmri_fast.workflows import benchmarking

CHANNELS = 64
SHAPES = {
    "paper": ((1, CHANNELS, 240, 240), (1, CHANNELS, 120, 120), (4, CHANNELS, 240, 240), (4, CHANNELS, 320, 320)),
    "small": ((1, 8, 16, 16), (2, 8, 14, 10)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"unshuffle_downsample": SHAPES[size]})


def _forward_macs(shape: tuple[int, ...], provider: str) -> int:
    """Multiply-adds of one forward: the three steps (3×3 at full size, 1×1 on the unshuffled map) or the
    one 4×4 convolution of stride 2."""
    batch, channels, height, width = shape
    out_pixels = batch * (height // 2) * (width // 2)
    if provider in benchmarking.FUSED_PROVIDERS:
        return out_pixels * channels * channels * 16
    return out_pixels * 4 * channels * channels * 9 + out_pixels * channels * 4 * channels


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((x, conv_weight, project_weight), (grad,)): the op's arguments and the gradient of its output."""
    g = torch.Generator().manual_seed(0)
    batch, channels, height, width = shape
    x = torch.randn(shape, generator=g)
    conv_weight = torch.randn(channels, channels, 3, 3, generator=g) / (9 * channels) ** 0.5
    project_weight = torch.randn(channels, 4 * channels, 1, 1, generator=g) / (4 * channels) ** 0.5
    grad = torch.randn(batch, channels, height // 2, width // 2, generator=g)
    return tuple(t.to(device) for t in (x, conv_weight, project_weight)), (grad.to(device),)


def _reference(x, conv_weight, project_weight):
    return reference.unshuffle_downsample(x, conv_weight, project_weight, 2)


def test_unshuffle_downsample(case, bench_device, op_run, measure, benchmark):
    run, setup_s = op_run(unshuffle_downsample, _reference, lambda: _inputs(case.shape, bench_device))
    macs = _forward_macs(case.shape, case.provider) * (1 if case.mode == "fwd" else 3)
    measure(run, setup_s=setup_s, extra_info={"macs": macs})
    if benchmark.enabled:
        benchmark.extra_info["gmac_per_s"] = macs / benchmark.stats.stats.median / 1e9
