"""Blocks of MANet's Dense U-Nets (mcmri_fast/models/manet.py has the paper, the choices and the sizes): the
conv3×3 → batch norm → ReLU unit, the dense block, the up-sampling blocks, the T1-guided attention and
the pair of Dense U-Nets (reference and target streams) that one stage of MANet is."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .blocks import Conv3x3

__all__ = ["ConvBatchNormReLU", "DenseBlock", "DenseUNetPair", "GuidedAttention", "UpBlock"]

LEVELS = 4  # poolings of a Dense U-Net: H and W must be divisible by 2**LEVELS


class ConvBatchNormReLU(nn.Module):
    """relu(BN(conv3×3(x) + residual)): conv3×3 with bias (`nn.Conv3x3`), then `nn.BatchNorm2d`, then ReLU.
    `residual` (None: 0) is added before the normalisation, as the dense links of MANet's dense blocks are.
    x [B, in_channels, H, W], residual [B, out_channels, H, W] → [B, out_channels, H, W].

    In training mode the normalisation takes the batch's statistics and updates the running ones, as
    nn.BatchNorm2d does; the residual's sum, the normalisation and the ReLU run as one op
    (`ops.batch_norm_relu`: fewer passes, and only their sum kept for the backward). In eval mode the
    normalisation is folded into the convolution: with s = γ/√(var + eps), BN(conv(x) + r) = conv'(x) + s·r,
    where conv' has the weights w·s and the bias (b − μ)·s + β, so one convolution, a multiply-add of the
    residual and the ReLU remain (without running statistics, `track_running_stats=False`, BN normalises
    by the batch even in eval mode, and the training path runs).
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.bn = nn.BatchNorm2d(out_channels)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weight, bias, scale) of the eval-mode convolution conv' and the residual's factor s (see the
        class docstring), differentiable in the convolution's and the normalisation's parameters."""
        bn = self.bn
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        weight = self.conv.weight * scale.reshape(-1, 1, 1, 1)
        bias = (self.conv.bias - bn.running_mean) * scale + bn.bias
        return weight, bias, scale

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.training or self.bn.running_mean is None:
            bn = self.bn
            # nn.BatchNorm2d's bookkeeping: the batch counter, and its cumulative average without a momentum
            momentum = 0.0 if bn.momentum is None else bn.momentum
            if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if bn.momentum is None:
                    momentum = 1.0 / float(bn.num_batches_tracked)
            # the sum, the batch statistics, the normalisation and the ReLU in one op (ops.batch_norm_relu)
            return ops.batch_norm_relu(self.conv(x), bn.weight, bn.bias, bn.running_mean, bn.running_var,
                                       training=True, momentum=momentum, eps=bn.eps, residual=residual)
        weight, bias, scale = self.folded()
        y = ops.conv3x3(x, weight, bias)
        if residual is not None:
            y = torch.addcmul(y, residual, scale.reshape(1, -1, 1, 1))
        return torch.relu_(y)


class DenseBlock(nn.Module):
    """The authors' Single_level_densenet: o₀ = x; for i = 0 … convs − 1,
    o_{i+1} = relu(BN_i(conv3×3_i(o_i) + Σ_{j<i} o_j)) (additive dense links, o_i itself not among them);
    returns o_convs. [B, C, H, W] → [B, C, H, W]."""

    def __init__(self, channels: int, convs: int = 4):
        super().__init__()
        self.layers = nn.ModuleList(ConvBatchNormReLU(channels, channels) for _ in range(convs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        links = None  # Σ_{j<i} o_j
        for layer in self.layers:
            out = layer(x, links)
            links = x if links is None else links + x
            x = out
        return x


class UpBlock(nn.Module):
    """Doubles H and W: ConvTranspose2d(C, C, 4, stride 2, padding 1) (with bias), then, with `skip`, the
    encoder's skip concatenated (2C channels), then `ConvBatchNormReLU` to C channels. The reference
    stream's decoder has no skips (skip=False). x [B, C, h, w] (, skip [B, C, 2h, 2w]) → [B, C, 2h, 2w]."""

    def __init__(self, channels: int, skip: bool):
        super().__init__()
        self.skip = skip
        self.up = nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1)
        self.fuse = ConvBatchNormReLU(2 * channels if skip else channels, channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if (skip is not None) != self.skip:
            raise ValueError(f"this UpBlock was built with skip={self.skip}, got skip {'None' if skip is None else 'a tensor'}")
        x = self.up(x)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.fuse(x)


class GuidedAttention(nn.Module):
    """MANet's T1-guided attention on `ops.guided_attention`: the reference's features f₁ select which
    channels and where the target's features f₂ are amplified, f₂ · a + f₂ with a = f₁ · CA(f₁),
    a ← a · SA(a) (CA: global max pool, 1×1 C → C/16, ReLU, 1×1 back, sigmoid; SA: the channels' max,
    7×7 convolution, sigmoid; no biases). f1, f2 [B, C, H, W] → [B, C, H, W].

    Parameters: `channel_down` [Cr, C, 1, 1], `channel_up` [C, Cr, 1, 1] with Cr = max(1, C // 16) (the
    authors' C // 16, which is 0 below 16 channels: the narrow demo networks keep one), `spatial`
    [1, 1, 7, 7]; initialised as nn.Conv2d's weights are (the authors' modules are nn.Conv2d's)."""

    REDUCTION = 16
    KERNEL_SIZE = 7

    def __init__(self, channels: int):
        super().__init__()
        reduced = max(1, channels // self.REDUCTION)
        self.channel_down = nn.Parameter(torch.empty(reduced, channels, 1, 1))
        self.channel_up = nn.Parameter(torch.empty(channels, reduced, 1, 1))
        self.spatial = nn.Parameter(torch.empty(1, 1, self.KERNEL_SIZE, self.KERNEL_SIZE))
        for weight in (self.channel_down, self.channel_up, self.spatial):
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5))

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return ops.guided_attention(f1, f2, (self.channel_down, self.channel_up), self.spatial)


