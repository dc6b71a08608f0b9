import numpy as np
import pytest
import torch

from mcmri_fast.data import fft2c, fft2u, ifft2c, ifft2u

SHAPES = [(7, 16), (16, 16), (33, 64), (5, 7), (8, 6), (1, 4)]


def _numpy_centred(x, inverse):
    transform = np.fft.ifft2 if inverse else np.fft.fft2
    axes = (-2, -1)
    return np.fft.fftshift(transform(np.fft.ifftshift(x, axes=axes), norm="ortho", axes=axes), axes=axes)


def _random(shape, rng):
    return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("inverse", [False, True])
def test_centred_matches_numpy(shape, inverse):
    x = _random((2, 3) + shape, np.random.default_rng(0))
    got = (ifft2c if inverse else fft2c)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _numpy_centred(x, inverse), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_uncentred_matches_numpy(shape):
    x = _random(shape, np.random.default_rng(1))
    np.testing.assert_allclose(fft2u(torch.from_numpy(x)).numpy(), np.fft.fft2(x, norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(ifft2u(torch.from_numpy(x)).numpy(), np.fft.ifft2(x, norm="ortho"), atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_and_orthonormal(shape):
    x = torch.randn((2,) + shape, dtype=torch.complex128)
    torch.testing.assert_close(ifft2c(fft2c(x)), x)
    torch.testing.assert_close(fft2c(x).norm(), x.norm())


def test_complex64_and_noncontiguous():
    x = torch.randn(3, 16, 33, dtype=torch.complex64).transpose(-1, -2)  # [3, 33, 16], not contiguous
    expected = _numpy_centred(x.numpy().astype(np.complex128), inverse=False)
    np.testing.assert_allclose(fft2c(x).numpy(), expected, atol=1e-5)


def test_rejects_bad_input():
    with pytest.raises(TypeError, match="x must be a complex tensor"):
        fft2c(torch.randn(4, 4))
    with pytest.raises(ValueError, match="at least 2 dims"):
        ifft2c(torch.randn(4, dtype=torch.complex64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fft2u(np.zeros((4, 4), dtype=np.complex64))
