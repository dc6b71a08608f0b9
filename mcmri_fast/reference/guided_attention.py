"""Reference of MANet's T1-guided attention (the authors' ChannelAttention and SpatialAttention, CBAM-style
with max pooling only): the reference contrast's features f₁ select where and which channels of the
target's features f₂ are amplified."""
import torch
import torch.nn.functional as F


def guided_attention(
    f1: torch.Tensor,
    f2: torch.Tensor,
    ca_down: torch.Tensor,
    ca_up: torch.Tensor,
    sa_weight: torch.Tensor,
) -> torch.Tensor:
    """out = f₂ · a + f₂ with

        ca = sigmoid(W_up · relu(W_down · max_p f₁[:, :, p]))          [B, C]   (channel attention)
        a = f₁ · ca
        sa = sigmoid(conv_k×k(max_c a[:, c], sa_weight, padding k//2))   [B, 1, H, W] (spatial attention)
        a = a · sa

    f1, f2 [B, C, H, W]; ca_down [Cr, C, 1, 1] and ca_up [C, Cr, 1, 1] (the 1×1 convolutions, no bias;
    MANet: Cr = C / 16); sa_weight [1, 1, k, k], k odd (MANet: 7), no bias. Returns [B, C, H, W].

    The max pools are `F.adaptive_max_pool2d` and `torch.max(dim=1)`, as the authors': their gradients go
    to one element each (the first maximum), not shared among ties as `amax`'s are.
    """
    pooled = F.adaptive_max_pool2d(f1, 1)
    ca = torch.sigmoid(F.conv2d(F.relu(F.conv2d(pooled, ca_down)), ca_up))
    a = f1 * ca
    s, _ = torch.max(a, dim=1, keepdim=True)
    a = a * torch.sigmoid(F.conv2d(s, sa_weight, padding=sa_weight.shape[-1] // 2))
    return f2 * a + f2
