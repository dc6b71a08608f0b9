"""Reference of the sigmoid-gated fusion of two feature maps (FSMNet's CMS- and FS-fusion gate)."""
import torch


def gated_fusion(a: torch.Tensor, b: torch.Tensor, gate: torch.Tensor, nonfinite: float | None = None) -> torch.Tensor:
    """out = a·σ(gate[:, :C]) + b·σ(gate[:, C:]).

    a, b [B, C, *spatial]; gate [B, 2C, *spatial] (the gate logits). With `nonfinite` a number,
    non-finite results (nan, ±inf) are replaced by it (FSMNet: 1e-5). Returns [B, C, *spatial].
    """
    gate_a, gate_b = gate.chunk(2, dim=1)
    out = a * torch.sigmoid(gate_a) + b * torch.sigmoid(gate_b)
    if nonfinite is not None:
        out = torch.nan_to_num(out, nan=nonfinite, posinf=nonfinite, neginf=nonfinite)
    return out
