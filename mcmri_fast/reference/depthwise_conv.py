"""Reference of the depthwise 3×3 convolution of Restormer-style attention projections (FSMNet's
channel attention; IMA's CSCA): every channel convolved with its own 3×3 kernel."""
import torch
import torch.nn.functional as F


def depthwise_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """out[b, c] = bias[c] + Σ_{i,j ∈ {0,1,2}} weight[c, i, j] · x[b, c, y + i − 1, x + j − 1], zero padding
    of 1 (stride 1): `nn.Conv2d(C, C, 3, padding=1, groups=C)`.

    x [B, C, H, W]; weight [C, 1, 3, 3] (a Conv2d's weight) or [C, 3, 3]; bias [C] or None.
    Returns [B, C, H, W].
    """
    channels = x.shape[1]
    return F.conv2d(x, weight.reshape(channels, 1, 3, 3), bias, padding=1, groups=channels)
