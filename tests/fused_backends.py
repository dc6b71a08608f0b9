"""The fused backends that every op's tests run, each with its device, and the skip for one that cannot
run here (no GPU, no Triton)."""
import pytest
import torch

import mcmri_fast
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


def assert_all_close(names, got, expected, atol, rtol):
    """Compares got[i] with expected[i] (named names[i], in got's dtype); a None expected (an argument the
    op was not given, so no gradient) must be None in got too."""
    for name, x, y in zip(names, got, expected):
        if y is None:
            assert x is None, name
            continue
        torch.testing.assert_close(x, y.to(x.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def output_and_gradients(op, backend, args, grad):
    """op(*args) on `backend` and the gradients of ⟨output, grad⟩ to its tensor arguments (fresh leaves):
    (out, *grads), None in place of an argument that is None (an absent bias)."""
    args = tuple(None if t is None else t.detach().clone().requires_grad_() for t in args)
    with mcmri_fast.use_backend(backend):
        out = op(*args)
    grads = iter(torch.autograd.grad(out, [t for t in args if t is not None], grad))
    return (out,) + tuple(None if t is None else next(grads) for t in args)
