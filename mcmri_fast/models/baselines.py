"""Baselines: zero-filling, and fastMRI's U-Net with an optional hard data-consistency step.

Registered models (see `mcmri_fast.models`):

    zero_filled  returns batch["zero_filled"], Fᴴ(M ⊙ k); no parameters, not trained.
    unet         fastMRI's U-Net (Ronneberger et al. 2015, the fastMRI baseline of Zbontar et al.
                 2018) on magnitude images normalised per instance (mean/std of the zero-filled
                 image): batch["zero_filled"] float32 [B, 1, H, W] -> float32 [B, 1, H, W].
                 Defaults of fastMRI's unet_knee_sc: chans 32, 4 pooling levels, no dropout,
                 RMSprop lr 1e-3, StepLR 40 / 0.1, L1 loss, 50 epochs, batch size 1.
    unet_dc      the same U-Net on complex images as 2 channels (real, imaginary), then hard data
                 consistency (w = 1, `mcmri_fast.ops.data_consistency`) with the measured k-space:
                 batch["zero_filled"] complex64 [B, 1, H, W] -> complex64 [B, 1, H, W]. The data are
                 divided by the volume maximum ("volume_max"); the FFT is linear, so the measurement
                 in the same units is batch["masked_kspace"] / batch["scale"]. The U-Net sees the
                 image with its smooth phase removed (`low_resolution_phase`: the phase of the fully
                 sampled k-space centre's image), which is put back before the data consistency: a
                 network on real and imaginary channels otherwise learns the phase of its training
                 slices and fails on other phases: the builtin test split's phase ramps lie outside
                 the training split's, and with the demo's budget the U-Net gained 0.1 dB over
                 zero-filling there (2.3 on val); with the phase removed, 4.2 dB and 0.10 SSIM.

k-space follows the fastMRI convention (centred, orthonormal `fft2c`); masks select columns ([B, W])
or k-space points ([B, H, W]). The U-Net's parameter names are fastMRI's `fastmri.models.Unet` ones
(`UNet.state_dict()` loads into it and back), and it handles odd H and W as fastMRI does: after each
up-sampling a missing last row or column is filled by reflection.
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..data.channels import channels_to_complex, complex_to_channels
from ..data.fft import ifft2c
from ..ops import data_consistency
from . import ModelSpec, register

__all__ = [
    "ConvBlock",
    "TransposeConvBlock",
    "UNet",
    "ZeroFilled",
    "UNetReconstruction",
    "measured_kspace",
    "low_resolution_phase",
    "batched_mask",
]


# ---------------------------------------------------------------------------------------------------
# The U-Net (fastMRI architecture)


class ConvBlock(nn.Module):
    """Twice: 3×3 convolution (no bias), instance norm, LeakyReLU(0.2), channel dropout.
    [N, in_chans, H, W] -> [N, out_chans, H, W]."""

    def __init__(self, in_chans: int, out_chans: int, drop_prob: float):
        super().__init__()
        self.in_chans, self.out_chans, self.drop_prob = in_chans, out_chans, drop_prob
        self.layers = nn.Sequential(
            nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Dropout2d(drop_prob),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


class TransposeConvBlock(nn.Module):
    """2×2 transposed convolution with stride 2 (no bias), instance norm, LeakyReLU(0.2).
    [N, in_chans, H, W] -> [N, out_chans, 2H, 2W]."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.in_chans, self.out_chans = in_chans, out_chans
        self.layers = nn.Sequential(
            nn.ConvTranspose2d(in_chans, out_chans, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_chans),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.layers(image)


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class UNet(nn.Module):
    """fastMRI's U-Net: [N, in_chans, H, W] -> [N, out_chans, H, W], real (float32, or half under autocast).

    Down path: a ConvBlock per level (chans, 2·chans, ...) followed by 2×2 average pooling; a
    bottleneck ConvBlock; up path: TransposeConvBlock, concatenation with the skip, ConvBlock; a final
    1×1 convolution (with bias) to out_chans. Each level halves H and W, rounding down: the bottleneck
    (H // 2**num_pool_layers) × (W // 2**num_pool_layers) must hold at least 2 pixels (instance norm);
    odd sizes are handled by reflect-padding the up-sampled map.
    """

    def __init__(self, in_chans: int, out_chans: int, chans: int = 32, num_pool_layers: int = 4, drop_prob: float = 0.0):
        super().__init__()
        for name, value in (("in_chans", in_chans), ("out_chans", out_chans), ("chans", chans), ("num_pool_layers", num_pool_layers)):
            _check_positive_int(name, value)
        if not isinstance(drop_prob, numbers.Real) or isinstance(drop_prob, bool) or not 0 <= drop_prob < 1:
            raise ValueError(f"drop_prob must be a number in [0, 1), got {drop_prob!r}")
        self.in_chans, self.out_chans, self.chans = in_chans, out_chans, chans
        self.num_pool_layers, self.drop_prob = num_pool_layers, float(drop_prob)

        self.down_sample_layers = nn.ModuleList([ConvBlock(in_chans, chans, drop_prob)])
        width = chans
        for _ in range(num_pool_layers - 1):
            self.down_sample_layers.append(ConvBlock(width, 2 * width, drop_prob))
            width *= 2
        self.conv = ConvBlock(width, 2 * width, drop_prob)

        self.up_conv = nn.ModuleList()  # before up_transpose_conv: fastMRI's state_dict order
        self.up_transpose_conv = nn.ModuleList()
        for level in range(num_pool_layers):
            self.up_transpose_conv.append(TransposeConvBlock(2 * width, width))
            block = ConvBlock(2 * width, width, drop_prob)
            if level == num_pool_layers - 1:  # the last level ends in the 1×1 output convolution
                block = nn.Sequential(block, nn.Conv2d(width, out_chans, kernel_size=1, stride=1))
            self.up_conv.append(block)
            width //= 2

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [N, in_chans, H, W] real -> [N, out_chans, H, W]."""
        if not isinstance(image, torch.Tensor):
            raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
        if image.dim() != 4 or image.shape[1] != self.in_chans:
            raise ValueError(f"image must be [N, {self.in_chans}, H, W], got shape {tuple(image.shape)}")
        if image.is_complex() or not image.is_floating_point():
            raise TypeError(f"image must be a real floating tensor, got dtype {image.dtype}")
        H, W = image.shape[-2:]
        factor = 2**self.num_pool_layers
        if (H // factor) * (W // factor) < 2:  # instance norm needs 2 or more pixels at the bottleneck
            raise ValueError(
                f"image {H}x{W} is too small for num_pool_layers={self.num_pool_layers}: the bottleneck would be "
                f"{H // factor}x{W // factor}; H and W must be >= {factor} and one of them >= {2 * factor}"
            )

        skips = []
        output = image
        for layer in self.down_sample_layers:
            output = layer(output)
            skips.append(output)
            output = F.avg_pool2d(output, kernel_size=2, stride=2, padding=0)
        output = self.conv(output)

        for transpose_conv, conv in zip(self.up_transpose_conv, self.up_conv):
            skip = skips.pop()
            output = transpose_conv(output)
            # Pooling rounded an odd size down: fill the last row / column by reflection (0 or 1 each).
            pad_bottom, pad_right = skip.shape[-2] - output.shape[-2], skip.shape[-1] - output.shape[-1]
            if pad_bottom or pad_right:
                output = F.pad(output, [0, pad_right, 0, pad_bottom], mode="reflect")
            output = conv(torch.cat([output, skip], dim=1))
        return output


# ---------------------------------------------------------------------------------------------------
# Complex images as channels, and the measurement in the data's units


def measured_kspace(batch: dict) -> torch.Tensor:
    """The measurement in the units of the normalised images: batch["masked_kspace"] / batch["scale"],
    complex [B, 1, H, W] (the normalisation is image / scale, and the FFT is linear).

    batch["scale"] is a tensor [B] (as default_collate makes it) or a number. The dataset's offset
    must be 0 (normalisation "volume_max" or None): an offset is not a linear map of k-space.
    """
    kspace = batch["masked_kspace"]
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex() or kspace.dim() != 4:
        got = f"{kspace.dtype} {tuple(kspace.shape)}" if isinstance(kspace, torch.Tensor) else type(kspace).__name__
        raise ValueError(f"batch['masked_kspace'] must be a complex [B, 1, H, W] tensor, got {got}")
    real_dtype = kspace.real.dtype  # a float64 scale (default_collate of floats) must not promote k-space
    scale = torch.as_tensor(batch["scale"], dtype=real_dtype, device=kspace.device)
    if scale.numel() not in (1, kspace.shape[0]):
        raise ValueError(f"batch['scale'] must be a number or hold one value per sample ({kspace.shape[0]}), got shape {tuple(scale.shape)}")
    return kspace / scale.reshape(-1, 1, 1, 1)


PHASE_FLOOR = 0.05  # of the maximum of the k-space centre's image: fainter pixels have no usable phase


def _centre_run(sampled: torch.Tensor) -> torch.Tensor:
    """bool [B, N] -> bool [B, N]: the run of sampled entries through the centre N // 2 (none where the
    centre is not sampled): a mask's fully sampled centre, whatever mask function drew it."""
    centre = sampled.shape[-1] // 2
    right = sampled[:, centre:].long().cumprod(dim=1)
    left = sampled[:, : centre + 1].flip(1).long().cumprod(dim=1).flip(1)
    return torch.cat([left[:, :-1], right], dim=1).bool()


