"""Benchmarks of mcmri_fast.ops.data_consistency: provider x shape x mask kind x mode.

The cases (shapes, masks, modes, providers, bytes moved) come from mcmri_fast.benchmarking. Each case
is built and warmed (compiled, for the `compile` provider) outside the timed rounds. extra_info holds
GB/s, on CUDA the % of the measured copy bandwidth and the peak memory of one call, the speedup over
the reference measured in this session, the device and the versions.
"""
import math
import time

import pytest
import torch

from mcmri_fast import benchmarking

# A round times enough calls to last this long, so fast GPU calls are not dominated by timer overhead.
MIN_ROUND_S = 1e-3
MIN_ROUNDS = 3
ESTIMATE_S = 0.05


def pytest_generate_tests(metafunc):
    if "dc_case" in metafunc.fixturenames:
        cases = benchmarking.data_consistency_cases(metafunc.config.getoption("bench_size"))
        metafunc.parametrize("dc_case", cases, ids=[case.id for case in cases])


def test_data_consistency(benchmark, dc_case, bench_device, bench_time, reference_medians):
    reason = benchmarking.provider_status(dc_case.provider, bench_device)
    if reason is not None:
        pytest.skip(reason)
    built = benchmarking.build_data_consistency_case(dc_case, bench_device)
    run = built.run
    if bench_device.type == "cuda":

        def timed():
            run()
            torch.cuda.synchronize()

    else:
        timed = run

    # Rounds from the mean cost of warm calls over ESTIMATE_S (one call can be unrepresentatively fast
    # on a busy machine): `bench_time` seconds in all, at least MIN_ROUNDS rounds.
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < ESTIMATE_S:
        timed()
        calls += 1
    one_call = (time.perf_counter() - start) / calls
    iterations = max(1, math.ceil(MIN_ROUND_S / one_call))
    rounds = max(MIN_ROUNDS, math.ceil(bench_time / (one_call * iterations)))

    benchmark.group = dc_case.group
    benchmark.extra_info.update(
        provider=dc_case.provider,
        shape=str(dc_case.shape),
        shape_note=dc_case.shape.note,
        mask=dc_case.mask,
        mode=dc_case.mode,
        bytes_moved=built.bytes_moved,
        input_copies=built.input_copies,
        setup_s=round(built.setup_s, 3),
        **benchmarking.environment(bench_device),
    )
    benchmark.pedantic(timed, rounds=rounds, iterations=iterations)
    if not benchmark.enabled:  # --benchmark-disable: the call ran once, as a smoke test
        return

    median = benchmark.stats.stats.median
    throughput = benchmarking.throughput(built.bytes_moved, median, bench_device)
    benchmark.extra_info.update({key: value for key, value in throughput.items() if value is not None})
    peak = benchmarking.peak_memory(run, bench_device)
    if peak is not None:
        benchmark.extra_info["peak_mem_mb"] = peak / 2**20
    if dc_case.provider == "reference":
        reference_medians[dc_case.group] = median
    elif dc_case.group in reference_medians:
        benchmark.extra_info["speedup_vs_reference"] = reference_medians[dc_case.group] / median
