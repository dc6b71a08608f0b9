"""IMA (Information-coupled MRI Acceleration; "Breaking Information Isolation: Accelerating MRI via
Inter-sequence Mapping and Progressive Masking", AAAI 2025). No public code: the paper is the source,
and the choices it leaves open are stated here and configurable.

The network (spec: shared/specs/models.md, IMA): learned embeddings X⁰ = E_X(zero-filled), Z = E_Z(zero-
filled) (C channels each), Y = E_Y(reference) (c channels); Ỹ⁰ = Y, G⁰ = X⁰; T unfolded stages
(`nn.IMAStage`, eqs. 15–22) with the DCM masks Mᵗ of `ops.dcm_schedule(M⁰, T)`; the read-out
X_out = zero-filled + R(X^T). Every operator network, the embeddings and R are [conv3×3, ReLU, conv3×3]
(`nn.OperatorNet`; R: C → C → 1).

Our choices where the paper is open:
- K⁰ = M⁰ F Z: the measurement is known where sampled (eq. 1's Z = M ⊙ F X), so the gradient step of
  eq. 15 is μ M⁰(K − F Z). X stays real: the real part is taken after eq. 19 (`ops.dcm_data_consistency`).
- In eq. 18, K^{t−1} is the spectrum of the stage's input X^t (the latest estimate).
- Eq. 20's "CSCA(Y, G) + Ỹ" is read as eq. 13's residual YA − G + ỸB with CSCA for YA − G: B_Bᵀ takes
  CSCA(Y, G) + B(Ỹ) (C channels) to the c channels of Ỹ. B, the stage's operator of eq. 22, runs twice
  a stage (on Ỹᵗ and on Ỹ^{t+1}).
- CSCA (`nn.CSCA`): one per stage, at half resolution, 2d = 112 concatenated channels in 4 heads.
- DCM: φ = 3 × 3 ones, δ = 3, ratio = 0.9; the peak at most T // 2 (6 of 12 stages dilate, 6 contract).
- The mapping term of the loss: YA + ỸB is the last stage's A(Y) + B(Ỹ^T), read out by R as X_out is.
- Initial μ = α = β = 0.5, λ₁ = λ₂ = 1.

Size at the defaults C = 36, c = 32, T = 12 (the widths chosen by a sweep to land nearest the paper's
four figures), counted on the meta device (parameters; multiply-adds of convolutions and matrix
products at 256 × 256, `tests/test_ima.py`): 1.537M parameters and 108.85 GMACs (the paper: 1.53M,
107.92); without CSCA 1.315M and 103.99 GMACs (the paper: 1.33M, 103.28).

Ablations (the paper's Table 2): `csca=False` (A(Y) − G in place of CSCA; the model's other weights are
the same), `dcm=False` (Mᵗ = M⁰ in every stage).

Training (the paper): L1(X_out − X_GT) + γ L1(X_out − (YA + ỸB)), γ = 0.5; Adam (0.9, 0.999), lr 1e-4,
100 epochs, batch 1. Data: magnitude images, instance-normalised (the embeddings make the network
insensitive to the units; the DCM acts on the embeddings' spectra, not on the measured k-space).
Fused ops: `ops.dcm_data_consistency` (the stage's k-space work), `ops.depthwise_channel_attention` and
`ops.conv1x1` (CSCA), `ops.conv3x3` (every 3 × 3 convolution).
"""
from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import IMAStage, OperatorNet
from ..ops import dcm_schedule
from . import ModelSpec, magnitude_images, register

__all__ = ["IMA", "build_ima", "ima_loss"]

MAPPING_LOSS_WEIGHT = 0.5  # γ


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


