import pytest
import torch

import mcmri_fast
from mcmri_fast import _native
from mcmri_fast.backends import BackendUnavailableError, backend_status, forced_backends, select_backend


def test_reference_always_available():
    assert "reference" in mcmri_fast.available_backends("cpu")
    assert backend_status("reference", torch.device("cpu")) is None


def test_cpu_backend_follows_native_build():
    assert ("cpu" in mcmri_fast.available_backends("cpu")) == _native.native_loaded()


def test_automatic_choice_prefers_fused_cpu():
    expected = "cpu" if _native.native_loaded() else "reference"
    assert select_backend("op", torch.device("cpu")) == expected


def test_forcing_with_context_manager_and_env(monkeypatch):
    monkeypatch.delenv("MCMRI_FAST_BACKEND", raising=False)
    with mcmri_fast.use_backend("reference"):
        assert select_backend("op", torch.device("cpu")) == "reference"
    assert forced_backends() == ()
    monkeypatch.setenv("MCMRI_FAST_BACKEND", "reference")
    assert select_backend("op", torch.device("cpu")) == "reference"
    with mcmri_fast.use_backend(None):  # None defers to the environment
        assert forced_backends() == ("reference",)
    monkeypatch.setenv("MCMRI_FAST_BACKEND", "cuda, reference")
    assert forced_backends() == ("cuda", "reference")
    assert select_backend("op", torch.device("cpu")) == "reference"


def test_forcing_an_unavailable_backend_raises():
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="forced but is unavailable"):
        select_backend("op", torch.device("cpu"))
    with mcmri_fast.use_backend("cpu"), pytest.raises(BackendUnavailableError, match="has no cpu implementation"):
        select_backend("op", torch.device("cpu"), supported=("reference",))


def test_a_forced_preference_takes_the_first_backend_the_op_has():
    cpu = torch.device("cpu")
    with mcmri_fast.use_backend("triton", "reference"):
        assert select_backend("op", cpu, supported=("cpu", "reference")) == "reference"
    with mcmri_fast.use_backend("cuda", "cpu"), pytest.raises(BackendUnavailableError, match="'cuda' or 'cpu'"):
        select_backend("op", cpu, supported=("cuda", "reference"))


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown backend"):
        with mcmri_fast.use_backend("fast"):
            pass


def test_without_native_extension_the_reference_path_works():
    """MCMRI_FAST_NO_NATIVE=1: the package imports, runs on the reference path, says so, and refuses
    a forced native backend."""
    import os
    import subprocess
    import sys

    code = (
        "import torch, mcmri_fast\n"
        "from mcmri_fast.ops import data_consistency\n"
        "assert mcmri_fast.available_backends('cpu') == ['reference']\n"
        "from mcmri_fast.data import fft2c\n"
        "x = torch.randn(1, 1, 6, 5, dtype=torch.complex64)\n"
        "full = torch.ones(5, dtype=torch.bool)\n"
        # hard DC on a fully sampled k-space returns its image
        "torch.testing.assert_close(data_consistency(torch.zeros_like(x), fft2c(x), full), x, atol=1e-5, rtol=1e-5)\n"
        "try:\n"
        "    with mcmri_fast.use_backend('cpu'):\n"
        "        data_consistency(x, x, torch.ones(5, dtype=torch.bool))\n"
        "except mcmri_fast.BackendUnavailableError as e:\n"
        "    assert 'MCMRI_FAST_NO_NATIVE' in str(e)\n"
        "else:\n"
        "    raise SystemExit('forcing cpu did not raise')\n"
    )
    env = dict(os.environ, MCMRI_FAST_NO_NATIVE="1")
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    info = subprocess.run([sys.executable, "-m", "mcmri_fast", "info"], check=True, env=env, capture_output=True, text=True)
    assert "not loaded: disabled by MCMRI_FAST_NO_NATIVE" in info.stdout
