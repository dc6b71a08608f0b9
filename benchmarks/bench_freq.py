"""Benchmarks of the frequency-branch ops (mcmri_fast.ops.frequency, FSMNet's FreBlock): op x provider x
shape x mode.

Shapes ("paper"): the half spectra [B, 64, H, W//2 + 1] of FSMNet at 240x240 (BraTS, batch 1 and 4) and
320x320 (fastMRI knee, batch 4) for spectrum_to_polar and polar_to_spectrum, and the full-size maps
[B, 64, H, W] for frequency_epilogue; "small" is a CI smoke set. Modes: "fwd" under torch.no_grad,
"fwd+bwd" with fixed random gradients to every input (the residuals included). Providers: reference
(eager), compile (torch.compile of the reference, dynamic=False), cpu, triton, cuda.

The cases are defined here rather than in mcmri_fast.benchmarking, which holds data consistency's; the
timing, throughput, peak-memory and environment helpers are shared. extra_info holds GB/s (from the bytes
a fused pass must move), peak memory on CUDA, the speedup over the reference measured in this session,
the device and the versions.
"""
import dataclasses
import math
import time

import pytest
import torch

from mcmri_fast import benchmarking, reference
from mcmri_fast.ops import frequency as frequency_ops
from mcmri_fast.backends import use_backend

MIN_ROUND_S = 1e-3
MIN_ROUNDS = 3
ESTIMATE_S = 0.05

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


@dataclasses.dataclass(frozen=True)
class FreqCase:
    op: str
    provider: str
    shape: tuple[int, int, int, int]
    mode: str

    @property
    def id(self) -> str:
        return f"{self.op}-{'x'.join(map(str, self.shape))}-{self.mode}-{self.provider}"

    @property
    def group(self) -> str:
        return f"{self.op} {'x'.join(map(str, self.shape))} {self.mode}"


def freq_cases(size: str) -> list[FreqCase]:
    return [
        FreqCase(op, provider, shape, mode)
        for op in OPS
        for shape in SHAPES[size][op]
        for mode in benchmarking.MODES
        for provider in benchmarking.PROVIDERS  # reference first: the others' speedups need its median
    ]


def pytest_generate_tests(metafunc):
    if "freq_case" in metafunc.fixturenames:
        cases = freq_cases(metafunc.config.getoption("bench_size"))
        metafunc.parametrize("freq_case", cases, ids=[case.id for case in cases])


def _function(op: str, provider: str):
    """The op for a provider: the public API under a forced fused backend, the reference, or its compilation."""
    if provider in benchmarking.FUSED_PROVIDERS:
        public = getattr(frequency_ops, op)

        def fused(*args):
            with use_backend(provider):
                return public(*args)

        return fused
    if provider == "reference":
        return getattr(reference, op)
    torch._dynamo.reset()  # a fresh cache per case: the suite's shapes and modes would overflow Dynamo's
    return torch.compile(getattr(reference, op), dynamic=False)


def _inputs(case: FreqCase, device: torch.device, backward: bool):
    """(args, differentiable inputs, output gradients) of one case."""
    g = torch.Generator().manual_seed(0)
    B, C, H, W = case.shape

    def real(*shape):
        return torch.randn(shape, generator=g).to(device).requires_grad_(backward)

    if case.op == "spectrum_to_polar":
        z = torch.randn((B, C, H, W), dtype=torch.complex64, generator=g).to(device).requires_grad_(backward)
        return (z,), (z,), (torch.randn(B, C, H, W, generator=g).to(device), torch.randn(B, C, H, W, generator=g).to(device))
    if case.op == "polar_to_spectrum":
        args = tuple(real(B, C, H, W) for _ in range(4))
        return args, args, (torch.randn((B, C, H, W), dtype=torch.complex64, generator=g).to(device),)
    y, residual = real(B, C, H, W), real(B, C, H, W)
    weight, bias = real(C, C, 1, 1), real(C)
    return (y, weight, bias, residual), (y, weight, bias, residual), (torch.randn(B, C, H, W, generator=g).to(device),)


def _build(case: FreqCase, device: torch.device):
    backward = case.mode == "fwd+bwd"
    function = _function(case.op, case.provider)
    args, leaves, grads = _inputs(case, device, backward)
    if backward:

        def run():
            out = function(*args)
            torch.autograd.grad(out, leaves, grads)

    else:

        def run():
            with torch.no_grad():
                function(*args)

    for _ in range(2):  # compiles (compile provider), plans the FFTs, warms the allocator
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return run


def test_frequency(benchmark, freq_case, bench_device, bench_time, reference_medians):
    reason = benchmarking.provider_status(freq_case.provider, bench_device)
    if reason is not None:
        pytest.skip(reason)
    start = time.perf_counter()
    run = _build(freq_case, bench_device)
    setup_s = time.perf_counter() - start
    if bench_device.type == "cuda":

        def timed():
            run()
            torch.cuda.synchronize()

    else:
        timed = run

    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < ESTIMATE_S:
        timed()
        calls += 1
    one_call = (time.perf_counter() - start) / calls
    iterations = max(1, math.ceil(MIN_ROUND_S / one_call))
    rounds = max(MIN_ROUNDS, math.ceil(bench_time / (one_call * iterations)))

    bytes_moved = BYTES_PER_ELEMENT[(freq_case.op, freq_case.mode)] * math.prod(freq_case.shape)
    benchmark.group = freq_case.group
    benchmark.extra_info.update(
        op=freq_case.op,
        provider=freq_case.provider,
        shape=str(freq_case.shape),
        mode=freq_case.mode,
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
    if freq_case.provider == "reference":
        reference_medians[freq_case.group] = median
    elif freq_case.group in reference_medians:
        benchmark.extra_info["speedup_vs_reference"] = reference_medians[freq_case.group] / median
