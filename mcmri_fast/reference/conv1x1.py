"""Reference of the 1×1 (pointwise) convolution: the channel projections of FSMNet's attention, frequency
blocks and up-sampling."""
import torch
import torch.nn.functional as F


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """out[b, o] = Σ_c weight[o, c]·x[b, c] + bias[o], at every pixel: `F.conv2d` with a 1×1 kernel.

    x [B, C, H, W]; weight [Co, C, 1, 1] or [Co, C]; bias [Co] or None. Returns [B, Co, H, W].
    """
    return F.conv2d(x, weight.reshape(weight.shape[0], -1, 1, 1), bias)
