"""Benchmarks of mcmri_fast.ops.conv3x3: provider x shape x mode.

Shapes: "paper" = FSMNet's 3×3 convolutions (BraTS 240², batch 1 and 4): 64 → 64 at the top scale and
one level down (120²), the fusions' gate expansion 64 → 128, and the frequency branch's convolutions on
the half spectrum (120 × 61); "small" = CI smoke sizes. A shape id is the input's with the output
channels appended (BxCxHxWxCo). Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates a fixed
random gradient to x and the weight. Built, warmed and timed by the `op_run` and `measure` fixtures
(conftest.py); extra_info holds the GMAC/s of the direct convolution's multiply-adds (so the Winograd
kernel can exceed the CPU's peak), the speedup over the reference (`F.conv2d`) measured in this
session and, on CPU, the instruction set of the library's kernels (which Winograd kernel ran). To time
the AVX2 kernel against oneDNN's AVX2 convolution on an AVX-512 CPU, cap every layer as CI does:
`MCMRI_FAST_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`.
"""
import torch

from mcmri_fast import cpu_isa, reference
from mcmri_fast.ops import conv3x3
from mcmri_fast.workflows import benchmarking

SHAPES = {
    "paper": (
        (1, 64, 240, 240, 64),
        (1, 64, 120, 120, 64),
        (1, 64, 240, 240, 128),
        (1, 64, 120, 61, 64),
        (4, 64, 240, 240, 64),
    ),
    "small": ((1, 8, 16, 16, 8), (2, 8, 9, 7, 16)),
}


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({"conv3x3": SHAPES[size]})


def _inputs(shape: tuple[int, ...], device: torch.device):
    """((x, weight), (grad,)): the op's arguments and the gradient of its output."""
    batch, channels, height, width, out_channels = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=g)
    weight = torch.randn(out_channels, channels, 3, 3, generator=g) / (9 * channels) ** 0.5
    grad = torch.randn(batch, out_channels, height, width, generator=g)
    return (x.to(device), weight.to(device)), (grad.to(device),)


def test_conv3x3(case, bench_device, op_run, measure, benchmark):
    run, setup_s = op_run(conv3x3, reference.conv3x3, lambda: _inputs(case.shape, bench_device))
    batch, channels, height, width, out_channels = case.shape
    macs = 9 * batch * channels * height * width * out_channels * (1 if case.mode == "fwd" else 3)
    extra_info = {"macs": macs}
    if bench_device.type == "cpu":
        extra_info["kernel_isa"] = cpu_isa.kernel_isa()
    measure(run, setup_s=setup_s, extra_info=extra_info)
    if benchmark.enabled:
        benchmark.extra_info["gmac_per_s"] = macs / benchmark.stats.stats.median / 1e9
