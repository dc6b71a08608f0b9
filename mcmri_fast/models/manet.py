"""MANet and MARIO (Feng, Fu, Zhou, Xu, Shao and Zhang, "Multi-modal Aggregation Network for Fast MR
Imaging"; Feng, Xu, Shao, Zhang and Fu, "Deep multi-modal aggregation network for MR image reconstruction
with auxiliary modality"; the authors' code chunmeifeng/MARIO, fastmri/models/MANet.py and
experimental/MANet/module_MANet.py).
One network, two registrations: `manet` (the magnitude image stage, IXI) and `mario` (the complex image
stage, fastMRI), the `complex_image` flag.

The network (spec: shared/specs/models.md, MANet / MARIO): two stages, each a pair of Dense U-Nets
(`nn.DenseUNetPair`: the reference stream and the target stream, 64 channels, 4 poolings, dense blocks
of 4 conv3×3 → BN → ReLU units with additive dense links, the reference's features guiding the target's
through a T1-guided attention, `ops.guided_attention`, after each of the 8 down and up levels):

1. k-space: the reference's k-space F r and the measured target k-space k̃ (masked), each as two
   channels (real, imaginary): the reference stream takes F r, the target stream cat(k̃, F r) → the
   k-spaces k_ref, k_tgt (2 channels each).
2. image: the reference stream takes the image of k_ref, the target stream cat(image of k_tgt, image of
   k_ref) → the reconstructed reference and target images.

Our choices:
- F is the library's fastMRI convention throughout (`data.fft2c` / `ifft2c`: centred, orthonormal; the
  k-space the data layer gives). The authors take |ifft2| uncentred with the 1/N norm; their k-space is
  uncentred. The images between the stages: magnitudes |Fᴴ k| (`manet`, 1 channel), or the complex
  image as (real, imaginary) channels (`mario`, 2 channels; `data.complex_to_channels`).
- The data are divided by the volume maximum (volume_max), so the measurement in the images' units is
  masked_kspace / scale (`baselines.measured_kspace`); the reference's k-space is fft2c of
  batch["reference"] (magnitude for `manet`: the k-space of the magnitude image, as the authors' IXI
  data; complex for `mario`).
- Optional hard data consistency (`data_consistency=True`; off by default, the paper has none), with
  `ops.data_consistency` at weight 1 (k ← (1 − M)·k + M·k̃): after stage 1 on k_tgt; after stage 2 on
  the target image: `mario` on the complex image itself; `manet` on the complex image made of the
  stage-2 magnitude and the phase of stage 1's target image (sgn Fᴴ k_tgt, after its DC), of which the
  magnitude is the output (a magnitude network has no phase of its own; stage 1's is the measurement's
  where it is sampled). With it, the target streams' output convolutions start at zero, so the untrained
  network is zero-filling, where the authors' random output layers start from images of noise several
  times the signal (the reference streams keep their initialisation).
- The attention's reduction keeps at least one channel (max(1, C // 16)): the authors' C // 16 is 0 in
  the narrow networks of the demo.

Size at the paper's 64 channels, counted on the meta device (`tests/test_manet.py`): `manet` 7,283,670
parameters (exactly those that take part in the authors' forward pass; their module builds 7,579,094,
with 8 unused conv3×3 in the k-space net) and 127.86 GMACs at 256 × 256 (convolutions); `mario`
7,283,992 parameters and 127.88 GMACs. Each stage's body is 3,641,224 parameters: 18 dense blocks of
148,224, 4 up-samplings of the reference (102,656 each) and of the target (139,520 each, with the
skip), 8 attentions of 561.

Fused ops: the 16 guided attentions run `ops.guided_attention` (the attention's reductions and products
in a few passes, nothing of a map's size kept for the backward), the conv3×3 of the dense blocks and
up-samplings `ops.conv3x3` (`nn.ConvBatchNormReLU`; Winograd on the cpu backend), the 1×1 input and
output convolutions `ops.conv1x1`, the optional DC `ops.data_consistency`; in eval mode each batch norm
is folded into its convolution. The transposed convolutions, batch norms (in training), poolings and
FFTs are torch's. Under `mcmri_fast.use_backend("reference")` the same network runs on the pure-PyTorch
references.

Loss (the paper's eq. 6, `manet_loss`): α((1 − β)L_k^ref + β L_k^tgt) + (1 − α)((1 − β)L_img^ref +
β L_img^tgt), L1 (complex values as (real, imaginary) pairs), α = 0.4, β = 0.6 (the authors' code weighs
0.1 / 0.9 between the contrasts and the two stages equally: `manet_loss(..., alpha=0.5, beta=0.9)`).
Ground truth: stage 1 the fully sampled k-spaces (fft2c of batch["reference"]; batch["kspace"] / scale),
stage 2 batch["reference"] and batch["target"]. Adam lr 1e-3, batch 8, 50 epochs. Data: `manet`
magnitude images with complex Gaussian k-space noise at 10% of the mean intensity (Rician in the
magnitude: the paper's IXI setting; `--noise` sets another level); `mario` complex images, no noise.

Output: {"image": the stage-2 target (batch["target"]'s shape and dtype: real for `manet`, complex for
`mario`), "reference_image": the stage-2 reference (the same form), "kspace" and "reference_kspace":
stage 1's k_tgt and k_ref, complex [B, 1, H, W], centred}.

The authors' weights load through `from_authors_state_dict` (their parameter names onto ours).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ..data.channels import channels_to_complex, complex_to_channels
from ..data.fft import fft2c, ifft2c
from ..nn import DenseUNetPair
from ..nn.dense import LEVELS
from . import ModelSpec, register
from ._checkpoints import authors_state_dict
from .baselines import batched_mask, measured_kspace

__all__ = ["MANet", "build_manet", "build_mario", "from_authors_state_dict", "manet_loss"]

ALPHA = 0.4  # eq. 6: the k-space stage's share of the loss
BETA = 0.6  # eq. 6: the target's share within each stage


class MANet(nn.Module):
    """MANet (complex_image=False) or MARIO (complex_image=True) on a batch (see the module docstring).

    forward(batch): batch["masked_kspace"] complex [B, 1, H, W] and batch["scale"] (the measurement and
    the normalisation), batch["reference"] [B, 1, H, W] (real for MANet, complex for MARIO), with
    data_consistency=True also batch["mask"] ([B, W] or [B, H, W]); H and W divisible by 16. Returns
    {"image", "reference_image", "kspace", "reference_kspace"}.

    channels: the width of every level (the paper's 64); convs: the conv3×3 → BN → ReLU units of a dense
    block (the authors' num_conv, 4).
    """

    def __init__(self, channels: int = 64, complex_image: bool = False, data_consistency: bool = False, convs: int = 4):
        super().__init__()
        for name, value in (("channels", channels), ("convs", convs)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("complex_image", complex_image), ("data_consistency", data_consistency)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        self.complex_image, self.data_consistency = complex_image, data_consistency
        image_channels = 2 if complex_image else 1
        self.kspace_net = DenseUNetPair(2, 2, channels, convs)
        self.image_net = DenseUNetPair(image_channels, image_channels, channels, convs)
        if data_consistency:
            # the untrained network is then zero-filling (the DC of a zero output is the measurement)
            for out in (self.kspace_net.target_out, self.image_net.target_out):
                nn.init.zeros_(out.weight)
                nn.init.zeros_(out.bias)

    @property
    def _name(self) -> str:
        return "MARIO" if self.complex_image else "MANet"

    def forward(self, batch: dict) -> dict:
        k0 = measured_kspace(batch)
        B, C, H, W = k0.shape
        if C != 1:
            raise ValueError(f"{self._name} needs batch['masked_kspace'] of one channel [B, 1, H, W], got {tuple(k0.shape)}")
        reference = batch["reference"]
        if not isinstance(reference, torch.Tensor) or tuple(reference.shape) != (B, 1, H, W):
            got = tuple(reference.shape) if isinstance(reference, torch.Tensor) else type(reference).__name__
            raise ValueError(f"{self._name} needs batch['reference'] at the k-space size [B, 1, H, W] = [{B}, 1, {H}, {W}], "
                             f"got {got} (fastMRI files crop the images after the FFT: their k-space is not at the image size)")
        if reference.is_complex() != self.complex_image:
            kind = "complex images (data magnitude=False)" if self.complex_image else "magnitude images (data magnitude=True)"
            raise TypeError(f"{self._name} takes {kind}, got {reference.dtype} batch['reference']")
        if H % 2**LEVELS or W % 2**LEVELS:
            raise ValueError(f"{self._name} needs H and W divisible by {2**LEVELS}, got {H} x {W}")
        mask = batched_mask(batch["mask"], B) if self.data_consistency else None

        # Stage 1, k-space: the reference's fully sampled k-space guides the measured target's.
        reference_kspace = fft2c(reference.to(k0.dtype))
        r, t = self.kspace_net(complex_to_channels(reference_kspace), complex_to_channels(k0))
        reference_kspace, kspace = channels_to_complex(r), channels_to_complex(t)
        reference_image, image = ifft2c(reference_kspace), ifft2c(kspace)
        if mask is not None:
            image = ops.data_consistency(image, k0, mask)
            kspace = fft2c(image)

        # Stage 2, images.
        if self.complex_image:
            r, t = self.image_net(complex_to_channels(reference_image), complex_to_channels(image))
            reference_image, target_image = channels_to_complex(r).to(k0.dtype), channels_to_complex(t).to(k0.dtype)
            if mask is not None:
                target_image = ops.data_consistency(target_image, k0, mask)
        else:
            r, t = self.image_net(reference_image.abs(), image.abs())
            reference_image, target_image = r.to(k0.real.dtype), t.to(k0.real.dtype)
            if mask is not None:
                target_image = ops.data_consistency(target_image * torch.sgn(image), k0, mask).abs()
        return {"image": target_image, "reference_image": reference_image, "kspace": kspace,
                "reference_kspace": reference_kspace}


def _l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference, complex values as (real, imaginary) pairs, in float32."""
    x, y = (torch.view_as_real(v) if v.is_complex() else v for v in (x, y))
    return F.l1_loss(x.float(), y.float())


def manet_loss(output: dict, batch: dict, *, alpha: float = ALPHA, beta: float = BETA) -> torch.Tensor:
    """The paper's loss (eq. 6): α((1 − β)L_k^ref + β L_k^tgt) + (1 − α)((1 − β)L_img^ref + β L_img^tgt),
    each L1 against the fully sampled truth: fft2c(batch["reference"]), batch["kspace"] / scale (the
    target's k-space in the images' units), batch["reference"], batch["target"] (0-d float32)."""
    reference = batch["reference"]
    kspace = measured_kspace({"masked_kspace": batch["kspace"], "scale": batch["scale"]})
    reference_kspace = fft2c(reference.to(kspace.dtype))
    kspace_term = (1 - beta) * _l1(output["reference_kspace"], reference_kspace) + beta * _l1(output["kspace"], kspace)
    image_term = (1 - beta) * _l1(output["reference_image"], reference) + beta * _l1(output["image"], batch["target"])
    return alpha * kspace_term + (1 - alpha) * image_term


def build_manet(channels: int = 64, data_consistency: bool = False, convs: int = 4) -> MANet:
    """The "manet" model: the magnitude image stage (the paper's IXI setting)."""
    return MANet(channels, complex_image=False, data_consistency=data_consistency, convs=convs)


def build_mario(channels: int = 64, data_consistency: bool = False, convs: int = 4) -> MANet:
    """The "mario" model: the complex image stage (real, imaginary channels; the fastMRI setting)."""
    return MANet(channels, complex_image=True, data_consistency=data_consistency, convs=convs)


# ---------------------------------------------------------------------------------------------------
# The authors' parameter names

_AUTHORS_STAGES = {"kspace_net": "UNet_k", "image_net": "UNet_img"}
_AUTHORS_ENDS = {"reference_in": "conv1T1", "target_in": "conv1T2", "reference_out": "outconvT1", "target_out": "outconvT2"}
_AUTHORS_ATTENTION = {"channel_down": "atten_depth_channel_{}{}.fc1.weight", "channel_up": "atten_depth_channel_{}{}.fc2.weight",
                      "spatial": "atten_depth_spatial_{}{}.conv1.weight"}
_AUTHORS_UP = {"up": "upsample_layer", "fuse.conv": "conv", "fuse.bn": "bn"}
# Built by the authors' k-space net and never called by its forward pass: dropped.
AUTHORS_UNUSED = re.compile(r"UNet_k\.convdem[DU][0-3]\.(weight|bias)")


def _authors_dense(rest: list[str]) -> str:
    """Our DenseBlock's "layers.i.conv|bn.name" as the authors' Single_level_densenet's."""
    _, index, module, name = rest
    return f"{'conv_list' if module == 'conv' else 'bn_list'}.{index}.{name}"


def _authors_key(key: str) -> str:
    """The authors' name (SRModule's state_dict: UNet_k, UNet_img) of our state_dict key `key`."""
    stage, head, *rest = key.split(".")
    prefix = _AUTHORS_STAGES[stage]
    stream = "T1" if head.startswith("reference") else "T2"
    if head in _AUTHORS_ENDS:
        return f"{prefix}.{_AUTHORS_ENDS[head]}.{rest[0]}"
    if head.endswith("_bottom"):
        return f"{prefix}.bottom_{stream}.{_authors_dense(rest)}"
    level, *rest = rest
    level = int(level)
    if head.endswith("_attention"):
        return f"{prefix}.{_AUTHORS_ATTENTION[rest[0]].format('U_' if head == 'up_attention' else '', level)}"
    if head.endswith("_down"):
        return f"{prefix}.d{stream}_{level + 1}.{_authors_dense(rest)}"
    if head.endswith("_up_dense"):  # our decoder level 0 is the authors' deepest, u4
        return f"{prefix}.u{LEVELS - level}_{stream}.{_authors_dense(rest)}"
    *module, name = rest
    return f"{prefix}.up{LEVELS - level}_{stream}.{_AUTHORS_UP['.'.join(module)]}.{name}"


def from_authors_state_dict(state_dict: Mapping[str, torch.Tensor], complex_image: bool = False) -> OrderedDict:
    """Our state dict from the authors' MANet: `MANet(64, complex_image).load_state_dict(
    from_authors_state_dict(torch.load(path)["state_dict"]))` (strict) loads their checkpoint.

    Their network: the Lightning module SRModule of chunmeifeng/MARIO, experimental/MANet/module_MANet.py,
    which holds the Dense U-Nets `UNet_k` (Dense_Unet_k(2, 2, 64): the k-space stage) and `UNet_img`
    (Dense_Unet_img(1, 1, 64): the image stage) of fastmri/models/MANet.py. `state_dict`: its
    `state_dict()`, with the batch-norm buffers (running_mean, running_var, num_batches_tracked), or the
    Lightning checkpoint (`{"state_dict": state_dict, ...}`); a `module.` prefix (DataParallel) is removed
    when every key has it. Their code fixes 64 channels. complex_image=False: their published image net
    (1 channel, MANet); True: a 2-channel one (MARIO), with conv1T1 and outconvT* of 2 channels and
    conv1T2 of 4 (their Dense_Unet_img hard-codes conv1T2's 2 input channels: such a network is their
    code with that number changed).

    Names, theirs → ours, in `UNet_k` → `kspace_net` and `UNet_img` → `image_net` (their T1 is our
    reference stream, T2 the target; encoder level l = 1..4 is our index l − 1, decoder level u4..u1 our
    0..3, deepest first):

    * `conv1T1`, `conv1T2`, `outconvT1`, `outconvT2` → `reference_in`, `target_in`, `reference_out`,
      `target_out`;
    * the dense blocks (Single_level_densenet: `conv_list.i`, `bn_list.i` → `layers.i.conv`,
      `layers.i.bn`): `dT1_l`, `dT2_l` → `reference_down.{l-1}`, `target_down.{l-1}`; `bottom_T1`,
      `bottom_T2` → `reference_bottom`, `target_bottom`; `u{4-j}_T1`, `u{4-j}_T2` →
      `reference_up_dense.j`, `target_up_dense.j`;
    * the up-samplings `up{4-j}_T1`, `up{4-j}_T2` (Upsample_n_Concat_*: `upsample_layer`, `conv`, `bn`) →
      `reference_up.j`, `target_up.j` (`up`, `fuse.conv`, `fuse.bn`);
    * the attentions `atten_depth_channel_{k}.fc1` / `.fc2` and `atten_depth_spatial_{k}.conv1` →
      `down_attention.k.channel_down` / `channel_up` / `spatial`; `atten_depth_channel_U_{k}` and
      `atten_depth_spatial_U_{k}` → `up_attention.k`.

    No tensor is transformed. Dropped: `UNet_k.convdemD{0..3}` and `UNet_k.convdemU{0..3}` (weight and
    bias: 16 tensors, 295,424 values), conv3×3 layers their k-space net builds and its forward never calls
    (their module builds 7,579,094 parameters, 7,283,670 of them used). They may be absent; where present
    their shapes are checked.

    Returns an OrderedDict in our order of the given tensors (no copies). Raises ValueError naming the key
    for a key their network does not have, a key of theirs that is missing, or a tensor of another shape
    than the configuration's (expected and got), and TypeError for a value that is not a tensor or a
    `state_dict` that is not a mapping.
    """
    if not isinstance(complex_image, bool):
        raise TypeError(f"complex_image must be a bool, got {type(complex_image).__name__}")
    state_dict = authors_state_dict(state_dict, "state_dict")
    with torch.device("meta"):
        expected = {key: value.shape for key, value in MANet(complex_image=complex_image).state_dict().items()}
    names = OrderedDict((_authors_key(key), key) for key in expected)
    for key, value in state_dict.items():
        unused = AUTHORS_UNUSED.fullmatch(key)
        if key not in names and not unused:
            raise ValueError(f"unexpected key {key!r} in the authors' MANet state dict: not a parameter or buffer of their "
                             f"network (complex_image={complex_image})")
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] must be a tensor, got {type(value).__name__}")
        shape = (64,) if unused and unused.group(1) == "bias" else (64, 64, 3, 3) if unused else expected[names[key]]
        if value.shape != shape:
            raise ValueError(f"state_dict[{key!r}] has shape {tuple(value.shape)}, expected {tuple(shape)} "
                             f"(complex_image={complex_image})")
    missing = [key for key in names if key not in state_dict]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"the authors' MANet state dict lacks the key {missing[0]!r}{more} (our {names[missing[0]]!r})")
    return OrderedDict((ours, state_dict[theirs]) for theirs, ours in names.items())


