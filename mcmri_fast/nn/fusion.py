"""FSMNet's fusion blocks (seed 002): reference→target (CMS) and frequency↔spatial (FS), both ending in
the sigmoid gate of `ops.gated_fusion`."""
import torch
from torch import nn

from .. import ops
from ..reference.frequency import NONFINITE_VALUE
from .attention import ChannelAttention

__all__ = ["CMSFusion", "FSFusion"]


def _gate_logits(channels: int) -> nn.Sequential:
    """conv3×3 (2C → C) → conv3×3 (C → 2C): the gate's logits, one map per fused input."""
    return nn.Sequential(nn.Conv2d(2 * channels, channels, 3, padding=1), nn.Conv2d(channels, 2 * channels, 3, padding=1))


class CMSFusion(nn.Module):
    """Cross-modal fusion of a reference stream into the target stream at one scale:
    R = conv3×3(reference), T = conv3×3(target), g = gate(cat[R, T]), out = R·σ(g₁) + T·σ(g₂), non-finite
    values replaced by 1e-5. [B, C, H, W] × 2 → [B, C, H, W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.reference = nn.Conv2d(channels, channels, 3, padding=1)
        self.target = nn.Conv2d(channels, channels, 3, padding=1)
        self.gate = _gate_logits(channels)

    def forward(self, reference: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r, t = self.reference(reference), self.target(target)
        return ops.gated_fusion(r, t, self.gate(torch.cat((r, t), dim=1)), nonfinite=NONFINITE_VALUE)


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
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)
        self.attention = ChannelAttention(channels, heads)
        self.gate = _gate_logits(channels)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        p, s = self.first(first), self.second(second)
        p = self.attention(p, s) + p
        s = self.attention(s, p) + s
        return ops.gated_fusion(p, s, self.gate(torch.cat((p, s), dim=1)), nonfinite=NONFINITE_VALUE)
