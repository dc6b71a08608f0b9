import pytest
import torch

import mcmri_fast
from mcmri_fast import _native
from mcmri_fast.backends import BackendUnavailableError, backend_status, forced_backend, select_backend


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
    assert forced_backend() is None
    monkeypatch.setenv("MCMRI_FAST_BACKEND", "reference")
    assert select_backend("op", torch.device("cpu")) == "reference"
    with mcmri_fast.use_backend(None):  # None defers to the environment
        assert forced_backend() == "reference"


def test_forcing_an_unavailable_backend_raises():
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="forced but is unavailable"):
        select_backend("op", torch.device("cpu"))
    with mcmri_fast.use_backend("cpu"), pytest.raises(BackendUnavailableError, match="does not support"):
        select_backend("op", torch.device("cpu"), supported=("reference",))


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown backend"):
        with mcmri_fast.use_backend("fast"):
            pass
