"""Reference of IMA's DCM data-consistency step: eqs. 15, 18 and 19 of the paper as written, in plain
PyTorch (the oracle of every backend of `ops.dcm_data_consistency`)."""
import torch

from ..data.fft import fft2c, ifft2c


def dcm_data_consistency(
    x: torch.Tensor,
    z: torch.Tensor,
    g: torch.Tensor,
    r: torch.Tensor,
    mask: torch.Tensor,
    dilated_mask: torch.Tensor,
    step: torch.Tensor,
    alpha: torch.Tensor,
    lam: torch.Tensor,
) -> torch.Tensor:
    """One stage's X update, with F = fft2c (centred, orthonormal), K = F x, K⁰ = M⁰ ⊙ F z:

        X_temp = F⁻¹[K − μ(M⁰ K − K⁰)] − μ(α(x − g) + λ r)          (15)
        X̂      = F⁻¹[(1 − Mᵗ) F X_temp + Mᵗ K]                       (18)
        out    = Re F⁻¹[(1 − M⁰) F X̂ + M⁰ K⁰]                        (19)

    x, z, g, r real [B, C, H, W] (X, Z, G and C_R1(X) of the paper); mask (M⁰) and dilated_mask (Mᵗ) real
    0/1 [Bm, 1, Hm, W] (Bm in {1, B}, Hm in {1, H}: 1 for column masks), centred; step (μ), alpha (α),
    lam (λ₁) real tensors of one element. Returns real [B, C, H, W].
    """
    m0 = mask.to(x.dtype)
    mt = dilated_mask.to(x.dtype)
    k = fft2c(x.to(torch.promote_types(x.dtype, torch.complex64)))
    k0 = m0 * fft2c(z.to(k.dtype))
    x_temp = ifft2c(k - step * (m0 * k - k0)) - step * (alpha * (x - g) + lam * r)
    x_hat = ifft2c((1 - mt) * fft2c(x_temp) + mt * k)
    return ifft2c((1 - m0) * fft2c(x_hat) + m0 * k0).real
