"""pytest-benchmark suites of mcmri_fast: options, collection of bench_*.py, shared fixtures.

Run from the repository root:

    python -m pytest benchmarks                       # paper sizes, on CUDA if there is a GPU
    python -m pytest benchmarks --bench-size small    # the CI smoke sizes
    python -m pytest benchmarks --bench-device cpu -k "reference or cpu"

Each bench_*.py with cases defines `cases(size)` (the cases of a --bench-size, each with .id, .group,
.provider, .mode; the reference first in each group) and a test taking the `case` fixture; this conftest
parametrises it, skips the providers the device lacks and, with the `measure` fixture, times the case
and fills extra_info the same way for every suite. `op_run` builds a case of a single op (the op
suites, whose cases are `benchmarking.op_cases`). Data consistency's and the models' cases are defined
in `mcmri_fast.workflows.benchmarking` (shared with `python -m mcmri_fast bench`). pytest-benchmark stores runs
(`--benchmark-autosave`, `--benchmark-compare`) under .benchmarks/<device>/ unless --benchmark-storage
says otherwise. The repository's pytest config points at tests/, so this conftest collects the
bench_*.py files itself.
"""
import fnmatch
import math
import re
import time

import pytest
import torch

from mcmri_fast.backends import use_backend
from mcmri_fast.workflows import benchmarking
from mcmri_fast.workflows.common import synchronize

# A round times enough calls to last this long, so fast GPU calls are not dominated by timer overhead.
MIN_ROUND_S = 1e-3
MIN_ROUNDS = 3
# The cost of one call is the mean over warm calls for this long (one call can be unrepresentatively
# fast on a busy machine).
ESTIMATE_S = 0.05


def pytest_addoption(parser):
    group = parser.getgroup("mcmri_fast benchmarks")
    group.addoption(
        "--bench-size",
        choices=benchmarking.SIZES,
        default="paper",
        help="shape set: paper (the papers' sizes, default) or small (CI smoke run)",
    )
    group.addoption(
        "--bench-device",
        choices=("cpu", "cuda"),
        default=None,
        help="device to benchmark on (default: cuda if available, else cpu)",
    )
    group.addoption(
        "--bench-time",
        type=float,
        default=1.0,
        help="seconds of timed calls to aim for per case (at least 3 rounds are timed; default 1.0)",
    )


_DEFAULT_STORAGE = "file://./.benchmarks"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    # pytest-benchmark keys stored runs by machine, not by GPU: unless told otherwise, store them per
    # device (.benchmarks/<device>/...), so --benchmark-compare compares like with like.
    if getattr(config.option, "benchmark_storage", None) == _DEFAULT_STORAGE:
        device = _device(config.getoption("bench_device"))
        slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{device.type}-{benchmarking.device_name(device)}").strip("_")
        config.option.benchmark_storage = f"{_DEFAULT_STORAGE}/{slug}"


def _device(name: str | None) -> torch.device:
    if name is None:
        return benchmarking.default_device()
    if name == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--bench-device cuda was given but CUDA is not available")
    return torch.device(name)


def pytest_collect_file(file_path, parent):
    # pytest collects bench_*.py given by path already; a directory argument needs this hook, because the
    # rootdir config (pyproject.toml) keeps the default python_files. Skip what pytest collects itself.
    if file_path.suffix != ".py" or not fnmatch.fnmatch(file_path.name, "bench_*.py"):
        return None
    if parent.session.isinitpath(file_path):
        return None
    if any(fnmatch.fnmatch(file_path.name, pattern) for pattern in parent.config.getini("python_files")):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


@pytest.fixture(scope="session")
def bench_device(pytestconfig) -> torch.device:
    return _device(pytestconfig.getoption("bench_device"))


@pytest.fixture(scope="session")
def bench_time(pytestconfig) -> float:
    return pytestconfig.getoption("bench_time")


@pytest.fixture(scope="session")
def reference_medians() -> dict[str, float]:
    """Median seconds of the reference per case group, filled as the reference cases run (they run
    first in each group), so the other providers can record a speedup measured in the same session."""
    return {}


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cases = metafunc.module.cases(metafunc.config.getoption("bench_size"))
        metafunc.parametrize("case", cases, ids=[case.id for case in cases], indirect=True)


@pytest.fixture
def case(request, bench_device):
    """The case of the test (from its module's cases(size)); skipped when its provider cannot run on
    the bench device (benchmarking.provider_status says why)."""
    reason = benchmarking.provider_status(request.param.provider, bench_device)
    if reason is not None:
        pytest.skip(reason)
    return request.param