_TRAINING = dict(
    loss=manet_loss,
    optimizer={"name": "adam", "lr": 1e-3},
    schedule={"name": "none"},
    epochs=50,
    batch_size=8,
    trainable=True,
)

register(ModelSpec(
    name="manet",
    build=build_manet,
    config={"channels": 64, "data_consistency": False, "convs": 4},
    data={"magnitude": True, "normalization": "volume_max", "noise": 0.1},
    description="MANet: k-space and magnitude-image Dense U-Net pairs, the reference guiding the target by attention",
    # 8 channels, with data consistency (the untrained network is then zero-filling: from the authors'
    # random output layers 2 epochs reached 23.3 dB / 0.37 SSIM), 2 epochs at 4x the paper's rate (1e-2
    # diverged; a third epoch fell to 21.8 dB on val): about 23 s an epoch on 2 Intel Xeon cores. On the builtin test
    # split, with the default noise: 28.24 dB / 0.596 against zero-filling's 24.88 / 0.524 on the same
    # noisy data (24.92 / 0.632 without noise: the measured noise that the DC keeps caps the SSIM).
    demo={"model_config": {"channels": 8, "data_consistency": True}, "epochs": 2, "lr": 4e-3},
    **_TRAINING,
))
register(ModelSpec(
    name="mario",
    build=build_mario,
    config={"channels": 64, "data_consistency": False, "convs": 4},
    data={"magnitude": False, "normalization": "volume_max", "noise": 0.0},
    description="MARIO: MANet with a complex (real, imaginary) image stage",
    # The budget of manet's: 24.95 dB / 0.633 SSIM on the builtin test split, zero-filling's 24.92 / 0.632
    # (its complex image stage learns the slices' smooth phases more slowly than manet's magnitudes).
    demo={"model_config": {"channels": 8, "data_consistency": True}, "epochs": 2, "lr": 4e-3},
    **_TRAINING,
))
