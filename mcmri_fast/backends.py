"""Which implementation of an op runs: availability, the per-device preference order, and forcing.

Backends: `cuda` (the CUDA kernels of mcmri_fast._C), `triton` (kernels/), `cpu` (the C++ CPU kernels
of mcmri_fast._C) and `reference` (pure PyTorch). On a CUDA tensor an op runs the first available
backend of its CUDA order (by default cuda, triton, reference), on a CPU tensor the first of its CPU
order (cpu, reference). `MCMRI_FAST_BACKEND=<name>` or `with mcmri_fast.use_backend(name):` forces one;
forcing a backend that cannot run the inputs raises `BackendUnavailableError`, never falls back.
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

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("mcmri_fast_backend", default=None)


class BackendUnavailableError(RuntimeError):
    """A backend was asked for explicitly but cannot run the given inputs."""


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def use_backend(name: str | None):
    """Force backend `name` for the ops called inside the block (None defers to MCMRI_FAST_BACKEND)."""
    token = _forced.set(None if name is None else _check_name(name))
    try:
        yield
    finally:
        _forced.reset(token)


def forced_backend() -> str | None:
    """The backend forced by `use_backend` or, outside it, by MCMRI_FAST_BACKEND; None if automatic."""
    name = _forced.get()
    if name is None:
        name = os.environ.get("MCMRI_FAST_BACKEND") or None
    return None if name is None else _check_name(name)


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
    """The backend that runs `op` on `device`: the forced one (checked) or the first available one.

    supported: the backends `op` has for these inputs (e.g. dtype); order: the op's preference per
    device type, defaulting to DEFAULT_ORDER.
    """
    forced = forced_backend()
    if forced is not None:
        if forced not in supported:
            raise BackendUnavailableError(
                f"{op}: backend {forced!r} was forced but does not support these inputs "
                f"(supported: {', '.join(supported)})"
            )
        reason = backend_status(forced, device)
        if reason is not None:
            raise BackendUnavailableError(f"{op}: backend {forced!r} was forced but is unavailable: {reason}")
        return forced
    order = (order or DEFAULT_ORDER).get(device.type, ("reference",))
    for name in order:
        if name in supported and backend_status(name, device) is None:
            return name
    return "reference"
