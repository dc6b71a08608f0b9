"""Convolutional blocks of FSMNet's streams: residual groups, down- and up-sampling."""
import torch
from torch import nn

from .. import ops

__all__ = ["Conv3x3", "ConvPReLU", "DownSample", "InstanceNormLeakyReLU", "PReLU", "ResBlock", "ResidualGroup", "UpSample"]


class PReLU(nn.PReLU):
    """nn.PReLU (the same parameter, `weight`, and initialisation) on the fused `ops.prelu`, whose backward
    is one pass where ATen's CPU backward takes two and a full-size temporary."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.prelu(x, self.weight)


class InstanceNormLeakyReLU(nn.Module):
    """nn.InstanceNorm2d (no affine, no running statistics) then nn.LeakyReLU(negative_slope), fastMRI's
    U-Net block normalisation, on the fused `ops.instance_norm_leaky_relu`: one pass each way where ATen
    takes several, and the input not kept for the backward. No parameters."""

    def __init__(self, negative_slope: float = 0.2, eps: float = 1e-5):
        super().__init__()
        self.negative_slope, self.eps = negative_slope, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.instance_norm_leaky_relu(x, self.negative_slope, self.eps)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}, eps={self.eps}"


class Conv3x3(nn.Conv2d):
    """nn.Conv2d(in_channels, out_channels, 3, padding=1) (the same parameters and initialisation) on
    `ops.conv3x3`, whose cpu backend is a Winograd convolution with 4× fewer multiply-adds."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.conv3x3(x, self.weight, self.bias)


class ConvPReLU(nn.Sequential):
    """conv3×3 without bias, then PReLU (one shared slope): FSMNet's heads, tails and group ends."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(Conv3x3(in_channels, out_channels, bias=False), PReLU())


class ResBlock(nn.Module):
    """relu(conv3×3(relu(conv3×3(x))) + x), convolutions without bias."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = Conv3x3(channels, channels, bias=False)
        self.conv2 = Conv3x3(channels, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on the convolutions' fresh outputs (their backward does not read them): two full-size
        # temporaries fewer per block.
        return torch.relu_(self.conv2(torch.relu_(self.conv1(x))).add_(x))


class ResidualGroup(nn.Module):
    """FSMNet's spatial block: body(x) + s·x, body = `resblocks` ResBlocks then conv3×3 + PReLU, s a
    learnable scalar (init 1)."""

    def __init__(self, channels: int, resblocks: int = 2):
        super().__init__()
        self.body = nn.Sequential(*[ResBlock(channels) for _ in range(resblocks)], ConvPReLU(channels, channels))
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.body(x), self.scale, x)


class DownSample(nn.Sequential):
    """Halves H and W: conv3×3 (no bias) → pixel-unshuffle(2) → conv1×1 (4C → C, no bias), run by
    `ops.unshuffle_downsample` as one 4×4 convolution of stride 2 (2.5× fewer multiply-adds; the three
    steps under the reference backend). The parameters are those of the three-step form (0, 2)."""

    def __init__(self, channels: int):
        super().__init__(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.PixelUnshuffle(2),
            nn.Conv2d(4 * channels, channels, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, unshuffle, project = self
        return ops.unshuffle_downsample(
            x, conv.weight, project.weight, factor=unshuffle.downscale_factor,
            conv_bias=conv.bias, project_bias=project.bias,
        )


class UpSample(nn.Sequential):
    """Doubles H and W: conv1×1 (C → 4C, `ops.conv1x1`) → pixel-shuffle(2) → PReLU."""

    def __init__(self, channels: int):
        super().__init__(nn.Conv2d(channels, 4 * channels, 1), nn.PixelShuffle(2), PReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        project, shuffle, activation = self
        return activation(shuffle(ops.conv1x1(x, project.weight, project.bias)))