class DenseUNetPair(nn.Module):
    """One MANet stage: the Dense U-Nets of the reference stream and of the target stream, guided by the
    reference after every pooling and every up-sampling level. forward(reference [B, in_channels, H, W],
    target [B, in_channels, H, W]) → (reference output, target output), each [B, out_channels, H, W];
    H and W divisible by 2**LEVELS = 16.

    - Inputs: 1×1 convolutions (with bias): reference in_channels → C; target cat(target, reference)
      2·in_channels → C.
    - Encoder, per level, both streams: x = DenseBlock(x); the target's x (before the pooling) is its
      skip; x = maxpool 2×2; then the target's x ← GuidedAttention(f₁ = the reference's pooled x, f₂ = the
      target's). The reference stream goes on with its own features; its skips are not used.
    - Bottleneck: a DenseBlock per stream.
    - Decoder, per level: reference x = DenseBlock(UpBlock(x)); target x = DenseBlock(UpBlock(x, skip));
      then the target's x ← GuidedAttention(the reference's x, the target's).
    - Outputs: 1×1 convolutions (with bias) C → out_channels. No residual connections.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, convs: int = 4):
        super().__init__()
        C = channels

        def dense_blocks():
            return nn.ModuleList(DenseBlock(C, convs) for _ in range(LEVELS))

        self.reference_in = nn.Conv2d(in_channels, C, 1)
        self.target_in = nn.Conv2d(2 * in_channels, C, 1)
        self.reference_down, self.target_down = dense_blocks(), dense_blocks()
        self.down_attention = nn.ModuleList(GuidedAttention(C) for _ in range(LEVELS))
        self.reference_bottom, self.target_bottom = DenseBlock(C, convs), DenseBlock(C, convs)
        self.reference_up = nn.ModuleList(UpBlock(C, skip=False) for _ in range(LEVELS))
        self.target_up = nn.ModuleList(UpBlock(C, skip=True) for _ in range(LEVELS))
        self.reference_up_dense, self.target_up_dense = dense_blocks(), dense_blocks()
        self.up_attention = nn.ModuleList(GuidedAttention(C) for _ in range(LEVELS))
        self.reference_out = nn.Conv2d(C, out_channels, 1)
        self.target_out = nn.Conv2d(C, out_channels, 1)

    def forward(self, reference: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if reference.shape != target.shape:
            raise ValueError(f"reference {tuple(reference.shape)} and target {tuple(target.shape)} must have one shape")
        height, width = reference.shape[-2:]
        if height % 2**LEVELS or width % 2**LEVELS:
            raise ValueError(f"a Dense U-Net of {LEVELS} poolings needs H and W divisible by {2**LEVELS}, got {height} x {width}")
        r = ops.conv1x1(reference, self.reference_in.weight, self.reference_in.bias)
        t = ops.conv1x1(torch.cat([target, reference], dim=1), self.target_in.weight, self.target_in.bias)
        skips = []
        for reference_block, target_block, attention in zip(self.reference_down, self.target_down, self.down_attention):
            r = F.max_pool2d(reference_block(r), 2)
            t = target_block(t)
            skips.append(t)
            t = attention(r, F.max_pool2d(t, 2))
        r, t = self.reference_bottom(r), self.target_bottom(t)
        for level, attention in enumerate(self.up_attention):
            r = self.reference_up_dense[level](self.reference_up[level](r))
            t = self.target_up_dense[level](self.target_up[level](t, skips.pop()))
            t = attention(r, t)
        return (ops.conv1x1(r, self.reference_out.weight, self.reference_out.bias),
                ops.conv1x1(t, self.target_out.weight, self.target_out.bias))
