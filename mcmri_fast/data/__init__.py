"""Data layer: FFT conventions (and, later, masks, datasets and transforms)."""
from .fft import fft2c, fft2u, ifft2c, ifft2u

__all__ = ["fft2c", "ifft2c", "fft2u", "ifft2u"]
