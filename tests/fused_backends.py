"""The fused backends that every op's tests run, each with its device, and the skip for one that cannot
run here (no GPU, no Triton)."""
import pytest
import torch

from mcmri_fast.backends import backend_status

FUSED = [
    pytest.param("cpu", "cpu", id="cpu"),
    pytest.param("triton", "cpu", id="triton-interpreted"),
    pytest.param("cuda", "cuda", id="cuda", marks=pytest.mark.cuda),
    pytest.param("triton", "cuda", id="triton-cuda", marks=pytest.mark.cuda),
]


def require_backend(backend: str, device: str) -> None:
    """Skips the calling test when `backend` cannot run on `device` here, saying why."""
    reason = backend_status(backend, torch.device(device))
    if reason is not None:
        pytest.skip(reason)
