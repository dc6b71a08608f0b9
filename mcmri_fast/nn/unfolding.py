"""Blocks of IMA's unfolded network (mcmri_fast/models/ima.py has the paper, the choices and the sizes):
its operator networks, the cross-sequence converging attention (CSCA) and one unfolded stage."""
import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .blocks import Conv3x3

__all__ = ["CSCA", "IMAStage", "OperatorNet"]


class OperatorNet(nn.Sequential):
    """[conv3×3, ReLU, conv3×3]: every learned operator of IMA (C_R1, C_R2, B_Bᵀ, A, B, the embeddings,
    the read-out). in_channels → hidden (default out_channels) → out_channels, with biases; the
    convolutions are `nn.Conv3x3` (`ops.conv3x3`: Winograd on the cpu backend)."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int | None = None):
        hidden = out_channels if hidden is None else hidden
        super().__init__(Conv3x3(in_channels, hidden), nn.ReLU(inplace=True), Conv3x3(hidden, out_channels))


class CSCA(nn.Module):
    """Cross-sequence converging attention (eq. 21): (Q₁, K₁, V₁) from the reference embedding Y and
    (Q₂, K₂, V₂) from the auxiliary variable G, concatenated along the channels so that one channel
    attention over the 2d concatenated channels holds the self-attention blocks (Q₁K₁ᵀ, Q₂K₂ᵀ) and the
    cross-attention blocks (Q₁K₂ᵀ, Q₂K₁ᵀ) in one computation (heads split the concatenation).

    Multiscale extraction (the paper leaves it open): the attention runs at 1/`scale` resolution on
    average-pooled Y and G, each projected by a 1×1 convolution and a depthwise 3×3 one (a 3·scale
    footprint at full resolution), and its output, projected to the C channels of the X-space, is
    upsampled bilinearly to the input's size. The depthwise convolutions and the attention are one op,
    `ops.depthwise_channel_attention` (FSMNet's fusion attention runs the same op).
    y [B, c, H, W], g [B, C, H, W] → [B, C, H, W] (what replaces YA − G in the Ỹ update, eq. 20).
    """

    def __init__(self, reference_channels: int, channels: int, width: int, heads: int = 2, scale: int = 2):
        super().__init__()
        if (2 * width) % heads:
            raise ValueError(f"heads ({heads}) must divide the 2 * width = {2 * width} attention channels")
        self.heads, self.scale, self.width = heads, scale, width
        self.temperature = nn.Parameter(torch.ones(heads))
        self.from_reference = nn.Conv2d(reference_channels, 3 * width, 1, bias=False)
        self.from_guide = nn.Conv2d(channels, 3 * width, 1, bias=False)
        self.query_dw = nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=2 * width, bias=False)
        self.key_value_dw = nn.Conv2d(4 * width, 4 * width, 3, padding=1, groups=4 * width, bias=False)
        self.project_out = nn.Conv2d(2 * width, channels, 1, bias=False)

    def forward(self, y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        size = g.shape[-2:]
        if self.scale > 1:
            y, g = (F.avg_pool2d(t, self.scale, ceil_mode=True) for t in (y, g))
        q1, k1, v1 = ops.conv1x1(y, self.from_reference.weight).chunk(3, dim=1)
        q2, k2, v2 = ops.conv1x1(g, self.from_guide.weight).chunk(3, dim=1)
        out = ops.depthwise_channel_attention(
            torch.cat([q1, q2], dim=1), torch.cat([k1, k2, v1, v2], dim=1), self.query_dw.weight,
            self.key_value_dw.weight, self.temperature, self.heads,
        )
        out = ops.conv1x1(out, self.project_out.weight)
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False) if self.scale > 1 else out


class IMAStage(nn.Module):
    """One unfolded stage t of IMA (eqs. 15–22), with learnable μ, α, β, λ₁, λ₂:

        X^{t+1} = dcm_data_consistency(X, Z, G, C_R1(X), M⁰, Mᵗ, μ, α, λ₁)                  (15, 18, 19)
        Ỹ^{t+1} = Ỹ − β B_Bᵀ(CSCA(Y, G) + B(Ỹ)) − β λ₂ C_R2(Ỹ)                              (20)
        G^{t+1} = (A(Y) + B(Ỹ^{t+1}) + α X^{t+1}) / (1 + α)                                  (22)

    In eq. 20 the residual of eq. 13's gradient, YA + ỸB − G, is CSCA(Y, G) + B(Ỹ): CSCA stands for YA − G
    (the paper's replacement), and B is this stage's operator of eq. 22. Without CSCA (`csca=False`, the
    paper's ablation) the term is A(Y) − G + B(Ỹ), eq. 13 as it stands. X, Z, G have C channels, Y, Ỹ c.
    """

    def __init__(self, channels: int, reference_channels: int, csca: bool = True, csca_width: int = 32,
                 csca_heads: int = 2, csca_scale: int = 2):
        super().__init__()
        C, c = channels, reference_channels
        self.prior_x = OperatorNet(C, C)  # C_R1
        self.prior_y = OperatorNet(c, c)  # C_R2
        self.adjoint_b = OperatorNet(C, c)  # B_Bᵀ
        self.map_a = OperatorNet(c, C)  # A
        self.map_b = OperatorNet(c, C)  # B
        self.csca = CSCA(c, C, csca_width, csca_heads, csca_scale) if csca else None
        # μ, α, β, λ₁, λ₂ (the paper gives no initial values)
        self.step = nn.Parameter(torch.tensor([0.5]))
        self.alpha = nn.Parameter(torch.tensor([0.5]))
        self.beta = nn.Parameter(torch.tensor([0.5]))
        self.lambda_x = nn.Parameter(torch.tensor([1.0]))
        self.lambda_y = nn.Parameter(torch.tensor([1.0]))

    def forward(self, x, z, y, y_tilde, g, mask, dilated_mask):
        """(X^{t+1}, Ỹ^{t+1}, G^{t+1}, A(Y) + B(Ỹ^{t+1})); masks in `ops.dcm_data_consistency`'s forms."""
        x_next = ops.dcm_data_consistency(x, z, g, self.prior_x(x), mask, dilated_mask, self.step, self.alpha,
                                          self.lambda_x)
        mapped_y = self.map_a(y)
        residual = (self.csca(y, g) if self.csca is not None else mapped_y - g) + self.map_b(y_tilde)
        y_next = y_tilde - self.beta * (self.adjoint_b(residual) + self.lambda_y * self.prior_y(y_tilde))
        mapping = mapped_y + self.map_b(y_next)
        g_next = (mapping + self.alpha * x_next) / (1 + self.alpha)
        return x_next, y_next, g_next, mapping
