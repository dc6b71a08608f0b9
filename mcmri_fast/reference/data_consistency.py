"""Reference of data consistency: the formula itself, in plain PyTorch (the oracle of every backend)."""
import torch

from ..data.fft import fft2c, fft2u, ifft2c, ifft2u


def data_consistency(
    x: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, centered: bool = True
) -> torch.Tensor:
    """out = Fᴴ[(1 − w·M) ⊙ F x + w·M ⊙ k0], F = fft2c (centered=True) or fft2u, both orthonormal.

    x [B, C, H, W] complex; k0 [B, C or 1, H, W] complex; mask [Bm, 1, Hm, W] real or bool with
    Bm in {1, B}, Hm in {1, H} (0 or 1); weight [C] or [1] real. Returns [B, C, H, W] complex.
    """
    forward, inverse = (fft2c, ifft2c) if centered else (fft2u, ifft2u)
    wm = weight.reshape(1, -1, 1, 1) * mask.to(weight.dtype)
    return inverse((1 - wm) * forward(x) + wm * k0)
