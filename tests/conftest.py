"""Test setup: Triton runs interpreted on CPU tensors when there is no GPU; `cuda` tests skip without one.

TRITON_INTERPRET must be set before any Triton kernel module is imported, hence here, at collection.
"""
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


@pytest.fixture
def run_on_baseline_cpu_kernels(tmp_path):
    """run(script): runs a Python script in a fresh process on the baseline (non-AVX2) build of the CPU
    kernels, which CPUs without AVX2 run (forced with MCMRI_FAST_CPU_ISA=baseline, and ATen's capability
    with it: the choice is made once per process); fails the test if it fails."""

    def run(script: str) -> None:
        path = tmp_path / "baseline_check.py"
        path.write_text(script)
        env = dict(os.environ, MCMRI_FAST_CPU_ISA="baseline", ATEN_CPU_CAPABILITY="default", OMP_NUM_THREADS="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        result = subprocess.run([sys.executable, str(path)], env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]

    return run
