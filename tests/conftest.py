"""Test setup: Triton runs interpreted on CPU tensors when there is no GPU; `cuda` tests skip without one.

TRITON_INTERPRET must be set before any Triton kernel module is imported, hence here, at collection.
"""
import functools
import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """One intra-op thread for tests of small models: on a shared 2-core machine, OpenMP threads that
    spin against another process's work make tiny convolutions orders of magnitude slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The variables that cap the CPU instruction sets (mcmri_fast.cpu_isa), and ATen's capability that goes
# with each cap of the library's kernels
ISA_CAPS = ("MCMRI_FAST_CPU_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
_ATEN_CAPABILITY = {"baseline": "default", "avx2": "avx2", "avx512": "avx512"}


@pytest.fixture
def run_python(tmp_path):
    """run(script, **env) -> its stdout: runs a Python script in a fresh process, one thread, with the ISA
    caps given in env and none of this process's (the choice is made once per process); fails the test
    if it fails."""

    def run(script: str, **env: str) -> str:
        path = tmp_path / "script.py"
        path.write_text(script)
        environment = {k: v for k, v in os.environ.items() if k not in ISA_CAPS}
        environment.update(env, OMP_NUM_THREADS="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, environment.get("PYTHONPATH")]))
        result = subprocess.run([sys.executable, str(path)], env=environment, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    return run


@pytest.fixture
def run_on_cpu_kernels(run_python):
    """run(isa, script) -> its stdout: run_python with the CPU kernels capped to `isa` ("baseline", "avx2"
    or "avx512"; MCMRI_FAST_CPU_ISA, and ATen's capability with it). A CPU without `isa` runs the
    highest one it has below it."""

    def run(isa: str, script: str) -> str:
        return run_python(script, MCMRI_FAST_CPU_ISA=isa, ATEN_CPU_CAPABILITY=_ATEN_CAPABILITY[isa])

    return run


@pytest.fixture
def run_on_baseline_cpu_kernels(run_on_cpu_kernels):
    """run(script): run_on_cpu_kernels on the baseline (non-AVX2) build of the CPU kernels, which CPUs
    without AVX2 run."""
    return functools.partial(run_on_cpu_kernels, "baseline")
