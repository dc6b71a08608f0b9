"""Reference of the dense 3×3 convolution (zero padding 1, stride 1): the convolutions of FSMNet's
residual blocks, frequency branches and fusions."""
import torch
import torch.nn.functional as F


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """out[b, o, y, x] = bias[o] + Σ_{c,i,j} weight[o, c, i, j] · x[b, c, y + i − 1, x + j − 1]: `F.conv2d`
    with padding 1.

    x [B, C, H, W]; weight [Co, C, 3, 3]; bias [Co] or None. Returns [B, Co, H, W].
    """
    return F.conv2d(x, weight, bias, padding=1)
