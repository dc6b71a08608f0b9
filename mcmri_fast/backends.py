"""Which implementation of an op runs: availability, the per-device preference order, and forcing.

Backends: `cuda` (the CUDA kernels of mcmri_fast._C), `triton` (kernels/), `cpu` (the C++ CPU kernels
of mcmri_fast._C) and `reference` (pure PyTorch). On a CUDA tensor an op runs the first available
backend of its CUDA order (by default cuda, triton, reference), on a CPU tensor the first of its CPU
order (cpu, reference). `MCMRI_FAST_BACKEND=<name>` or `with mcmri_fast.use_backend(name):` forces one;
forcing a backend that cannot run the inputs raises `BackendUnavailableError`, never falls back.

Every op states which backends it has (`supported`, which may depend on the inputs: conv3x3 has no
Triton kernel, cuDNN is its CUDA path). To run a whole network on one backend where its ops have it,
force a preference: `use_backend("triton", "cuda")` (or MCMRI_FAST_BACKEND=triton,cuda) runs each op
on the first of these it supports and can run, and raises for an op that has none of them.
"""
import contextlib
import contextvars
import functools
import os

import torch

from . import _native

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "backend_status",
    "select_backend",
    "use_backend",
]

BACKENDS = ("cuda", "triton", "cpu", "reference")
DEFAULT_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}

_forced: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("mcmri_fast_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """A backend was asked for explicitly but cannot run the given inputs."""


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(*names: str | None):
    """Force backend `name` for the ops called inside the block, or with several names the first of them
    that each op supports and can run (`use_backend("triton", "cuda")`); None defers to MCMRI_FAST_BACKEND."""
    if names == (None,):
        forced = None
    elif not names:
        raise TypeError("use_backend needs a backend name (or None)")
    else:
        forced = tuple(_check_name(name) for name in names)
    token = _forced.set(forced)
    try:
        yield
    finally:
        _forced.reset(token)


def forced_backends() -> tuple[str, ...]:
    """The backends forced by `use_backend` or, outside it, by MCMRI_FAST_BACKEND (comma-separated), in
    preference order; empty if the choice is automatic."""
    forced = _forced.get()
    if forced is None:
        value = os.environ.get("MCMRI_FAST_BACKEND", "")
        forced = tuple(_check_name(name.strip()) for name in value.split(",") if name.strip())
    return forced


def _triton_interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return f"triton is not installed ({exc})"
    return None


def _cuda_capability_ok(device: torch.device) -> bool:
    return torch.cuda.get_device_capability(device) >= (8, 0)


def backend_status(name: str, device: torch.device) -> str | None:
    """None when backend `name` can run on `device`, else the reason it cannot."""
    _check_name(name)
    device = torch.device(device)
    if name == "reference":
        return None
    if name in ("cpu", "cuda"):
        if name != device.type:
            return f"the {name} backend runs on {name} tensors, got a {device.type} tensor"
        if not _native.native_loaded():
            return f"the native extension mcmri_fast._C is not available ({_native.load_error})"
        if name == "cuda" and not _native.native_cuda_built():
            return "mcmri_fast._C was built without CUDA (reinstall with a CUDA torch and nvcc)"
        return None
    # triton
    error = _triton_import_error()
    if error:
        return error
    if device.type == "cuda":
        if not _cuda_capability_ok(device):
            return f"triton needs compute capability 8.0 or newer, {torch.cuda.get_device_name(device)} has less"
        return None
    if device.type == "cpu" and _triton_interpreted():
        return None
    return f"triton runs on CUDA tensors (or on CPU tensors with TRITON_INTERPRET=1), got a {device.type} tensor"


def available_backends(device: torch.device | str) -> list[str]:
    """The backends that can run on `device`, in the default preference order."""
    device = torch.device(device)
    order = DEFAULT_ORDER.get(device.type, ("reference",))
    return [name for name in order if backend_status(name, device) is None]


def select_backend(op: str, device: torch.device, supported: tuple[str, ...] = BACKENDS, order=None) -> str:
    """The backend that runs `op` on `device`: the first forced one that `op` supports and that can run
    (raising BackendUnavailableError when none can), else the first available one of the order.

    supported: the backends `op` has for these inputs (e.g. dtype); order: the op's preference per
    device type, defaulting to DEFAULT_ORDER.
    """
    forced = forced_backends()
    if forced:
        reasons = []
        for name in forced:
            reason = backend_status(name, device) if name in supported else (
                f"{op} has no {name} implementation for these inputs (it has: {', '.join(supported)})")
            if reason is None:
                return name
            reasons.append(f"{name!r}: {reason}")
        what = "was forced but is unavailable" if len(forced) == 1 else "were forced but none can run"
        raise BackendUnavailableError(f"{op}: backend {' or '.join(map(repr, forced))} {what}: " + "; ".join(reasons))
    order = (order or DEFAULT_ORDER).get(device.type, ("reference",))
    for name in order:
        if name in supported and backend_status(name, device) is None:
            return name
    return "reference"
