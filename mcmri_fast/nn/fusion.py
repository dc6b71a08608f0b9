"""FSMNet's fusion blocks: reference→target (CMS) and frequency↔spatial (FS), both ending in
the sigmoid gate of `ops.gated_fusion`."""
import torch
from torch import nn

from .. import ops
from ..reference.frequency import NONFINITE_VALUE
from .attention import ChannelAttention
from .blocks import Conv3x3

__all__ = ["CMSFusion", "FSFusion"]


class _GateLogits(nn.Sequential):
    """The gate's logits, one map per fused input: conv3×3 (2C → C) of cat[a, b] → conv3×3 (C → 2C).

    The first convolution runs as two, over a and over b with the two halves of its weight, summed: the
    same map without the concatenated copy, which autograd would keep for the weight's gradient
    besides a and b (which the gate keeps too). 2C maps fewer per fusion, and no slower.
    The parameters are those of the concatenating form (gate.0, gate.1)."""

    def __init__(self, channels: int):
        super().__init__(Conv3x3(2 * channels, channels), Conv3x3(channels, 2 * channels))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        reduce, expand = self[0], self[1]
        channels = a.shape[1]
        # in place on a fresh convolution output, which its backward does not read
        hidden = ops.conv3x3(a, reduce.weight[:, :channels], reduce.bias)
        hidden = hidden.add_(ops.conv3x3(b, reduce.weight[:, channels:]))
        return expand(hidden)


class CMSFusion(nn.Module):
    """Cross-modal fusion of a reference stream into the target stream at one scale:
    R = conv3×3(reference), T = conv3×3(target), g = gate(cat[R, T]), out = R·σ(g₁) + T·σ(g₂), non-finite
    values replaced by 1e-5. [B, C, H, W] × 2 → [B, C, H, W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.reference = Conv3x3(channels, channels)
        self.target = Conv3x3(channels, channels)
        self.gate = _GateLogits(channels)

    def forward(self, reference: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r, t = self.reference(reference), self.target(target)
        return ops.gated_fusion(r, t, self.gate(r, t), nonfinite=NONFINITE_VALUE)


class FSFusion(nn.Module):
    """Fusion of two streams with cross channel attention, then the gate:
    P = conv3×3(first), S = conv3×3(second); P' = Att(q=P, kv=S) + P; S' = Att(q=S, kv=P') + S;
    out = P'·σ(g₁) + S'·σ(g₂), g = gate(cat[P', S']); non-finite values replaced by 1e-5.

    One attention module serves both directions: the authors' code builds a second one that it never
    calls, which is left out here (no dead parameters). FSMNet calls it with the spatial stream first
    (its code names the arguments the other way round). [B, C, H, W] × 2 → [B, C, H, W].
    """

    def __init__(self, channels: int, heads: int = 8):
        super().__init__()
        self.first = Conv3x3(channels, channels)
        self.second = Conv3x3(channels, channels)
        self.attention = ChannelAttention(channels, heads)
        self.gate = _GateLogits(channels)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        p, s = self.first(first), self.second(second)
        p = self.attention(p, s) + p
        s = self.attention(s, p) + s
        return ops.gated_fusion(p, s, self.gate(p, s), nonfinite=NONFINITE_VALUE)
