"""FSMNet (Chen, Xing, Chen and Xiong, "Accelerated Multi-Contrast MRI Reconstruction via
Frequency and Spatial Mutual Learning", MICCAI 2024; the authors' code qic999/FSMNet,
networks/mynet.py + common_freq.py).

The network (spec: shared/specs/models.md, FSMNet), `channels` = 64 at every scale, 3 downsamplings:

* Four encoder streams: target (the zero-filled image, `main`) and reference (the fully sampled other
  contrast, `aux`), each as a frequency stream of `FreqBlock`s and a spatial stream of `ResidualGroup`s.
  Each stream: head (conv3×3 + PReLU), then per level a DownSample followed by a block, a second block
  ("mo"), and at the bottom two more blocks (the neck).
* CMS-fusions (`CMSFusion`, 10): the reference stream into the target stream after the head and after
  each level's second block, in the frequency and in the spatial stream.
* FS-fusions (`FSFusion`, 14): the frequency stream into the spatial stream after each block of the
  spatial target stream (encoder levels, neck and decoder levels: 2 each).
* Two decoders (frequency and spatial) of the target streams, with additive skips; outputs
  `img_out = tail(spatial) + main` (the reconstruction) and `img_fre = tail_fre(frequency) + main`.
  No data consistency.

Size: 13,799,848 parameters at the paper's setting (the authors' code builds 14,053,528: the rest is a
second attention per FS-fusion that its forward never calls, left out here), about 159 GMACs at
240 × 240 (convolutions and matrix products; `tests/test_fsmnet.py` counts both). The fused path computes
151 of them: each DownSample's conv3×3 → unshuffle → conv1×1 (40 multiply-adds per pixel and channel
pair) runs as one 4×4 convolution of stride 2 (16), 7.4 GMACs fewer in its 12 DownSamples. 136.2 of
the 151 are 3×3 convolutions that the cpu backend computes by Winograd's F(4×4, 3×3) (`ops.conv3x3`), whose
products take a quarter of them (34.0) besides its transforms.

Fused ops: the frequency blocks run `ops.spectrum_to_polar`, `ops.polar_to_spectrum` and
`ops.frequency_epilogue`, the FS-fusions `ops.depthwise_channel_attention` (the attention with its
depthwise projections, which it recomputes in backward rather than keep), every fusion
`ops.gated_fusion`, the heads, tails, residual groups and up-samplings `ops.prelu`, the DownSamples
`ops.unshuffle_downsample` (the composed strided convolution), the 1×1 convolutions of the attentions,
the frequency blocks (before the FFT) and the up-samplings `ops.conv1x1` (matrix products on the planes),
the dense 3×3 convolutions `ops.conv3x3` (`nn.Conv3x3`; on the cpu backend Winograd's F(4×4, 3×3), which
takes 4× fewer multiply-adds than the direct convolution, for all but those of the heads and tails, whose
one input or output channel is left to torch's). Under `mcmri_fast.use_backend("reference")` the same
network runs on the pure-PyTorch references.

Training (the paper): L1(img_out) + L1(img_fre) + 0.01·(L1 of |rfft2| + L1 of angle(rfft2)) of img_fre
against the target; AdamW (lr 1e-4, weight decay 1e-4), batch 4, 100k iterations with the rate halved
every 20k. The registry states that per epoch: 50 epochs, halved every 10. Data: magnitude images,
instance-normalised (mean/std of the zero-filled input; the reference by its own), clamped to ±6.

The authors' checkpoints load through `from_authors_state_dict` (their parameter names onto ours).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import CMSFusion, ConvPReLU, DownSample, FreqBlock, FSFusion, ResidualGroup, UpSample
from ..reference.frequency import spectrum_to_polar
from . import ModelSpec, magnitude_images, register
from ._checkpoints import authors_state_dict

__all__ = ["FSMNet", "build_fsmnet", "from_authors_state_dict", "fsmnet_loss"]

LEVELS = 3  # downsamplings: H and W must be divisible by 2**LEVELS
FREQUENCY_LOSS_WEIGHT = 0.01


class _Encoder(nn.Module):
    """One encoder stream: head, LEVELS × (DownSample + block, block), neck (block, block). `block` makes a
    FreqBlock or a ResidualGroup. The stages are kept separate: the fusions sit between them."""

    def __init__(self, block, channels: int):
        super().__init__()
        self.head = ConvPReLU(1, channels)
        self.down = nn.ModuleList(nn.Sequential(DownSample(channels), block()) for _ in range(LEVELS))
        self.down_second = nn.ModuleList(block() for _ in range(LEVELS))
        self.neck = block()
        self.neck_second = block()

    def stages(self):
        """The (first block, second block) of each level and of the neck, in order."""
        return list(zip(list(self.down) + [self.neck], list(self.down_second) + [self.neck_second]))


class _Decoder(nn.Module):
    """LEVELS × (UpSample + block, block), then the tail (conv3×3 → 1 channel + PReLU)."""

    def __init__(self, block, channels: int):
        super().__init__()
        self.up = nn.ModuleList(nn.Sequential(UpSample(channels), block()) for _ in range(LEVELS))
        self.up_second = nn.ModuleList(block() for _ in range(LEVELS))
        self.tail = ConvPReLU(channels, 1)


class FSMNet(nn.Module):
    """FSMNet on a batch of the data pipeline (see the module docstring).

    forward(batch): batch["zero_filled"] (the target's zero-filled magnitude) and batch["reference"]
    (the reference contrast), real [B, 1, H, W], instance-normalised, H and W divisible by 8. Returns
    {"image": img_out, "frequency_image": img_fre}, both [B, 1, H, W] of the input's dtype; "image" is
    the reconstruction. `reconstruct(main, aux)` is the same on plain tensors and returns the pair.
    """

    def __init__(self, channels: int = 64, resblocks: int = 2, heads: int = 8):
        super().__init__()
        for name, value in (("channels", channels), ("resblocks", resblocks), ("heads", heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if channels % heads:
            raise ValueError(f"heads ({heads}) must divide channels ({channels})")

        def frequency_block():
            return FreqBlock(channels)

        def spatial_block():
            return ResidualGroup(channels, resblocks)

        self.reference_frequency = _Encoder(frequency_block, channels)
        self.reference_spatial = _Encoder(spatial_block, channels)
        self.target_frequency = _Encoder(frequency_block, channels)
        self.target_spatial = _Encoder(spatial_block, channels)
        self.frequency_decoder = _Decoder(frequency_block, channels)
        self.spatial_decoder = _Decoder(spatial_block, channels)
        # after the head and after the second block of each level and of the neck (LEVELS + 2 places)
        self.frequency_cms = nn.ModuleList(CMSFusion(channels) for _ in range(LEVELS + 2))
        self.spatial_cms = nn.ModuleList(CMSFusion(channels) for _ in range(LEVELS + 2))
        # after each block of the spatial target stream: 2 per encoder level, neck and decoder level
        self.fs_fusion = nn.ModuleList(FSFusion(channels, heads) for _ in range(2 * (2 * LEVELS + 1)))

    def forward(self, batch: dict) -> dict:
        main, aux = magnitude_images(batch, "FSMNet")
        image, frequency_image = self.reconstruct(main, aux)
        return {"image": image, "frequency_image": frequency_image}

    def reconstruct(self, main: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(img_out, img_fre) for main (the zero-filled target) and aux (the reference), [B, 1, H, W]."""
        if main.shape != aux.shape:
            raise ValueError(f"the zero-filled image {tuple(main.shape)} and the reference {tuple(aux.shape)} must have one shape")
        height, width = main.shape[-2:]
        if height % 2**LEVELS or width % 2**LEVELS:
            raise ValueError(f"FSMNet needs H and W divisible by {2**LEVELS}, got {height} x {width}")

        # Reference streams: the features fused into the target streams, per place.
        reference_frequency = self._reference_features(self.reference_frequency, aux)
        reference_spatial = self._reference_features(self.reference_spatial, aux)

        # Target frequency stream, with the reference fused in; `fused` collects, in FS-fusion order,
        # the frequency features that the spatial stream takes in.
        encoder, decoder = self.target_frequency, self.frequency_decoder
        x = self.frequency_cms[0](reference_frequency[0], encoder.head(main))
        skips, fused = [x], []
        for level, (first, second) in enumerate(encoder.stages()):
            x = first(x)
            fused.append(x)
            x = second(x)
            x_fused = self.frequency_cms[level + 1](reference_frequency[level + 1], x)
            # The authors' code hands the first level's CMS-fused output to its FS-fusion and the
            # unfused one at the other levels; the neck's second place takes the decoder's input.
            fused.append(x_fused if level == 0 else x)
            skips.append(x_fused)
            x = x_fused
        x = x + skips[LEVELS]
        fused[-1] = x
        for level in range(LEVELS):
            x = decoder.up[level](x)
            fused.append(x)
            x = decoder.up_second[level](x) + skips[LEVELS - 1 - level]
            fused.append(x)
        frequency_image = decoder.tail(x) + main

        # Target spatial stream: each block's output is fused with the frequency feature of its place
        # (spatial first), each level's with the reference; the decoder's skips are the encoder's
        # second-block outputs before their fusion, and the head's output.
        encoder, decoder, fs = self.target_spatial, self.spatial_decoder, iter(zip(self.fs_fusion, fused))

        def fuse(x: torch.Tensor) -> torch.Tensor:
            fusion, frequency = next(fs)
            return fusion(x, frequency)

        head = encoder.head(main)
        x = self.spatial_cms[0](reference_spatial[0], head)
        skips = [head]
        for level, (first, second) in enumerate(encoder.stages()):
            x = second(fuse(first(x)))
            if level == LEVELS:  # the neck: its skip is added before the fusion
                x = x + skips[LEVELS]
            else:
                skips.append(x)
            x = self.spatial_cms[level + 1](reference_spatial[level + 1], fuse(x))
        for level in range(LEVELS):
            x = decoder.up_second[level](fuse(decoder.up[level](x))) + skips[LEVELS - 1 - level]
            x = fuse(x)
        image = decoder.tail(x) + main
        return image, frequency_image

    @staticmethod
    def _reference_features(encoder: _Encoder, aux: torch.Tensor) -> list[torch.Tensor]:
        """The reference stream's head output and each level's (and the neck's) second-block output."""
        x = encoder.head(aux)
        features = [x]
        for first, second in encoder.stages():
            x = second(first(x))
            features.append(x)
        return features


def fsmnet_loss(output: dict, batch: dict) -> torch.Tensor:
    """The paper's loss: L1(img_out) + L1(img_fre) + 0.01·(L1 of |rfft2| + L1 of angle(rfft2)) of img_fre,
    all against batch["target"] (0-d float32)."""
    target = batch["target"].float()
    image, frequency_image = output["image"].float(), output["frequency_image"].float()
    # (|z|, angle z) by the reference's formula, whose backward torch.compile can trace
    amplitude, phase = spectrum_to_polar(torch.fft.rfft2(frequency_image))
    target_amplitude, target_phase = spectrum_to_polar(torch.fft.rfft2(target))
    frequency_term = F.l1_loss(amplitude, target_amplitude) + F.l1_loss(phase, target_phase)
    return F.l1_loss(image, target) + F.l1_loss(frequency_image, target) + FREQUENCY_LOSS_WEIGHT * frequency_term


# The authors' names of the pieces of each block (theirs → ours), see from_authors_state_dict.
_AUTHORS_FREQUENCY_BLOCK = (
    ("fpre", "pre"), ("amp_fuse.0", "amplitude.0"), ("amp_fuse.2", "amplitude.2"),
    ("pha_fuse.0", "phase.0"), ("pha_fuse.2", "phase.2"), ("post", "post"),
)
_AUTHORS_ATTENTION = (
    ("temperature", "temperature"), ("q.weight", "query.weight"), ("q_dwconv.weight", "query_dw.weight"),
    ("kv.weight", "key_value.weight"), ("kv_dwconv.weight", "key_value_dw.weight"),
    ("project_out.weight", "project_out.weight"),
)
_AUTHORS_GATE = (("fuse.0", "gate.0"), ("fuse.1", "gate.1"))


def _authors_key_map(resblocks: int) -> dict[str, tuple[str, bool]]:
    """Each key of the authors' state dict → (our key, kept). A dropped key (kept False) names the key
    of ours whose shape it has."""
    keys: dict[str, tuple[str, bool]] = {}

    def weight_and_bias(theirs: str, ours: str) -> None:
        for name in ("weight", "bias"):
            keys[f"{theirs}.{name}"] = (f"{ours}.{name}", True)

    def conv_prelu(theirs: str, ours: str) -> None:  # their ConvBNReLU2D(act="PReLU"), no bias, no norm
        keys[f"{theirs}.layers.weight"] = (f"{ours}.0.weight", True)
        keys[f"{theirs}.act.weight"] = (f"{ours}.1.weight", True)

    def frequency_block(theirs: str, ours: str) -> None:
        for their_name, our_name in _AUTHORS_FREQUENCY_BLOCK:
            weight_and_bias(f"{theirs}.{their_name}", f"{ours}.{our_name}")

    def spatial_block(theirs: str, ours: str) -> None:
        for k in range(resblocks):
            resblock = f"{theirs}.body.{k}.layers"  # ResBlock: conv3×3 + ReLU, conv3×3, no biases
            keys[f"{resblock}.0.layers.weight"] = (f"{ours}.body.{k}.conv1.weight", True)
            keys[f"{resblock}.1.layers.weight"] = (f"{ours}.body.{k}.conv2.weight", True)
        conv_prelu(f"{theirs}.body.{resblocks}", f"{ours}.body.{resblocks}")
        keys[f"{theirs}.re_scale.scale"] = (f"{ours}.scale", True)

    # Their attribute names: stage + branch ("_fre" or "") + "_mo" for a level's second block + "_T1" for
    # the reference; only the target (their T2) streams have decoders.
    for branch, block, domain in (("_fre", frequency_block, "frequency"), ("", spatial_block, "spatial")):
        for modality, stream in (("", "target"), ("_T1", "reference")):
            ours = f"{stream}_{domain}"
            conv_prelu(f"head{branch}{modality}.0", f"{ours}.head")
            for level in range(LEVELS):
                theirs = f"down{level + 1}{branch}{modality}"
                keys[f"{theirs}.0.layers.0.layers.weight"] = (f"{ours}.down.{level}.0.0.weight", True)
                keys[f"{theirs}.0.layers.2.layers.weight"] = (f"{ours}.down.{level}.0.2.weight", True)
                block(f"{theirs}.1", f"{ours}.down.{level}.1")
                block(f"down{level + 1}{branch}_mo{modality}.0", f"{ours}.down_second.{level}")
            block(f"neck{branch}{modality}.0", f"{ours}.neck")
            block(f"neck{branch}_mo{modality}.0", f"{ours}.neck_second")
        ours = f"{domain}_decoder"
        for level in range(LEVELS):
            theirs = f"up{level + 1}{branch}"
            weight_and_bias(f"{theirs}.0.0", f"{ours}.up.{level}.0.0")
            keys[f"{theirs}.0.2.weight"] = (f"{ours}.up.{level}.0.2.weight", True)
            block(f"{theirs}.1", f"{ours}.up.{level}.1")
            block(f"up{level + 1}{branch}_mo.0", f"{ours}.up_second.{level}")
        conv_prelu(f"tail{branch}.0", f"{ours}.tail")

    for index in range(2 * (2 * LEVELS + 1)):
        theirs, ours = f"conv_fuse.{index}", f"fs_fusion.{index}"
        weight_and_bias(f"{theirs}.fre", f"{ours}.first")
        weight_and_bias(f"{theirs}.spa", f"{ours}.second")
        for their_name, our_name in _AUTHORS_ATTENTION:
            keys[f"{theirs}.fre_att.{their_name}"] = (f"{ours}.attention.{our_name}", True)
            keys[f"{theirs}.spa_att.{their_name}"] = (f"{ours}.attention.{our_name}", False)
        for their_name, our_name in _AUTHORS_GATE:
            weight_and_bias(f"{theirs}.{their_name}", f"{ours}.{our_name}")
    for their_list, our_list in (("conv_fuse_fre", "frequency_cms"), ("conv_fuse_spa", "spatial_cms")):
        for index in range(LEVELS + 2):
            theirs, ours = f"{their_list}.{index}", f"{our_list}.{index}"
            weight_and_bias(f"{theirs}.t1", f"{ours}.reference")
            weight_and_bias(f"{theirs}.t2", f"{ours}.target")
            for their_name, our_name in _AUTHORS_GATE:
                weight_and_bias(f"{theirs}.{their_name}", f"{ours}.{our_name}")
    return keys


def _authors_shape(our_key: str, our_shape: torch.Size) -> tuple[int, ...]:
    # their attention temperature is [heads, 1, 1], ours [heads]
    return (*our_shape, 1, 1) if our_key.endswith("attention.temperature") else tuple(our_shape)


def from_authors_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, channels: int = 64, resblocks: int = 2, heads: int = 8
) -> OrderedDict[str, torch.Tensor]:
    """Our state dict from one of the authors' FSMNet: `FSMNet(channels, resblocks, heads)
    .load_state_dict(from_authors_state_dict(torch.load(path)))` (strict) loads their checkpoint.

    Their network: `TwoBranch` of qic999/FSMNet, networks/mynet.py with networks/common_freq.py (the
    code at commit 153f5af). `state_dict`: its `state_dict()`, or the checkpoint file their training
    scripts save (`{"network": state_dict}`); the `module.` prefix of a DataParallel network (their
    scripts wrap it when given several GPUs) is removed when every key has it.

    Configuration: `channels` is their `args.num_features`, `resblocks` their `args.base_num_every_group`.
    The defaults (the registered "fsmnet" model, the paper's network) are their option.py defaults
    (num_features 64, base_num_every_group 2, act "PReLU", num_channels 1: one output channel); their
    Attention fixes 8 heads whatever the arguments, so another `heads` fits only a modified copy. A
    network of theirs trained with another `--act` has no counterpart here (our heads, tails and
    residual groups end in PReLU): its checkpoint is refused (the PReLU weights `*.act.weight` missing).

    Names, theirs → ours (their T2 is our target, T1 our reference; level i = 1..3 is our index i - 1;
    `{f}` is "_fre" in the frequency streams, "" in the spatial ones; `{r}` "_T1" in the reference ones):

    * `head{f}{r}.0` → `{target,reference}_{frequency,spatial}.head` and `tail{f}.0` →
      `{frequency,spatial}_decoder.tail` (their ConvBNReLU2D: `layers.weight` → `0.weight`, the PReLU
      `act.weight` → `1.weight`);
    * `down{i}{f}{r}.0` (DownSample): `layers.0.layers.weight` → `down.{i-1}.0.0.weight` (conv3×3),
      `layers.2.layers.weight` → `down.{i-1}.0.2.weight` (conv1×1 after the unshuffle);
    * the blocks: `down{i}{f}{r}.1` → `down.{i-1}.1`, `down{i}{f}_mo{r}.0` → `down_second.{i-1}`,
      `neck{f}{r}.0` → `neck`, `neck{f}_mo{r}.0` → `neck_second`; in the decoders `up{i}{f}.1` →
      `up.{i-1}.1`, `up{i}{f}_mo.0` → `up_second.{i-1}`, and the UpSampler `up{i}{f}.0` (0: conv1×1,
      2: PReLU) → `up.{i-1}.0` under the same inner names;
    * FreBlock9 → FreqBlock: `fpre`, `amp_fuse.{0,2}`, `pha_fuse.{0,2}`, `post` → `pre`,
      `amplitude.{0,2}`, `phase.{0,2}`, `post`;
    * ResidualGroup: `body.{k}.layers.{0,1}.layers.weight` → `body.{k}.conv{1,2}.weight` (k < resblocks),
      `body.{resblocks}.layers.weight` / `.act.weight` → `body.{resblocks}.0.weight` / `.1.weight`,
      `re_scale.scale` → `scale`;
    * FuseBlock7 `conv_fuse.{j}` → FSFusion `fs_fusion.{j}` (j = 0..13, the same order): `fre` → `first`,
      `spa` → `second`, `fre_att` → `attention` (`q`, `q_dwconv`, `kv`, `kv_dwconv`, `project_out`,
      `temperature` → `query`, `query_dw`, `key_value`, `key_value_dw`, `project_out`, `temperature`),
      `fuse.{0,1}` → `gate.{0,1}`. Their forward(spa, fre) is called with the frequency feature first,
      so the conv named `fre` runs on the spatial feature, as our `first` does; in both it feeds the
      first attention's queries and the first half of the gate, so nothing else is swapped;
    * Modality_FuseBlock6 `conv_fuse_fre.{j}` / `conv_fuse_spa.{j}` → `frequency_cms.{j}` /
      `spatial_cms.{j}` (j = 0..4): `t1` → `reference`, `t2` → `target`, `fuse.{0,1}` → `gate.{0,1}`.

    Transformations: the attention temperatures, [heads, 1, 1] there, are reshaped to [heads]. Nothing
    else: both keep q and kv (keys, then values) as separate 1×1 convolutions, no weight is transposed,
    split or merged, and both pixel-unshuffles order the channels c·4 + 2·row + column. Our fused forms
    (a DownSample as one strided 4×4 convolution, the gate's first convolution split in two, FreBlock's
    +1e-8 before the FFT added to `pre`'s bias) are computed from these weights at run time.

    Dropped: `conv_fuse.{0..13}.spa_att.*` (temperature, q, q_dwconv, kv, kv_dwconv, project_out: 84
    tensors, 253,680 values at 64 channels), the second attention FuseBlock7 builds and its forward
    never calls (it calls `fre_att` twice). They may be absent; where present their shapes are checked.
    Their network has no buffers, and every parameter of ours gets a value.

    Returns an OrderedDict in our order of the given tensors (no copies; the temperatures as views).
    Raises ValueError naming the key for a key their network does not have, a key of theirs that is
    missing, or a tensor of another shape than the configuration's (expected and got), and TypeError
    for a value that is not a tensor or a `state_dict` that is not a mapping.
    """
    state_dict = authors_state_dict(state_dict, "network")
    configuration = f"channels={channels}, resblocks={resblocks}, heads={heads}"
    with torch.device("meta"):
        our_shapes = {key: value.shape for key, value in FSMNet(channels, resblocks, heads).state_dict().items()}
    key_map = _authors_key_map(resblocks)

    unexpected = [key for key in state_dict if key not in key_map]
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise ValueError(
            f"unexpected key {unexpected[0]!r}{more} in the authors' FSMNet state dict: not a parameter of "
            f"their network at {configuration} (a checkpoint of another network or configuration?)"
        )
    missing = [key for key, (_, kept) in key_map.items() if kept and key not in state_dict]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"missing key {missing[0]!r}{more} in the authors' FSMNet state dict ({configuration})")

    ours: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        our_key, kept = key_map[key]
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"the authors' FSMNet state dict: {key!r} must be a tensor, got {type(value).__name__}")
        expected = _authors_shape(our_key, our_shapes[our_key])
        if tuple(value.shape) != expected:
            raise ValueError(
                f"the authors' FSMNet state dict: {key!r} has shape {tuple(value.shape)}, expected {expected} "
                f"(for {configuration})"
            )
        if kept:
            our_shape = our_shapes[our_key]
            ours[our_key] = value if value.shape == our_shape else value.reshape(our_shape)
    return OrderedDict((key, ours[key]) for key in our_shapes)


def build_fsmnet(channels: int = 64, resblocks: int = 2, heads: int = 8) -> FSMNet:
    """The "fsmnet" model (the paper's setting by default)."""
    return FSMNet(channels, resblocks, heads)


register(
    ModelSpec(
        name="fsmnet",
        build=build_fsmnet,
        config={"channels": 64, "resblocks": 2, "heads": 8},
        loss=fsmnet_loss,
        data={"magnitude": True, "normalization": "instance"},
        optimizer={"name": "adamw", "lr": 1e-4, "weight_decay": 1e-4},
        schedule={"name": "step", "step_size": 10, "gamma": 0.5},
        epochs=50,
        batch_size=4,
        trainable=True,
        description="FSMNet: frequency and spatial streams of target and reference, fused by gates and channel attention",
        # A quarter of the width (4 channels per head), 3 epochs at 10x the paper's rate: about 5 s a step
        # of 4 slices at 256 x 256 on 2 cores, so FSMNet's share of the demo stays near 4.5 minutes. At 2
        # epochs (while DUN-SA's U-Nets were unfused) its test SSIM was below zero-filling's (0.601 < 0.632).
        demo={"model_config": {"channels": 16, "heads": 4}, "epochs": 3, "lr": 1e-3},
    )
)