def low_resolution_phase(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(i·φ) of the image of the fully sampled k-space centre: the smooth phase of each slice, as
    phase-constrained reconstructions estimate it. kspace: the measurement, complex [B, 1, H, W]
    (centred, fastMRI's fft2c); mask: bool [B, W] (columns) or [B, 1, H, W]. The centre is the run of
    sampled columns through W // 2 (for 2-D masks, times the run of sampled rows through H // 2 in
    column W // 2). Returns complex [B, 1, H, W]: exp(i·φ) where the centre's image is at least
    PHASE_FLOOR of its maximum, that image / (PHASE_FLOOR · its maximum) where it is fainter (a
    modulus below 1, smooth, rather than the phase of noise); 1 where the centre is not sampled."""
    if mask.dim() == 2:
        window = _centre_run(mask)[:, None, None, :]
    else:
        height, width = mask.shape[-2:]
        columns = _centre_run(mask[:, 0, height // 2, :])
        rows = _centre_run(mask[:, 0, :, width // 2])
        window = (rows[:, :, None] & columns[:, None, :]).unsqueeze(1)
    image = ifft2c(kspace * window)
    magnitude = image.abs()
    # Where the centre's image is faint (the background) its phase is rounding noise, which would put
    # noise into the output there: below PHASE_FLOOR of its maximum the modulus falls off instead.
    floor = PHASE_FLOOR * magnitude.amax(dim=(-2, -1), keepdim=True)
    phase = image / torch.maximum(magnitude, floor)
    return torch.where(floor > 0, phase, torch.ones_like(phase))


def batched_mask(mask: torch.Tensor, batch_size: int) -> torch.Tensor:
    """batch["mask"] [B, W] or [B, H, W] as data_consistency takes it: bool [B, W] or [B, 1, H, W]."""
    if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3) or mask.shape[0] != batch_size:
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"batch['mask'] must be [B, W] or [B, H, W] with B = {batch_size}, got {got}")
    mask = mask if mask.dtype == torch.bool else mask != 0
    return mask.unsqueeze(1) if mask.dim() == 3 else mask


# ---------------------------------------------------------------------------------------------------
# The registered models


class ZeroFilled(nn.Module):
    """The zero-filled reconstruction Fᴴ(M ⊙ k): returns batch["zero_filled"] itself ([B, 1, H, W],
    its dtype); no parameters."""

    def forward(self, batch: dict) -> torch.Tensor:
        return batch["zero_filled"]


class UNetReconstruction(nn.Module):
    """The U-Net baseline on a batch: `unet` (dc=False) or `unet_dc` (dc=True), see the module docstring.

    dc=False: batch["zero_filled"] real [B, 1, H, W] -> U-Net -> [B, 1, H, W] of the input's dtype.
    dc=True: batch["zero_filled"] complex [B, 1, H, W] · conj(p) -> 2 channels -> U-Net -> complex
        x · p -> data_consistency(x · p, masked_kspace / scale, mask) -> complex64 [B, 1, H, W], with p
        = low_resolution_phase(masked_kspace, mask): at the sampled k-space points the output's fft2c
        is the (normalised) measurement.
    """

    def __init__(self, chans: int = 32, num_pool_layers: int = 4, drop_prob: float = 0.0, dc: bool = False):
        super().__init__()
        if not isinstance(dc, bool):
            raise TypeError(f"dc must be a bool, got {type(dc).__name__}")
        self.dc = dc
        channels = 2 if dc else 1
        self.unet = UNet(channels, channels, chans=chans, num_pool_layers=num_pool_layers, drop_prob=drop_prob)

    def forward(self, batch: dict) -> torch.Tensor:
        image = batch["zero_filled"]
        if not isinstance(image, torch.Tensor) or image.dim() != 4 or image.shape[1] != 1:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"batch['zero_filled'] must be [B, 1, H, W], got {got}")
        if not self.dc:
            if image.is_complex():
                raise TypeError("the 'unet' model takes magnitude images (data magnitude=True), got complex batch['zero_filled']")
            return self.unet(image).to(image.dtype)
        if not image.is_complex():
            raise TypeError(f"the 'unet_dc' model takes complex images (data magnitude=False), got {image.dtype} batch['zero_filled']")
        k0 = measured_kspace(batch)
        if k0.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"the 'unet_dc' model needs k-space at the image size, got k-space {tuple(k0.shape[-2:])} for images "
                f"{tuple(image.shape[-2:])} (fastMRI files crop the images after the FFT: use 'unet' there)"
            )
        mask = batched_mask(batch["mask"], image.shape[0])
        phase = low_resolution_phase(k0, mask)
        x = channels_to_complex(self.unet(complex_to_channels(image * phase.conj()))) * phase
        return data_consistency(x, k0, mask)


def build_zero_filled() -> ZeroFilled:
    """The "zero_filled" model (no configuration)."""
    return ZeroFilled()


def build_unet(chans: int = 32, num_pool_layers: int = 4, drop_prob: float = 0.0) -> UNetReconstruction:
    """The "unet" model: the U-Net on instance-normalised magnitude images."""
    return UNetReconstruction(chans, num_pool_layers, drop_prob, dc=False)


def build_unet_dc(chans: int = 32, num_pool_layers: int = 4, drop_prob: float = 0.0) -> UNetReconstruction:
    """The "unet_dc" model: the U-Net on complex images (2 channels) followed by hard data consistency."""
    return UNetReconstruction(chans, num_pool_layers, drop_prob, dc=True)


# fastMRI's unet_knee_sc defaults (fastmri_examples/unet, fastmri.pl_modules.UnetModule).
_UNET_CONFIG = {"chans": 32, "num_pool_layers": 4, "drop_prob": 0.0}
_UNET_TRAINING = dict(
    loss="l1",
    optimizer={"name": "rmsprop", "lr": 1e-3, "weight_decay": 0.0},
    schedule={"name": "step", "step_size": 40, "gamma": 0.1},
    epochs=50,
    batch_size=1,
    trainable=True,
    # The demo: half of fastMRI's width and one pooling level less (chans 8 did not beat zero-filling in
    # 4 epochs: 22.3 dB and SSIM 0.16 against 24.9 dB and 0.63).
    demo={"model_config": {"chans": 16, "num_pool_layers": 3}},
)

register(ModelSpec(
    name="zero_filled",
    build=build_zero_filled,
    config={},
    loss="l1",
    data={"magnitude": True, "normalization": None},
    optimizer={"name": "adam", "lr": 1e-3},  # unused: the model is not trained
    schedule={"name": "none"},
    epochs=0,
    batch_size=1,
    trainable=False,
    description="zero-filled inverse FFT of the undersampled k-space (no parameters)",
))
register(ModelSpec(
    name="unet",
    build=build_unet,
    config=_UNET_CONFIG,
    data={"magnitude": True, "normalization": "instance"},
    description="fastMRI U-Net on instance-normalised magnitude images",
    **_UNET_TRAINING,
))
register(ModelSpec(
    name="unet_dc",
    build=build_unet_dc,
    config=_UNET_CONFIG,
    data={"magnitude": False, "normalization": "volume_max"},
    description="fastMRI U-Net on complex images (real, imaginary channels) with hard data consistency",
    **_UNET_TRAINING,
))
