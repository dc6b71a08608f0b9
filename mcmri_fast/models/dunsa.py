"""DUN-SA (Deep Unfolding Network with Spatial Alignment for multi-modal MRI reconstruction, MedIA). No
public code: the paper is the source, and the choices it leaves open are stated here and configurable.

The network (spec: shared/specs/models.md, DUN-SA): HQS unfolded into T = 12 stages (`nn.DUNSAStage`),
each: the spatial-alignment module updates the displacement field φ by SA-Net (eq. 12) and warps the
reference by it (`ops.warp`); Z-Net refines x with the aligned reference (eq. 14); S-Net denoises x
(eq. 16); the closed-form data consistency combines both with the measurement (eq. 11,
`ops.dunsa_data_consistency` with two priors). x⁰ is the zero-filled image, φ⁰ = 0.

Our choices where the paper is open:
- The image is complex, as two real channels (real, imaginary), and the DC step uses the measured
  k-space (data: magnitude=False, volume_max normalisation). The networks see it with its smooth phase
  removed (the unit phase of `baselines.low_resolution_phase`, put back around every DC step, an
  isometry): a network on raw real/imaginary channels learns its training slices' phases (see
  `baselines`, unet_dc).
- The reference is the magnitude of batch["reference"] (one channel): the warp aligns anatomy, the other
  contrast's phase carries none.
- SA-Net, Z-Net and S-Net (the paper's Fig. 3 is not in its text) are `nn.CompactUNet`s: 2 poolings,
  widths 16 / 32 / 64, per level twice conv3×3 + instance norm + LeakyReLU (fastMRI's block), a 1×1
  output. Every output layer starts at zero (the paper says so of SA-Net): the untrained network is
  zero-filling (φ = 0, z = s = x⁰, and the DC of a consistent image is itself).
  Inputs: SA-Net and Z-Net (x, T(x_ref, φ)), 3 channels; S-Net x, 2 channels.
- SA-Net runs at a quarter of the resolution (`alignment_scale=4`, `nn.SpatialAlignment`): its inputs
  average-pooled 4×, its update upsampled bilinearly, in full-resolution pixels. The paper's SA-Net is
  full-resolution (`alignment_scale=1`). The SAN protocol's motion at σ = 3 reaches 15% of the image
  (38 pixels at 256) and is smooth (rigid plus a 9 × 9-point elastic field): a full-resolution U-Net of 2
  poolings sees too little of it, and its zero-initialised output grows too slowly, to learn it at the
  demo budget (σ = 3: 28.07 dB against the no-alignment ablation's 28.12); at a quarter of the resolution
  it sees 4× farther, each unit of its output moves 4 pixels, and it costs 1/16 (BENCHMARKS.md, DUN-SA).
- The warp: bilinear, reflection padding, align_corners=False (the closest public code, SAN's); φ in
  pixels. SA-Net's input at stage t is the previous stage's T(x_ref, φ^t), so a stage warps once.

Size at the defaults (stages 12, width 16, depth 2), counted on the meta device (`tests/test_dunsa.py`):
4,245,228 parameters and 45.48 GMACs at 256 × 256 (66.21 with a full-resolution SA-Net; convolutions: the
warps, FFTs and pooling are not multiply-adds of weights).

Ablations (the paper's Table 7): `alignment=False` (w/o SA: φ = 0, Z-Net sees the reference as it
comes), `multimodal=False` (w/o MM: no Z-Net, no reference, no alignment), `denoiser=False` (w/o DB:
no S-Net). The DC step keeps the priors that remain.

Training (the paper): 1 − SSIM (of the magnitudes), Adam lr 1e-4, batch 2. Data default: the reference
misaligned with σ = 1 of the SAN protocol (`data.transforms.misalign`); `--misalignment` sets another σ.
Output: {"image": the reconstruction (complex, batch["target"]'s shape), "aligned": T(|x_ref|, φ^T),
"flow": φ^T [B, 2, H, W] in pixels (channel 0 along W), "flows": every stage's φ [B, T, 2, H, W]};
without alignment "image" alone (and "aligned", "flow" absent), so `mcmri eval` draws no alignment panel.
"""
from __future__ import annotations

import numbers

import torch
from torch import nn

from ..nn import DUNSAStage
from ..ops import dunsa_data_consistency
from . import ModelSpec, register
from ..data.channels import channels_to_complex, complex_to_channels
from .baselines import batched_mask, low_resolution_phase, measured_kspace

__all__ = ["DUNSA", "build_dunsa"]


