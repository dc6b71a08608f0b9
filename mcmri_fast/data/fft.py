"""2-D FFTs in the fastMRI convention, on the last two dims of complex tensors.

`fft2c` / `ifft2c` are centred and orthonormal: fft2c(x) = fftshift(fft2(ifftshift(x)), norm="ortho"),
with fftshift rolling by n//2 and ifftshift by -(n//2) per dim, so odd sizes are right. `fft2u` /
`ifft2u` are the uncentred orthonormal transforms (no shifts).

The shifts are not done with roll copies where the size allows it: for an even n, rolling by n/2 in one
domain is a modulation by (-1)^k in the other, so fft2c(x) = s * F(c * x) with c = (-1)^(h+w) and
s = (-1)^((H+W)/2) * c, computed in place on the FFT's own output. Odd dims keep the roll.
"""
import torch

__all__ = ["fft2c", "ifft2c", "fft2u", "ifft2u"]


def _check(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(f"{name} must be a complex tensor, got dtype {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"{name} must have at least 2 dims [..., H, W], got shape {tuple(x.shape)}")


def fft2u(x: torch.Tensor) -> torch.Tensor:
    """Uncentred orthonormal 2-D FFT over the last two dims: [..., H, W] complex -> [..., H, W] complex."""
    _check(x, "x")
    return torch.fft.fft2(x, norm="ortho")


def ifft2u(x: torch.Tensor) -> torch.Tensor:
    """Uncentred orthonormal inverse 2-D FFT over the last two dims (the adjoint of `fft2u`)."""
    _check(x, "x")
    return torch.fft.ifft2(x, norm="ortho")


def _checkerboard(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(-1)^(i+j) as a real [h, w] tensor of like's real dtype (exact: only +-1)."""
    i = torch.arange(h, device=like.device)
    j = torch.arange(w, device=like.device)
    return (1 - 2 * ((i[:, None] + j[None, :]) % 2)).to(like.real.dtype)


def _centred(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    transform = torch.fft.ifft2 if inverse else torch.fft.fft2
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        dims = (-2, -1)
        return torch.fft.fftshift(transform(torch.fft.ifftshift(x, dim=dims), norm="ortho"), dim=dims)
    # even sizes: ifftshift of the input and fftshift of the output are the same (-1)^(i+j) modulation
    # up to the global sign (-1)^((H+W)/2), the same for the forward and the inverse transform.
    c = _checkerboard(h, w, x)
    out = transform(x * c, norm="ortho")
    sign = -1.0 if ((h + w) // 2) % 2 else 1.0
    return out.mul_(c * sign)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT (fastMRI `fft2c`) over the last two dims of a complex tensor.

    fft2c(x) = fftshift(fft2(ifftshift(x), norm="ortho")); [..., H, W] complex -> [..., H, W] complex.
    """
    _check(x, "x")
    return _centred(x, inverse=False)


def ifft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2-D FFT (fastMRI `ifft2c`), the inverse and adjoint of `fft2c`.

    ifft2c(k) = fftshift(ifft2(ifftshift(k), norm="ortho")); [..., H, W] complex -> [..., H, W] complex.
    """
    _check(x, "x")
    return _centred(x, inverse=True)
