"""References of FSMNet's frequency-branch pointwise work (FreBlock): polar decomposition of
a spectrum, polar recombination, and the epilogue after the inverse FFT.

The FFT itself is not part of these ops: FSMNet uses the uncentred `torch.fft.rfft2(norm="backward")`
and `irfft2(s=(H, W))` around them (the network's own convention, not fastMRI's).
"""
import torch
import torch.nn.functional as F

# FSMNet's guards: +eps on both parts of the recombined spectrum, then +eps on the complex number
# (which adds to the real part only), so the real part carries 2·eps.
SPECTRUM_EPS = 1e-8
# FSMNet replaces non-finite values (nan, ±inf) of a block's output by this value.
NONFINITE_VALUE = 1e-5


def spectrum_to_polar(
    spectrum: torch.Tensor, signal_width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(amplitude, phase) = (|z|, atan2(Im z, Re z)) of a complex tensor, elementwise, any shape.

    With signal_width = W, the last two dims are the half spectrum [H, W//2 + 1] of rfft2 of a real
    signal, whose self-conjugate bins (see `self_conjugate_mask`) are real: their imaginary part,
    rounding noise, counts as +0, so their phase is 0 or π by the sign of the real part. Left as it is,
    the sign of the noise picks ±π there, and two float implementations of a network disagree.

    Gradients follow torch.abs and torch.angle: zero at z = 0; none to the discarded imaginary parts.

    Computed on the real view, the complex tensor's one use: with |z| and angle(z) taken of the complex
    tensor, their complex gradients meet in an add that Inductor (torch 2.13) views as float and fails
    on ("view ComplexFloat as Float"), so torch.compile could not train the reference network.
    """
    parts = torch.view_as_real(spectrum)
    if signal_width is not None:
        conjugate = self_conjugate_mask(spectrum.shape[-2], signal_width, spectrum.device)
        parts = parts.masked_fill(torch.stack([torch.zeros_like(conjugate), conjugate], dim=-1), 0.0)
    amplitude = torch.linalg.vector_norm(parts, dim=-1)  # its gradient is zero at z = 0
    # atan2's gradient is 0/0 at the origin: there it reads detached copies of the same (signed) zeros,
    # so the values are atan2's own and the gradient is zero
    at_origin = amplitude == 0
    real, imag = (torch.where(at_origin, part.detach(), part) for part in parts.unbind(-1))
    return amplitude, torch.atan2(imag, real)


def self_conjugate_mask(height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """[height, width//2 + 1] bool: the bins of rfft2 of a real height × width signal equal to their own
    conjugate, hence real: rows 0 and height/2 (even height) × columns 0 and width/2 (even width)."""
    rows = torch.arange(height, device=device)
    cols = torch.arange(width // 2 + 1, device=device)
    on_row = (rows == 0) | ((height % 2 == 0) & (rows == height // 2))
    on_col = (cols == 0) | ((width % 2 == 0) & (cols == width // 2))
    return on_row[:, None] & on_col[None, :]


def polar_to_spectrum(
    amplitude: torch.Tensor,
    phase: torch.Tensor,
    amplitude_residual: torch.Tensor | None = None,
    phase_residual: torch.Tensor | None = None,
    eps: float = SPECTRUM_EPS,
) -> torch.Tensor:
    """z = a·cos(p) + 2·eps + i·(a·sin(p) + eps), a = amplitude (+ amplitude_residual),
    p = phase (+ phase_residual); real tensors of one shape, complex result (FSMNet's recombination,
    with the residuals of its amplitude and phase refinements)."""
    a = amplitude if amplitude_residual is None else amplitude + amplitude_residual
    p = phase if phase_residual is None else phase + phase_residual
    # FSMNet writes complex(a cos p + eps, a sin p + eps) + eps; the same number built in one step
    # (a complex + real add also breaks Inductor's backward: "view ComplexFloat as Float").
    return torch.complex(a * torch.cos(p) + 2 * eps, a * torch.sin(p) + eps)


def frequency_epilogue(
    y: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor,
    nonfinite: float = NONFINITE_VALUE,
) -> torch.Tensor:
    """out = nan_to_num(conv1x1(|y|; weight, bias) + residual, nan=posinf=neginf=nonfinite).

    y [B, C, H, W] real (the inverse FFT's output); weight [Co, C, 1, 1] or [Co, C]; bias [Co] or None;
    residual [B, Co, H, W]. Returns [B, Co, H, W].
    """
    weight = weight.reshape(weight.shape[0], -1, 1, 1)
    out = F.conv2d(torch.abs(y), weight, bias) + residual
    return torch.nan_to_num(out, nan=nonfinite, posinf=nonfinite, neginf=nonfinite)
