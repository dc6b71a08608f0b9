"""pytest-benchmark suites of mcmri_fast: options, collection of bench_*.py, shared fixtures.

Run from the repository root:

    python -m pytest benchmarks                       # paper sizes, on CUDA if there is a GPU
    python -m pytest benchmarks --bench-size small    # the CI smoke sizes
    python -m pytest benchmarks --bench-device cpu -k "reference or cpu"

The cases themselves are defined in `mcmri_fast.benchmarking` (shared with `python -m mcmri_fast bench`).
pytest-benchmark stores runs (`--benchmark-autosave`, `--benchmark-compare`) under
.benchmarks/<device>/ unless --benchmark-storage says otherwise. The repository's pytest config points
at tests/, so this conftest collects the bench_*.py files itself.
"""
import fnmatch
import re

import pytest
import torch

from mcmri_fast import benchmarking


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
