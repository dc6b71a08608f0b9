"""Benchmarks of mcmri_fast.ops.channel_attention: provider x shape x mode.

Shapes: "paper" = FSMNet's FS-fusion attention (C = 64, 8 heads) at a 240² input and its batch-4 and
320² variants, and the 30² map of its deepest level; "small" = CI smoke shapes. Self-attention inputs
(q, k, v of one shape, as FSMNet's), normalised, a learnable temperature per head. Modes: "fwd" under
torch.no_grad; "fwd+bwd" backpropagates a fixed random gradient to q, k, v and the temperature.
Providers as in mcmri_fast.benchmarking (reference, compile, cpu, triton, cuda). The cases are defined
here (mcmri_fast.benchmarking holds data consistency's); the timing and the extra_info follow
bench_data_consistency.py: GB/s of the bytes the op must move at least, on CUDA the % of the measured
copy bandwidth and the peak memory of one call, and the speedup over the reference of this session.
"""
import dataclasses
import itertools
import math
import time

import pytest
import torch

from mcmri_fast import benchmarking, reference
from mcmri_fast.backends import use_backend
from mcmri_fast.ops.channel_attention import channel_attention

MIN_ROUND_S = 1e-3
MIN_ROUNDS = 3
ESTIMATE_S = 0.05
HEADS = 8
FUSED_PROVIDERS = ("cpu", "triton", "cuda")


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


@dataclasses.dataclass(frozen=True)
class AttentionCase:
    provider: str
    shape: AttentionShape
    mode: str

    @property
    def id(self) -> str:
        return f"{self.shape}-h{HEADS}-{self.mode}-{self.provider}"

    @property
    def group(self) -> str:
        return f"channel_attention {self.shape} h{HEADS} {self.mode}"


def _cases(size: str) -> list[AttentionCase]:
    # The providers innermost, the reference first: its median is there when the others are timed.
    return [
        AttentionCase(provider, shape, mode)
        for shape, mode, provider in itertools.product(SHAPES[size], benchmarking.MODES, benchmarking.PROVIDERS)
    ]


def _bytes_moved(shape: AttentionShape, mode: str, itemsize: int = 4) -> int:
    """What the op must move at least: fwd reads q, k, v and writes out; the backward reads the incoming
    gradient, q, k and v and writes their three gradients (the per-head tensors are negligible)."""
    one = shape.batch * shape.channels * shape.height * shape.width * itemsize
    return (4 if mode == "fwd" else 11) * one


def _make_op(provider: str):
    if provider in FUSED_PROVIDERS:

        def fused(q, k, v, t):
            with use_backend(provider):
                return channel_attention(q, k, v, t, HEADS)

        return fused
    if provider == "reference":
        return lambda q, k, v, t: reference.channel_attention(q, k, v, t, HEADS)
    torch._dynamo.reset()  # a fresh cache per case: see mcmri_fast.benchmarking._make_op
    compiled = torch.compile(reference.channel_attention, dynamic=False)
    return lambda q, k, v, t: compiled(q, k, v, t, HEADS)


def _build(case: AttentionCase, device: torch.device):
    shape = case.shape
    generator = torch.Generator().manual_seed(0)
    size = (shape.batch, shape.channels, shape.height, shape.width)
    backward = case.mode == "fwd+bwd"
    q, k, v, grad = (torch.randn(size, generator=generator).to(device) for _ in range(4))
    q, k, v = (t.requires_grad_(backward) for t in (q, k, v))
    temperature = torch.ones(HEADS, device=device, requires_grad=backward)
    op = _make_op(case.provider)
    if backward:

        def run() -> None:
            out = op(q, k, v, temperature)
            torch.autograd.grad(out, (q, k, v, temperature), grad)

    else:

        def run() -> None:
            with torch.no_grad():
                op(q, k, v, temperature)

    return run


def pytest_generate_tests(metafunc):
    if "attention_case" in metafunc.fixturenames:
        cases = _cases(metafunc.config.getoption("bench_size"))
        metafunc.parametrize("attention_case", cases, ids=[case.id for case in cases])


def test_channel_attention(benchmark, attention_case, bench_device, bench_time, reference_medians):
    case = attention_case
    reason = benchmarking.provider_status(case.provider, bench_device)
    if reason is not None:
        pytest.skip(reason)
    start = time.perf_counter()
    run = _build(case, bench_device)
    if bench_device.type == "cuda":

        def timed():
            run()
            torch.cuda.synchronize()

    else:
        timed = run

    for _ in range(2):  # warm-up: compiles (provider "compile", Triton), settles the allocator
        timed()
    setup_s = time.perf_counter() - start
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < ESTIMATE_S:
        timed()
        calls += 1
    one_call = (time.perf_counter() - start) / calls
    iterations = max(1, math.ceil(MIN_ROUND_S / one_call))
    rounds = max(MIN_ROUNDS, math.ceil(bench_time / (one_call * iterations)))

    bytes_moved = _bytes_moved(case.shape, case.mode)
    benchmark.group = case.group
    benchmark.extra_info.update(
        provider=case.provider,
        shape=str(case.shape),
        shape_note=case.shape.note,
        heads=HEADS,
        mode=case.mode,
        bytes_moved=bytes_moved,
        setup_s=round(setup_s, 3),
        **benchmarking.environment(bench_device),
    )
    benchmark.pedantic(timed, rounds=rounds, iterations=iterations)
    if not benchmark.enabled:  # --benchmark-disable: the call ran once, as a smoke test
        return

    median = benchmark.stats.stats.median
    throughput = benchmarking.throughput(bytes_moved, median, bench_device)
    benchmark.extra_info.update({key: value for key, value in throughput.items() if value is not None})
    peak = benchmarking.peak_memory(run, bench_device)
    if peak is not None:
        benchmark.extra_info["peak_mem_mb"] = peak / 2**20
    if case.provider == "reference":
        reference_medians[case.group] = median
    elif case.group in reference_medians:
        benchmark.extra_info["speedup_vs_reference"] = reference_medians[case.group] / median
