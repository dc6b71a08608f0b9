"""Loads the compiled extension mcmri_fast._C, if it was built, and says why not otherwise."""
import logging
import os

import torch

logger = logging.getLogger(__name__)

NATIVE_DISABLED = os.environ.get("MCMRI_FAST_NO_NATIVE", "0").lower() not in ("", "0", "false", "no")

_C = None
load_error = "disabled by MCMRI_FAST_NO_NATIVE" if NATIVE_DISABLED else None
if not NATIVE_DISABLED:
    try:
        from . import _C  # noqa: F811  (importing registers the mcmri_fast:: C++ ops)
    except ImportError as exc:  # the package still works on the reference path
        load_error = f"{type(exc).__name__}: {exc}"
        logger.info("mcmri_fast._C not loaded (%s); native backends are unavailable", load_error)


def native_loaded() -> bool:
    """True when the C++ extension is importable (its CPU kernels are then registered)."""
    return _C is not None


def native_cuda_built() -> bool:
    """True when the extension was compiled with its CUDA kernels."""
    return _C is not None and bool(torch.ops.mcmri_fast.built_with_cuda())


def native_cuda_version() -> str | None:
    """The CUDA version the extension was compiled with, or None."""
    return torch.version.cuda if native_cuda_built() else None
