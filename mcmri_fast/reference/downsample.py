"""Reference of the unshuffle down-sampling block: FSMNet's DownSample, conv → pixel-unshuffle
→ 1×1 projection."""
import torch
import torch.nn.functional as F


def unshuffle_downsample(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    project_weight: torch.Tensor,
    factor: int = 2,
    conv_bias: torch.Tensor | None = None,
    project_bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """out = conv1×1(pixel_unshuffle(conv_k×k(x), factor)), the k×k convolution zero-padded by k // 2.

    x [B, Ci, H, W]; conv_weight [C, Ci, k, k] (k odd); project_weight [Co, C·factor², 1, 1]; biases
    [C] and [Co] or None. H and W divisible by factor. Returns [B, Co, H / factor, W / factor].
    """
    y = F.conv2d(x, conv_weight, conv_bias, padding=conv_weight.shape[-1] // 2)
    return F.conv2d(F.pixel_unshuffle(y, factor), project_weight, project_bias)
