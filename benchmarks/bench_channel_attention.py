"""Benchmarks of mcmri_fast.ops.channel_attention, and of depthwise_channel_attention (the attention with
its depthwise 3×3 projections, as FSMNet's ChannelAttention runs it): op x provider x shape x mode.

Shapes: "paper" = FSMNet's FS-fusion attention (C = 64, 8 heads) at a 240² input and its batch-4 and
320² variants, and the 30² map of its deepest level; "small" = CI smoke shapes. Self-attention inputs
(q, k, v of one shape, as FSMNet's), normalised, a learnable temperature per head. Modes: "fwd" under
torch.no_grad; "fwd+bwd" backpropagates a fixed random gradient to q, k, v and the temperature.
Providers as in mcmri_fast.workflows.benchmarking (reference, compile, cpu, triton, cuda). The cases are defined
here (mcmri_fast.workflows.benchmarking holds data consistency's); the `op_run` and `measure` fixtures of
conftest.py build and time them as for the other suites. extra_info holds GB/s of the bytes the op
must move at least, on CUDA the % of the measured copy bandwidth and the peak memory of one call, and
the speedup over the reference of this session.
"""
import dataclasses

import torch

from mcmri_fast import reference
from mcmri_fast.ops.channel_attention import channel_attention, depthwise_channel_attention
from mcmri_fast.workflows import benchmarking

HEADS = 8


@dataclasses.dataclass(frozen=True)
class AttentionShape:
    batch: int
    channels: int
    height: int
    width: int
    note: str = dataclasses.field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.batch}x{self.channels}x{self.height}x{self.width}"


SHAPES = {
    "paper": (
        AttentionShape(1, 64, 240, 240, "FSMNet FS-fusion, 240² input"),
        AttentionShape(4, 64, 240, 240, "FSMNet FS-fusion, batch 4"),
        AttentionShape(4, 64, 320, 320, "fastMRI knee size, batch 4"),
        AttentionShape(4, 64, 30, 30, "FSMNet's deepest level (30²), batch 4"),
    ),
    "small": (
        AttentionShape(1, 16, 24, 24, "CI smoke"),
        AttentionShape(2, 64, 12, 12, "CI smoke, 8 heads"),
    ),
}


ATTENTION, DEPTHWISE_ATTENTION = f"channel_attention-h{HEADS}", f"depthwise_channel_attention-h{HEADS}"


def cases(size: str) -> list[benchmarking.OpCase]:
    return benchmarking.op_cases({ATTENTION: SHAPES[size], DEPTHWISE_ATTENTION: SHAPES[size]})


def _bytes_moved(shape: AttentionShape, mode: str, itemsize: int = 4) -> int:
    """What either op must move at least: fwd reads q, k, v (or q, kv) and writes out; the backward reads
    the incoming gradient, q, k and v and writes their three gradients (the per-head tensors and the
    depthwise kernels are negligible)."""
    one = shape.batch * shape.channels * shape.height * shape.width * itemsize
    return (4 if mode == "fwd" else 11) * one


def _inputs(shape: AttentionShape, device: torch.device, depthwise: bool):
    """(args, (grad,)): the op's tensor arguments (a temperature of 1 per head; for the depthwise op q,
    kv [B, 2C, H, W] and random 3×3 kernels) and the gradient of its output."""
    generator = torch.Generator().manual_seed(0)
    size = (shape.batch, shape.channels, shape.height, shape.width)
    q, k, v, grad = (torch.randn(size, generator=generator) for _ in range(4))
    temperature = torch.ones(HEADS)
    if depthwise:
        kernels = torch.randn(3 * shape.channels, 1, 3, 3, generator=generator) / 3
        args = (q, torch.cat((k, v), dim=1), kernels[: shape.channels], kernels[shape.channels :], temperature)
    else:
        args = (q, k, v, temperature)
    return tuple(t.to(device) for t in args), (grad.to(device),)


def test_channel_attention(case, bench_device, op_run, measure):
    inputs = lambda: _inputs(case.shape, bench_device, case.op == DEPTHWISE_ATTENTION)  # noqa: E731
    if case.op == DEPTHWISE_ATTENTION:
        run, setup_s = op_run(
            lambda q, kv, wq, wkv, t: depthwise_channel_attention(q, kv, wq, wkv, t, HEADS),
            lambda q, kv, wq, wkv, t: reference.depthwise_channel_attention(q, kv, wq, wkv, t, HEADS),
            inputs,
        )
    else:
        run, setup_s = op_run(
            lambda q, k, v, t: channel_attention(q, k, v, t, HEADS),
            lambda q, k, v, t: reference.channel_attention(q, k, v, t, HEADS),
            inputs,
        )
    measure(
        run,
        setup_s=setup_s,
        bytes_moved=_bytes_moved(case.shape, case.mode),
        extra_info=dict(shape_note=case.shape.note, heads=HEADS),
    )