class IMA(nn.Module):
    """IMA on a batch (see the module docstring): batch["zero_filled"] and batch["reference"] real
    [B, 1, H, W], batch["mask"] [B, W] (columns) or [B, H, W] → {"image": X_out, "mapping": the read-out of
    YA + ỸB}, both [B, 1, H, W] of the input's dtype."""

    def __init__(self, channels: int = 36, reference_channels: int = 32, stages: int = 12, csca: bool = True,
                 dcm: bool = True, csca_width: int = 56, csca_heads: int = 4):
        super().__init__()
        for name, value in (("channels", channels), ("reference_channels", reference_channels), ("stages", stages),
                            ("csca_width", csca_width), ("csca_heads", csca_heads)):
            _check_positive_int(name, value)
        for name, value in (("csca", csca), ("dcm", dcm)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        self.stages, self.dcm = stages, dcm
        self.embed_x = OperatorNet(1, channels)
        self.embed_z = OperatorNet(1, channels)
        self.embed_y = OperatorNet(1, reference_channels)
        self.unfolded = nn.ModuleList(
            IMAStage(channels, reference_channels, csca, csca_width, csca_heads) for _ in range(stages)
        )
        self.read_out = OperatorNet(channels, 1, hidden=channels)

    def forward(self, batch: dict) -> dict:
        zero_filled, reference = magnitude_images(batch, "IMA")
        if reference.shape != zero_filled.shape:
            raise ValueError(f"the reference {tuple(reference.shape)} must have the zero-filled image's shape "
                             f"{tuple(zero_filled.shape)}")
        masks = self._stage_masks(batch["mask"], zero_filled.shape)
        x = self.embed_x(zero_filled)
        z = self.embed_z(zero_filled)
        y = self.embed_y(reference)
        y_tilde, g = y, x
        mapping = None
        for t, stage in enumerate(self.unfolded, start=1):
            x, y_tilde, g, mapping = stage(x, z, y, y_tilde, g, masks[0], masks[t])
        image = zero_filled + self.read_out(x)
        return {"image": image, "mapping": zero_filled + self.read_out(mapping)}

    def _stage_masks(self, mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """M⁰ … M^T in the forms `ops.dcm_data_consistency` takes: [T + 1, B, W] or [T + 1, B, 1, H, W]."""
        B, _, H, W = shape
        if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3) or mask.shape[0] != B or mask.shape[-1] != W or (
                mask.dim() == 3 and mask.shape[1] != H):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"batch['mask'] must be [B, W] or [B, H, W] = [{B}, {W}] or [{B}, {H}, {W}], got {got}")
        planes = mask.reshape(B, 1, W) if mask.dim() == 2 else mask
        if not self.dcm:
            masks = (planes != 0).expand(self.stages + 1, *planes.shape)
        else:
            masks = dcm_schedule(planes, self.stages)
        return masks.reshape(self.stages + 1, B, W) if mask.dim() == 2 else masks.unsqueeze(2)


def ima_loss(output: dict, batch: dict) -> torch.Tensor:
    """The paper's loss (eq. 25): L1(X_out − X_GT) + γ L1(X_out − (YA + ỸB)), γ = 0.5 (0-d float32)."""
    image = output["image"].float()
    return F.l1_loss(image, batch["target"].float()) + MAPPING_LOSS_WEIGHT * F.l1_loss(image, output["mapping"].float())


def build_ima(channels: int = 36, reference_channels: int = 32, stages: int = 12, csca: bool = True,
              dcm: bool = True, csca_width: int = 56, csca_heads: int = 4) -> IMA:
    """The "ima" model (the paper's setting by default; see the module docstring for the sizes)."""
    return IMA(channels, reference_channels, stages, csca, dcm, csca_width, csca_heads)


register(
    ModelSpec(
        name="ima",
        build=build_ima,
        config={"channels": 36, "reference_channels": 32, "stages": 12, "csca": True, "dcm": True,
                "csca_width": 56, "csca_heads": 4},
        loss=ima_loss,
        data={"magnitude": True, "normalization": "instance"},
        optimizer={"name": "adam", "lr": 1e-4},
        schedule={"name": "none"},
        epochs=100,
        batch_size=1,
        trainable=True,
        description="IMA: 12 unfolded stages with dilation-contraction masking and cross-sequence attention",
        # 16 / 8 channels, 6 stages, 3 epochs at 20x the paper's rate: about 70 s an epoch on 2 AMD EPYC
        # cores (40 on the Intel Xeon); at 4 epochs 27.5 dB / 0.79 SSIM on the builtin test split against
        # zero-filling's 24.9 / 0.63 (cut to 3 when DUN-SA joined the demo's 15 minutes).
        demo={"model_config": {"channels": 16, "reference_channels": 8, "stages": 6, "csca_width": 8},
              "epochs": 3, "lr": 2e-3},
    )
)
