"""FSMNet's frequency block (FreBlock) on the fused frequency-branch ops."""
import torch
from torch import nn

from .. import ops
from ..reference.frequency import SPECTRUM_EPS
from .blocks import Conv3x3

__all__ = ["FreqBlock"]


class FreqBlock(nn.Module):
    """x → conv1×1 → rfft2 → (|F|, angle F) → amplitude and phase each refined by
    conv3×3 → LeakyReLU(0.1) → conv3×3 plus a residual → recombined → irfft2 → |·| → conv1×1 → + x,
    non-finite values replaced by 1e-5.

    FFT convention: FSMNet's own, uncentred `torch.fft.rfft2(norm="backward")` and `irfft2(s=(H, W))`;
    the convolutions run on the H × (W//2 + 1) half spectrum. The FFTs run in float32 (also under
    autocast). The 1×1 convolution before the FFT is `ops.conv1x1`; the pointwise work around them is `ops.spectrum_to_polar`, `ops.polar_to_spectrum` (with
    the refinements' residuals and FSMNet's +1e-8 guards) and `ops.frequency_epilogue`. FSMNet adds 1e-8
    to the first conv's output before the FFT: here that is folded into the conv's bias. The spectrum's
    self-conjugate bins (DC and Nyquist rows and columns) count as real, as they are in exact arithmetic:
    the authors' `torch.angle` gives their phase ±π by the sign of rounding noise wherever their real part
    is negative, so every block's output depends on rounding (on the thread count, say). Here only a
    spectrum value within rounding of the negative real axis, a rare event, still does.
    x [B, C, H, W] → [B, C, H, W].
    """

    def __init__(self, channels: int):
        super().__init__()
        self.pre = nn.Conv2d(channels, channels, 1)
        self.amplitude = self._refinement(channels)
        self.phase = self._refinement(channels)
        self.post = nn.Conv2d(channels, channels, 1)

    @staticmethod
    def _refinement(channels: int) -> nn.Sequential:
        return nn.Sequential(
            Conv3x3(channels, channels), nn.LeakyReLU(0.1, inplace=True), Conv3x3(channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pre = ops.conv1x1(x, self.pre.weight, self.pre.bias + SPECTRUM_EPS)
        spectrum = torch.fft.rfft2(pre.to(torch.promote_types(pre.dtype, torch.float32)), norm="backward")
        amplitude, phase = ops.spectrum_to_polar(spectrum, signal_width=width)
        spectrum = ops.polar_to_spectrum(self.amplitude(amplitude), self.phase(phase), amplitude, phase)
        y = torch.fft.irfft2(spectrum, s=(height, width), norm="backward")
        return ops.frequency_epilogue(y, self.post.weight, self.post.bias, x)