def _check_positive_int(name: str, value: object, minimum: int = 1) -> None:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _unit_phase(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """exp(i·φ) of the low-resolution image, of modulus 1 everywhere (1 where that image is 0)."""
    phase = low_resolution_phase(kspace, mask)
    modulus = phase.abs()
    return torch.where(modulus > 0, phase / modulus.clamp_min(torch.finfo(modulus.dtype).tiny), torch.ones_like(phase))


class DUNSA(nn.Module):
    """DUN-SA on a batch (see the module docstring): batch["zero_filled"] complex [B, 1, H, W], batch["reference"]
    [B, 1, H, W] (complex or real), batch["masked_kspace"], batch["scale"] and batch["mask"] ([B, W] or
    [B, H, W]) → {"image", "aligned", "flow", "flows"}."""

    def __init__(self, stages: int = 12, width: int = 16, depth: int = 2, alignment: bool = True,
                 multimodal: bool = True, denoiser: bool = True, alignment_scale: int = 4):
        super().__init__()
        _check_positive_int("stages", stages)
        _check_positive_int("width", width)
        _check_positive_int("depth", depth, minimum=0)
        _check_positive_int("alignment_scale", alignment_scale)
        for name, value in (("alignment", alignment), ("multimodal", multimodal), ("denoiser", denoiser)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        if alignment and not multimodal:
            raise ValueError("alignment=True needs multimodal=True: the aligned reference feeds Z-Net (w/o MM drops both)")
        if not (multimodal or denoiser):
            raise ValueError("multimodal=False with denoiser=False leaves no prior for the DC step")
        self.alignment, self.multimodal = alignment, multimodal
        self.unfolded = nn.ModuleList(
            DUNSAStage(2, 1, width, depth, alignment, multimodal, denoiser, alignment_scale) for _ in range(stages)
        )

    def forward(self, batch: dict) -> dict:
        zero_filled = batch["zero_filled"]
        if not isinstance(zero_filled, torch.Tensor) or zero_filled.dim() != 4 or zero_filled.shape[1] != 1:
            got = tuple(zero_filled.shape) if isinstance(zero_filled, torch.Tensor) else type(zero_filled).__name__
            raise ValueError(f"batch['zero_filled'] must be [B, 1, H, W], got {got}")
        if not zero_filled.is_complex():
            raise TypeError(f"DUN-SA takes complex images (data magnitude=False), got {zero_filled.dtype} batch['zero_filled']")
        k0 = measured_kspace(batch)
        if k0.shape[-2:] != zero_filled.shape[-2:]:
            raise ValueError(f"DUN-SA needs k-space at the image size, got k-space {tuple(k0.shape[-2:])} for images "
                             f"{tuple(zero_filled.shape[-2:])}")
        B, _, H, W = zero_filled.shape
        mask = batched_mask(batch["mask"], B)
        phase = _unit_phase(k0, mask)

        def measured_frame(t):
            return None if t is None else channels_to_complex(t) * phase

        def data_consistency(z, s, beta_z, beta_s):
            # the priors in the measurement's frame (phase back on), the result in the networks' frame
            out = dunsa_data_consistency(measured_frame(z), k0, mask, beta_z, s=measured_frame(s), beta_s=beta_s)
            return complex_to_channels(out * phase.conj())

        x = complex_to_channels(zero_filled * phase.conj())
        reference = aligned = flow = None
        if self.multimodal:
            reference = batch["reference"]
            if not isinstance(reference, torch.Tensor) or tuple(reference.shape) != (B, 1, H, W):
                got = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
                raise ValueError(f"batch['reference'] must be [B, 1, H, W] = [{B}, 1, {H}, {W}], got {got}")
            reference = (reference.abs() if reference.is_complex() else reference).to(x.dtype)
        if self.alignment:
            aligned, flow = reference, x.new_zeros(B, 2, H, W)
        flows = []
        for stage in self.unfolded:
            x, aligned, flow = stage(x, reference, aligned, flow, data_consistency)
            flows.append(flow)
        output = {"image": (channels_to_complex(x) * phase).to(zero_filled.dtype)}
        if self.alignment:
            output.update(aligned=aligned, flow=flow, flows=torch.stack(flows, dim=1))
        return output


def build_dunsa(stages: int = 12, width: int = 16, depth: int = 2, alignment: bool = True, multimodal: bool = True,
                denoiser: bool = True, alignment_scale: int = 4) -> DUNSA:
    """The "dunsa" model (the paper's 12 stages; see the module docstring for the sizes)."""
    return DUNSA(stages, width, depth, alignment, multimodal, denoiser, alignment_scale)


register(
    ModelSpec(
        name="dunsa",
        build=build_dunsa,
        config={"stages": 12, "width": 16, "depth": 2, "alignment": True, "multimodal": True, "denoiser": True,
                "alignment_scale": 4},
        loss="ssim",
        data={"magnitude": False, "normalization": "volume_max", "misalignment": 1.0},
        optimizer={"name": "adam", "lr": 1e-4},
        schedule={"name": "none"},
        epochs=50,  # the paper gives none (it selects by validation)
        batch_size=2,
        trainable=True,
        description="DUN-SA: 12 unfolded stages that align a misaligned reference (warp) and reconstruct",
        # 4 stages at width 8, 4 epochs at 20x the paper's rate: about 50 s an epoch on 2 Intel Xeon cores
        # (60 on AMD EPYC). On the builtin test split: σ = 1 28.8 dB / 0.81 SSIM, σ = 3 28.9 / 0.84,
        # against zero-filling's 24.9 / 0.63 and alignment=False's 28.4 / 0.78 and 27.8 / 0.80
        # (BENCHMARKS.md, DUN-SA). At 3 epochs the validation SSIM was still below the ablation's: the
        # fourth is where alignment pays.
        demo={"model_config": {"stages": 4, "width": 8}, "epochs": 4, "lr": 2e-3},
    )
)
