"""Blocks of DUN-SA's unfolded network (mcmri_fast/models/dunsa.py has the paper, the choices and the
sizes): the compact U-Net of its SA-Net, Z-Net and S-Net, the spatial-alignment module, and one stage."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .blocks import Conv3x3, InstanceNormLeakyReLU

__all__ = ["CompactUNet", "DUNSAStage", "SpatialAlignment"]


class _DoubleConv(nn.Sequential):
    """Twice: conv3×3 (no bias; `nn.Conv3x3`, Winograd on the cpu backend), instance norm and LeakyReLU(0.2)
    (`nn.InstanceNormLeakyReLU`, one fused op): fastMRI's U-Net block. Without the normalisation the U-Nets
    learned several times slower (on the builtin data, one batch, 80 Adam steps: the L1 error 8% below the
    zero-filled image's against 25%)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            Conv3x3(in_channels, out_channels, bias=False), InstanceNormLeakyReLU(0.2),
            Conv3x3(out_channels, out_channels, bias=False), InstanceNormLeakyReLU(0.2),
        )


class CompactUNet(nn.Module):
    """A U-Net of `depth` poolings: per level a double conv3×3 block at width·2^level, 2×2 average pooling
    down (ceil mode), bilinear upsampling to the skip's size up (any H, W, odd ones included), the skip
    concatenated, a double conv; a 1×1 output convolution. [B, in, H, W] → [B, out, H, W].

    `zero_output=True` initialises the output convolution to zero (DUN-SA's SA-Net: its first field update
    is 0, so training starts from the unaligned reference)."""

    def __init__(self, in_channels: int, out_channels: int, width: int = 16, depth: int = 2, zero_output: bool = False):
        super().__init__()
        widths = [width * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList(_DoubleConv(c_in, c_out) for c_in, c_out in zip([in_channels] + widths[:-2], widths[:-1]))
        self.bottom = _DoubleConv(widths[-2] if depth else in_channels, widths[-1])
        self.up = nn.ModuleList(_DoubleConv(widths[level + 1] + widths[level], widths[level]) for level in reversed(range(depth)))
        self.out = nn.Conv2d(widths[0], out_channels, 1)
        if zero_output:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2, ceil_mode=True)
        x = self.bottom(x)
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return ops.conv1x1(x, self.out.weight, self.out.bias)


class SpatialAlignment(nn.Module):
    """DUN-SA's spatial-alignment module (eq. 12): φ ← φ − α · SA-Net(x, T(x_ref, φ)), α learnable (init 1),
    SA-Net a `CompactUNet` with a zero-initialised output layer. forward(x [B, Cx, H, W], aligned = T(x_ref, φ)
    [B, Cr, H, W], flow φ [B, 2, H, W] in pixels) → the updated field.

    `scale` > 1 runs SA-Net on the inputs average-pooled by `scale` (ceil mode) and upsamples its update
    bilinearly, in full-resolution pixels (× scale): the network sees `scale` × farther for the same depth
    and cost / scale², and its update is smooth at the scale of the motion (rigid plus a 9 × 9-point
    elastic field in the SAN protocol)."""

    def __init__(self, image_channels: int, reference_channels: int, width: int = 16, depth: int = 2, scale: int = 1):
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
        self.net = CompactUNet(image_channels + reference_channels, 2, width, depth, zero_output=True)
        self.alpha = nn.Parameter(torch.ones(1))
        self.scale = scale

    def forward(self, x: torch.Tensor, aligned: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([x, aligned], dim=1)
        if self.scale == 1:
            return flow - self.alpha * self.net(inputs)
        update = self.net(F.avg_pool2d(inputs, self.scale, ceil_mode=True))
        update = F.interpolate(update, size=flow.shape[-2:], mode="bilinear", align_corners=False)
        return flow - (self.alpha * self.scale) * update


class DUNSAStage(nn.Module):
    """One unfolded stage t of DUN-SA (steps 1–4 of shared/specs/models.md), with learnable α, β₁, β₂ (init 1):

        φ^{t+1} = φ^t − α SA-Net(x^t, T(x_ref, φ^t))                                       (12)
        z^{t+1} = x^t + Z-Net(x^t, T(x_ref, φ^{t+1}))                                        (14)
        s^{t+1} = x^t + S-Net(x^t)                                                           (16)
        x^{t+1} = Fᴴ[(M k̃ + β₁ F z^{t+1} + β₂ F s^{t+1}) / (M + β₁ + β₂)]                   (11)

    x is real [B, Cx, H, W] (the image's channels); the reference real [B, Cr, H, W]. The ablations drop a
    block: alignment=False keeps φ = 0 (T(x_ref, 0) = x_ref), multimodal=False drops Z-Net (and with it
    the reference and the alignment), denoiser=False drops S-Net; the DC step then has the one prior left.
    `data_consistency(z, s, beta, beta_s)` is the caller's (it knows the image's representation and the
    measurement): s and beta_s None with one prior.
    """

    def __init__(self, image_channels: int, reference_channels: int, width: int = 16, depth: int = 2,
                 alignment: bool = True, multimodal: bool = True, denoiser: bool = True, alignment_scale: int = 1):
        super().__init__()
        if not (multimodal or denoiser):
            raise ValueError("a stage needs a prior: multimodal (Z-Net) or denoiser (S-Net), or both")
        if alignment and not multimodal:
            raise ValueError("alignment aligns the reference for Z-Net: it needs multimodal=True")
        c, r = image_channels, reference_channels
        self.align = SpatialAlignment(c, r, width, depth, alignment_scale) if alignment else None
        # zero output layers: the residual blocks start as the identity, so the untrained network is the
        # zero-filled image (and trains from there rather than from random U-Nets' noise)
        self.z_net = CompactUNet(c + r, c, width, depth, zero_output=True) if multimodal else None
        self.s_net = CompactUNet(c, c, width, depth, zero_output=True) if denoiser else None
        self.beta_z = nn.Parameter(torch.ones(1)) if multimodal else None
        self.beta_s = nn.Parameter(torch.ones(1)) if denoiser else None

    def forward(self, x, reference, aligned, flow, data_consistency):
        """(x^{t+1}, T(x_ref, φ^{t+1}), φ^{t+1}); `aligned` is T(x_ref, φ^t) (the previous stage's), flow φ^t,
        both None without alignment."""
        if self.align is not None:
            flow = self.align(x, aligned, flow)
            aligned = ops.warp(reference, flow)
        priors = []
        if self.z_net is not None:
            guide = aligned if aligned is not None else reference
            priors.append((x + self.z_net(torch.cat([x, guide], dim=1)), self.beta_z))
        if self.s_net is not None:
            priors.append((x + self.s_net(x), self.beta_s))
        (z, beta_z), (s, beta_s) = priors[0], priors[1] if len(priors) > 1 else (None, None)
        return data_consistency(z, s, beta_z, beta_s), aligned, flow