@pytest.fixture
def op_run(case, bench_device):
    """op_run(fused, reference, inputs) -> (run, setup_s): one call of a single op for `case`, warmed.

    The op is `fused` under use_backend(provider) for the fused providers, `reference` for "reference"
    and torch.compile(reference, dynamic=False) for "compile" (after a Dynamo reset: its cache per code
    object would overflow with the suite's shapes and modes, falling back to eager without a word).
    inputs() -> (args, grads) gives the op's tensor arguments and the gradients of its output(s). Mode
    "fwd" calls op(*args) under torch.no_grad; "fwd+bwd" makes args require grad and backpropagates
    grads to all of them (autograd.grad: nothing accumulates between calls). run() is called twice
    (compiles, plans FFTs, settles the allocator) and not synchronised (measure does that); setup_s is
    the time of all this.
    """

    def op_run(fused, reference, inputs):
        start = time.perf_counter()
        if case.provider in benchmarking.FUSED_PROVIDERS:

            def op(*args):
                with use_backend(case.provider):
                    return fused(*args)

        elif case.provider == "reference":
            op = reference
        else:
            torch._dynamo.reset()
            op = torch.compile(reference, dynamic=False)
        args, grads = inputs()
        if case.mode == "fwd+bwd":
            args = tuple(t.requires_grad_() for t in args)

            def run():
                torch.autograd.grad(op(*args), args, grads)

        else:

            def run():
                with torch.no_grad():
                    op(*args)

        for _ in range(2):
            run()
        synchronize(bench_device)
        return run, time.perf_counter() - start

    return op_run


@pytest.fixture
def measure(case, benchmark, bench_device, bench_time, reference_medians):
    """measure(run, *, setup_s, extra_info=None, bytes_moved=None, min_estimate_calls=2): times run() for `case`.

    run() is one warm call (synchronised on CUDA here). Rounds and iterations come from the mean cost of
    warm calls over ESTIMATE_S (at least `min_estimate_calls` of them): a round lasts at least
    MIN_ROUND_S, all rounds `--bench-time` seconds, at least MIN_ROUNDS rounds. benchmark.group is the
    case's group; extra_info gets the case's provider and mode (and op and shape for a
    benchmarking.OpCase), `extra_info` (the suite's own fields), bytes_moved (when given),
    setup_s and benchmarking.environment(). With --benchmark-disable run() is called once, as a smoke
    test, and nothing more is recorded. Otherwise extra_info also gets GB/s (and on CUDA the % of the
    measured copy bandwidth) when bytes_moved is given, peak_mem_mb on CUDA and speedup_vs_reference:
    the reference of a group runs first and leaves its median in `reference_medians`.
    """

    def measure(run, *, setup_s, extra_info=None, bytes_moved=None, min_estimate_calls=2):
        if bench_device.type == "cuda":

            def timed():
                run()
                torch.cuda.synchronize()

        else:
            timed = run

        calls, start = 0, time.perf_counter()
        while calls < min_estimate_calls or time.perf_counter() - start < ESTIMATE_S:
            timed()
            calls += 1
        one_call = (time.perf_counter() - start) / calls
        iterations = max(1, math.ceil(MIN_ROUND_S / one_call))
        rounds = max(MIN_ROUNDS, math.ceil(bench_time / (one_call * iterations)))

        benchmark.group = case.group
        benchmark.extra_info.update(provider=case.provider, mode=case.mode)
        if isinstance(case, benchmarking.OpCase):
            benchmark.extra_info.update(op=case.op, shape=case.shape_name)
        benchmark.extra_info.update(extra_info or {})
        if bytes_moved is not None:
            benchmark.extra_info["bytes_moved"] = bytes_moved
        benchmark.extra_info.update(setup_s=round(setup_s, 3), **benchmarking.environment(bench_device))
        benchmark.pedantic(timed, rounds=rounds, iterations=iterations)
        if not benchmark.enabled:  # --benchmark-disable: the call ran once, as a smoke test
            return

        median = benchmark.stats.stats.median
        if bytes_moved is not None:
            throughput = benchmarking.throughput(bytes_moved, median, bench_device)
            benchmark.extra_info.update({key: value for key, value in throughput.items() if value is not None})
        peak = benchmarking.peak_memory(run, bench_device)
        if peak is not None:
            benchmark.extra_info["peak_mem_mb"] = peak / 2**20
        if case.provider == "reference":
            reference_medians[case.group] = median
        elif case.group in reference_medians:
            benchmark.extra_info["speedup_vs_reference"] = reference_medians[case.group] / median

    return measure
