"""mcmri_fast: fused kernels and models for multi-contrast MRI reconstruction."""
from . import _native  # noqa: F401  (loads the C++ ops when they were built)
from . import data, ops, reference
from .backends import BackendUnavailableError, available_backends, use_backend

__version__ = "0.1.0"

__all__ = ["BackendUnavailableError", "available_backends", "data", "ops", "reference", "use_backend"]
