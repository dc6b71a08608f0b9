"""Benchmarks of mcmri_fast.ops.gated_fusion: provider x shape x mode.

Shapes: "paper" = FSMNet's fusion gate at its sizes (64 channels; BraTS 240², batch 1 and 4; fastMRI
knee 320², batch 4); "small" = CI smoke sizes. Modes: "fwd" under torch.no_grad, "fwd+bwd" backpropagates
a fixed random gradient to a, b and the gate. The cleanup of non-finite values is on, as FSMNet runs it.
The cases are local to this file (mcmri_fast.benchmarking holds data consistency's). Each case is built
and warmed (compiled, for `compile`) outside the timed rounds; extra_info holds GB/s, on CUDA the % of the
measured copy bandwidth and the peak memory of one call, and the speedup over the reference measured in
this session.
"""
import dataclasses
import math
import time

import pytest
import torch

from mcmri_fast import benchmarking, reference
from mcmri_fast.backends import use_backend
from mcmri_fast.ops import gated_fusion as gated_fusion_module

SHAPES = {
    "paper": ((1, 64, 240, 240), (4, 64, 240, 240), (4, 64, 320, 320)),
    "small": ((1, 8, 16, 16), (2, 16, 33, 31)),
}
NONFINITE = 1e-5  # FSMNet's replacement of non-finite values
# A round times enough calls to last this long, so fast GPU calls are not dominated by timer overhead.
MIN_ROUND_S = 1e-3
MIN_ROUNDS = 3
ESTIMATE_S = 0.05


@dataclasses.dataclass(frozen=True)
class GateCase:
    provider: str
    shape: tuple[int, ...]
    mode: str

    @property
    def group(self) -> str:
        return f"gated_fusion-{'x'.join(map(str, self.shape))}-{self.mode}"

    @property
    def id(self) -> str:
        return f"{self.group}-{self.provider}"


def _cases(size: str) -> list[GateCase]:
    # The reference first in each group: the other providers' speedups are measured against it.
    return [
        GateCase(provider, shape, mode)
        for shape in SHAPES[size]
        for mode in benchmarking.MODES
        for provider in benchmarking.PROVIDERS
    ]


def _bytes_moved(shape: tuple[int, ...], mode: str, itemsize: int = 4) -> int:
    """The bytes the op must move at least: a, b, gate (2x) and out forward (5 tensors of a's size);
    backward grad, a, b, gate (2x), grad_a, grad_b and grad_gate (2x) on top (9)."""
    tensors = 5 if mode == "fwd" else 14
    return tensors * math.prod(shape) * itemsize


def _make_op(provider: str):
    if provider in benchmarking.FUSED_PROVIDERS:

        def fused(a, b, gate):
            with use_backend(provider):
                return gated_fusion_module.gated_fusion(a, b, gate, nonfinite=NONFINITE)

        return fused
    if provider == "reference":
        return lambda a, b, gate: reference.gated_fusion(a, b, gate, NONFINITE)
    # Dynamo's cache holds a few graphs per code object, which the cases would exceed: start afresh.
    torch._dynamo.reset()
    compiled = torch.compile(reference.gated_fusion, dynamic=False)
    return lambda a, b, gate: compiled(a, b, gate, NONFINITE)


def _build(case: GateCase, device: torch.device):
    """run(): one iteration of the case (not synchronised: the timer does that), warmed twice."""
    g = torch.Generator().manual_seed(0)
    B, C, *spatial = case.shape
    a, b, grad = (torch.randn(case.shape, generator=g).to(device) for _ in range(3))
    gate = torch.randn((B, 2 * C, *spatial), generator=g).to(device)
    op = _make_op(case.provider)
    if case.mode == "fwd":

        def run():
            with torch.no_grad():
                op(a, b, gate)

    else:
        inputs = tuple(t.requires_grad_() for t in (a, b, gate))

        def run():
            torch.autograd.grad(op(*inputs), inputs, grad)

    for _ in range(2):
        run()
    return run


def pytest_generate_tests(metafunc):
    if "gate_case" in metafunc.fixturenames:
        cases = _cases(metafunc.config.getoption("bench_size"))
        metafunc.parametrize("gate_case", cases, ids=[case.id for case in cases])


def test_gated_fusion(benchmark, gate_case, bench_device, bench_time, reference_medians):
    reason = benchmarking.provider_status(gate_case.provider, bench_device)
    if reason is not None:
        pytest.skip(reason)
    start = time.perf_counter()
    run = _build(gate_case, bench_device)
    setup_s = time.perf_counter() - start
    if bench_device.type == "cuda":

        def timed():
            run()
            torch.cuda.synchronize()

    else:
        timed = run

    # Rounds from the mean cost of warm calls over ESTIMATE_S: `bench_time` seconds in all, at least
    # MIN_ROUNDS rounds.
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < ESTIMATE_S:
        timed()
        calls += 1
    one_call = (time.perf_counter() - start) / calls
    iterations = max(1, math.ceil(MIN_ROUND_S / one_call))
    rounds = max(MIN_ROUNDS, math.ceil(bench_time / (one_call * iterations)))

    bytes_moved = _bytes_moved(gate_case.shape, gate_case.mode)
    benchmark.group = gate_case.group
    benchmark.extra_info.update(
        provider=gate_case.provider,
        shape=str(gate_case.shape),
        mode=gate_case.mode,
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
    if gate_case.provider == "reference":
        reference_medians[gate_case.group] = median
    elif gate_case.group in reference_medians:
        benchmark.extra_info["speedup_vs_reference"] = reference_medians[gate_case.group] / median
