"""Tests of mcmri_fast.workflows.evaluate: evaluation of "zero_filled" (no checkpoint) and of a trained
checkpoint, the files it writes (metrics.csv per volume, summary.json, PNG panels), its metrics against
a direct computation with mcmri_fast.metrics, the PNG writer against Pillow's decoder, fastMRI-style
HDF5 reconstructions read back with h5py, refused checkpoints (another model's, corrupt), and the
alignment panels of a model that estimates displacement fields (a tiny test model, registered for the
test only)."""
from __future__ import annotations

import csv
import json
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mcmri_fast import metrics, models
from mcmri_fast.data import builtin
from mcmri_fast.data.datasets import BuiltinDataset, PairedH5Dataset
from mcmri_fast.data.formats import write_paired_h5
from mcmri_fast.data.masks import mask_func
from mcmri_fast.data.transforms import MaskSampler
from mcmri_fast.models import build_model
from mcmri_fast.workflows.common import CheckpointError, load_checkpoint
from mcmri_fast.workflows.evaluate import (
    alignment_panel_image,
    alignment_panel_layout,
    evaluate,
    panel_image,
    panel_layout,
    reconstruct,
    write_png,
)
from mcmri_fast.workflows.train import TrainConfig, train

MASK_KWARGS = {"center_fractions": [0.08], "accelerations": [4]}
METRICS = ("nmse", "psnr", "ssim", "mae")
SUMMARY_KEYS = {"model", "checkpoint", "data", "device", "volumes", "slices", "metrics", "time_per_slice_ms", "metrics_csv", "panels",
                "alignment_panels"}


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _volume_masks() -> MaskSampler:
    return MaskSampler(mask_func("random", **MASK_KWARGS), mode="volume")


def _stack_volumes(dataset, key: str, transform=lambda item, x: x) -> dict[str, torch.Tensor]:
    """{file: [S, H, W]} of dataset items' `key` images in slice order."""
    volumes: dict[str, dict[int, torch.Tensor]] = {}
    for i in range(len(dataset)):
        item = dataset[i]
        volumes.setdefault(item["file"], {})[item["slice"]] = transform(item, item[key][0])
    return {f: torch.stack([v[s] for s in sorted(v)]) for f, v in sorted(volumes.items())}


def _direct(gt: torch.Tensor, pred: torch.Tensor) -> dict[str, float]:
    return {"nmse": float(metrics.nmse(gt, pred)), "psnr": float(metrics.psnr(gt, pred)),
            "ssim": float(metrics.ssim(gt, pred)), "mae": float(metrics.mae(gt, pred))}


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _read_png(path: Path) -> np.ndarray:
    """The pixels of a PNG that write_png wrote (RGB, one IDAT chunk, filter 0), decoded by hand."""
    width, height = _png_size(path)
    data = path.read_bytes()
    length = struct.unpack(">I", data[33:37])[0]
    assert data[25] == 2 and data[37:41] == b"IDAT"  # colour type RGB
    rows = np.frombuffer(zlib.decompress(data[41 : 41 + length]), np.uint8).reshape(height, -1)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, 3)


@pytest.fixture(scope="module")
def paired_data(tmp_path_factory) -> Path:
    """Three project-format volumes (3, 4, 2 slices of 64 × 64 centre crops of the builtin test split)."""
    folder = tmp_path_factory.mktemp("paired")
    images = builtin.load_builtin("test", ("t2", "t1"))
    start = 0
    for v, count in enumerate((3, 4, 2)):
        write_paired_h5(folder / f"case{v}.h5", {c: images[c][start : start + count, 96:160, 96:160] for c in ("t2", "t1")},
                        source="builtin")
        start += count
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, paired_data) -> Path:
    """A tiny U-Net trained for a few steps on the builtin training split, cropped to 64 × 64."""
    run_dir = tmp_path_factory.mktemp("run") / "unet"
    torch.set_num_threads(1)
    result = train(TrainConfig(model="unet", model_config={"chans": 4, "num_pool_layers": 2}, crop=64, epochs=1, batch_size=4,
                               max_steps_per_epoch=6, lr=3e-3, val_data=None, run_dir=str(run_dir)), progress=False)
    return Path(result["last_checkpoint"])


# ---------------------------------------------------------------------------------------------------


def test_zero_filled_on_the_builtin_test_split(tmp_path):
    summary = evaluate("zero_filled", tmp_path, progress=False)
    assert set(summary) == SUMMARY_KEYS
    assert summary["model"] == "zero_filled" and summary["checkpoint"] is None
    assert summary["data"]["dataset"] == "builtin" and summary["data"]["data"] == "test"
    assert (summary["volumes"], summary["slices"]) == (1, 16) and summary["time_per_slice_ms"] >= 0
    assert json.loads((tmp_path / "summary.json").read_text()) == summary

    dataset = BuiltinDataset("test", _volume_masks(), normalization=None)
    gt = _stack_volumes(dataset, "target")["builtin-test"]
    zero_filled = _stack_volumes(dataset, "zero_filled")["builtin-test"]
    direct = _direct(gt, zero_filled)
    rows = _read_csv(tmp_path / "metrics.csv")
    assert [(r["file"], r["slices"]) for r in rows] == [("builtin-test", "16")]
    for name in METRICS:
        assert float(rows[0][name]) == pytest.approx(direct[name], rel=1e-7), name
        assert summary["metrics"][name] == {"mean": pytest.approx(direct[name], rel=1e-7), "std": 0.0}

    assert summary["panels"] == ["builtin-test_s008.png"]  # the middle slice by default
    assert summary["alignment_panels"] == [] and not list((tmp_path / "panels").glob("*_alignment.png"))  # no fields
    # five 256-pixel images 2 apart, the colour bar and its labels; titles above, three lines of text below
    assert _png_size(tmp_path / "panels" / "builtin-test_s008.png") == (1358, 28 + 256 + 6 + 3 * 22)


def test_checkpoint_on_paired_volumes(tmp_path, checkpoint, paired_data):
    summary = evaluate(checkpoint, tmp_path, dataset="paired_h5", data=paired_data, target="t2", reference="t1",
                       slices_to_plot=(0, -1, 5), batch_size=3, progress=False)
    assert summary["model"] == "unet" and summary["checkpoint"] == str(checkpoint)
    assert summary["data"]["crop"] == 64 and summary["data"]["normalization"] == "instance"  # from the checkpoint
    assert (summary["volumes"], summary["slices"]) == (3, 9)

    # direct: the checkpoint's model slice by slice, de-normalised, against unnormalised targets
    state = load_checkpoint(checkpoint)
    model = build_model("unet", **state["model_config"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    masks = _volume_masks()
    inputs = PairedH5Dataset(paired_data, masks, target="t2", reference="t1", normalization="instance")
    with torch.no_grad():
        predictions = _stack_volumes(inputs, "zero_filled", lambda item, x: model({"zero_filled": x[None, None]})[0, 0]
                                     * item["scale"] + item["offset"])
    targets = _stack_volumes(PairedH5Dataset(paired_data, masks, target="t2", reference="t1", normalization=None), "target")
    direct = {f: _direct(targets[f], predictions[f]) for f in targets}

    rows = _read_csv(tmp_path / "metrics.csv")
    assert [(r["file"], int(r["slices"])) for r in rows] == [("case0.h5", 3), ("case1.h5", 4), ("case2.h5", 2)]
    for row in rows:
        for name in METRICS:
            assert float(row[name]) == pytest.approx(direct[row["file"]][name], rel=1e-5), (row["file"], name)
    for name in METRICS:
        values = [direct[f][name] for f in sorted(direct)]
        assert summary["metrics"][name]["mean"] == pytest.approx(np.mean(values), rel=1e-5)
        assert summary["metrics"][name]["std"] == pytest.approx(np.std(values), rel=1e-4, abs=1e-12)

    # slices 0 and -1 of every volume; no volume has 6 slices
    expected = ["case0_s000.png", "case0_s002.png", "case1_s000.png", "case1_s003.png", "case2_s000.png", "case2_s001.png"]
    assert summary["panels"] == expected and summary["alignment_panels"] == []
    assert sorted(p.name for p in (tmp_path / "panels").iterdir()) == expected
    layout = panel_layout((64, 64), ("reference (t1)", "zero-filled", "reconstruction", "target (t2)", "|error|"))
    height = layout["top"] + 64 + 3 + 3 * 11  # text at scale 1: lines of 8 pixels, 3 apart
    assert all(_png_size(tmp_path / "panels" / name) == (layout["width"], height) for name in expected)


def test_reconstruct_round_trips_through_h5py(tmp_path, checkpoint, paired_data):
    files = reconstruct(checkpoint, tmp_path / "recon", dataset="paired_h5", data=paired_data, target="t2", reference="t1",
                        batch_size=2, progress=False)
    assert [f.name for f in files] == ["case0.h5", "case1.h5", "case2.h5"]
    assert sorted(p.name for p in (tmp_path / "recon").iterdir()) == ["case0.h5", "case1.h5", "case2.h5"]  # no temp files

    state = load_checkpoint(checkpoint)
    model = build_model("unet", **state["model_config"])
    model.load_state_dict(state["state_dict"])
    model.eval()
    inputs = PairedH5Dataset(paired_data, _volume_masks(), target="t2", reference="t1", normalization="instance")
    with torch.no_grad():
        expected = _stack_volumes(inputs, "zero_filled", lambda item, x: model({"zero_filled": x[None, None]})[0, 0]
                                  * item["scale"] + item["offset"])
    for path in files:
        with h5py.File(path, "r") as f:
            reconstruction = f["reconstruction"]
            assert reconstruction.dtype == np.float32 and reconstruction.shape == tuple(expected[path.name].shape)
            np.testing.assert_allclose(reconstruction[()], expected[path.name].numpy(), rtol=1e-5, atol=1e-6)
            assert f.attrs["model"] == "unet" and f.attrs["checkpoint"] == str(checkpoint)
            assert 3.0 < f.attrs["acceleration"] < 6.0

    with pytest.raises(ValueError, match="one file.*more than one volume"):
        reconstruct(checkpoint, tmp_path / "one.h5", dataset="paired_h5", data=paired_data, target="t2", reference="t1",
                    progress=False)
    single = reconstruct("zero_filled", tmp_path / "zf.h5", crop=64, progress=False)
    with h5py.File(single[0], "r") as f:
        assert f["reconstruction"].shape == (16, 64, 64) and f.attrs["checkpoint"] == ""


def test_bad_models_and_checkpoints_refused(tmp_path, checkpoint):
    with pytest.raises(CheckpointError, match=f"{checkpoint.name}.*of model 'unet', not of 'unet_dc'"):
        evaluate("unet_dc", tmp_path, checkpoint=checkpoint, crop=64, progress=False)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        evaluate(corrupt, tmp_path / "out", progress=False)
    with pytest.raises(CheckpointError, match="missing.pt"):
        reconstruct(tmp_path / "missing.pt", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="'unet' is trained: pass a checkpoint"):
        evaluate("unet", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        evaluate("resnet", tmp_path / "out", progress=False)
    with pytest.raises(ValueError, match="data: .*does not exist"):
        evaluate("zero_filled", tmp_path / "out", dataset="paired_h5", data=tmp_path / "absent", target="t2", reference="t1",
                 progress=False)


# ---------------------------------------------------------------------------------------------------
# PNG


def test_write_png_decodes_to_the_same_pixels(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (13, 21), dtype=np.uint8)
    rgb = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    for name, image in (("gray.png", gray), ("rgb.png", rgb)):
        path = write_png(tmp_path / name, image)
        assert _png_size(path) == (image.shape[1], image.shape[0])
        # decode by hand: zlib-compressed rows, each after a filter byte (0: none)
        data = path.read_bytes()
        length = struct.unpack(">I", data[33:37])[0]
        assert data[37:41] == b"IDAT" and data.endswith(b"IEND\xaeB`\x82")
        rows = np.frombuffer(zlib.decompress(data[41 : 41 + length]), np.uint8).reshape(image.shape[0], -1)
        assert (rows[:, 0] == 0).all()
        np.testing.assert_array_equal(rows[:, 1:].reshape(image.shape), image)
        pil = pytest.importorskip("PIL.Image")
        with pil.open(path) as decoded:
            np.testing.assert_array_equal(np.asarray(decoded), image)
    with pytest.raises(ValueError, match="uint8"):
        write_png(tmp_path / "bad.png", gray.astype(np.float32))


def _panel_tiles(panel: np.ndarray, layout: dict) -> list[np.ndarray]:
    top, (height, width) = layout["top"], layout["image"]
    return [panel[top : top + height, left : left + width] for left in layout["lefts"]]


def _inked(region: np.ndarray) -> bool:
    """Whether a region of a panel holds text (black pixels)."""
    return bool((region == 0).all(axis=-1).any())


def test_panel_layout_and_display_ranges():
    target = torch.linspace(0, 2, 256 * 256).reshape(256, 256)
    reconstruction = target * 0.7
    panel = panel_image(reference=-target, zero_filled=target * 2, reconstruction=reconstruction, target=target)
    layout = panel_layout((256, 256))
    assert panel.dtype == np.uint8 and panel.shape[1:] == (layout["width"], 3) and layout["scale"] == 2
    assert layout["lefts"] == [0, 258, 516, 774, 1032]  # 256-pixel columns 2 pixels apart: the titles fit
    tiles = _panel_tiles(panel, layout)
    assert (panel[layout["top"] :, 256:258] == 255).all()  # gaps
    gray = [tile[..., 0] for tile in tiles[:4]]
    for tile in tiles[:4]:
        assert (tile == tile[..., :1]).all()  # gray: R = G = B
    np.testing.assert_array_equal(gray[3], np.round(target.numpy() / 2 * 255).astype(np.uint8))
    np.testing.assert_array_equal(gray[1], np.round(np.clip(target.numpy(), 0, 1) * 255).astype(np.uint8))  # clipped at target max
    np.testing.assert_array_equal(gray[0], np.round((2 - target.numpy()) / 2 * 255).astype(np.uint8))  # own range
    np.testing.assert_array_equal(gray[2], np.round(reconstruction.double().numpy() / 2 * 255).astype(np.uint8))
    # |error| = 0.3·target: 0 at the first pixel (the scale's bottom colour), the top colour from 20% of the
    # target max (0.4) on, i.e. target >= 4/3; the colours get brighter with the error in between
    error = tiles[4].astype(np.int64)
    assert tuple(error[0, 0]) == (0, 0, 4) and tuple(error[-1, -1]) == (252, 255, 164)
    brightness = error.sum(axis=-1).reshape(-1)
    assert (np.diff(brightness) >= -1).all() and brightness[0] < brightness[len(brightness) // 2] < brightness[-1]


def test_panel_has_titles_a_colour_bar_and_a_caption(tmp_path):
    target = builtin.load_builtin("test", ("t2",))["t2"][8].abs()
    reference = builtin.load_builtin("test", ("t1",))["t1"][8].abs()
    reconstruction = target + 0.05 * target.max() * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    titles = ("reference (t1)", "zero-filled", "reconstruction", "target (t2)", "|error|")
    panel = panel_image(reference, target * 0.8, reconstruction, target, titles=titles, caption="unet: builtin-test, slice 58")
    layout = panel_layout((256, 256), titles)
    top, scale, bar = layout["top"], layout["scale"], layout["bar"]
    # titles: text above each image, centred in its column, and different titles draw differently
    for first, width in layout["columns"]:
        band = panel[:top, first : first + width]
        assert _inked(band) and not _inked(band[:, :40]) and not _inked(band[:, -40:])
    other = panel_image(reference, target * 0.8, reconstruction, target, titles=titles[:4] + ("error",), caption="unet: builtin-test, slice 58")
    differs = (other != panel).any(axis=-1)
    assert differs[:top, bar - 2 * 3 * scale - 256 :].any() and not differs[:top, : bar - 256].any() and not differs[top:].any()
    # the colour bar: the error scale from its top colour down to the bottom one, ticks and labels beside it
    strip = panel[top : top + 256, bar : bar + 6 * scale].astype(np.int64)
    assert (strip == strip[:, :1]).all()  # one colour per row
    assert tuple(strip[0, 0]) == (252, 255, 164) and tuple(strip[-1, 0]) == (0, 0, 4)
    assert (np.diff(strip[:, 0].sum(axis=-1)) <= 1).all()
    labels = panel[top : top + 256, bar + 6 * scale :]
    assert _inked(labels[:20]) and _inked(labels[118:138]) and _inked(labels[-20:]) and not _inked(labels[40:100])
    # the lines below the images: the caption first, then the display ranges; no caption, one line less
    below = panel[top + 256 :]
    assert _inked(below) and panel.shape[0] == top + 256 + 3 * scale + 3 * (8 * scale + 3 * scale)
    uncaptioned = panel_image(reference, target * 0.8, reconstruction, target, titles=titles)
    assert uncaptioned.shape[0] == panel.shape[0] - (8 + 3) * scale
    np.testing.assert_array_equal(uncaptioned[: top + 256], panel[: top + 256])
    # a PNG of it decodes to the same pixels
    pil = pytest.importorskip("PIL.Image")
    with pil.open(write_png(tmp_path / "panel.png", panel)) as decoded:
        assert decoded.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(decoded), panel)


def test_panel_font_has_a_distinct_glyph_per_character():
    from mcmri_fast.workflows.evaluate import _GLYPH_MASKS, _text_mask

    shapes = {mask.shape for mask in _GLYPH_MASKS.values()}
    assert shapes == {(8, 5)}
    drawn = {mask.tobytes() for mask in _GLYPH_MASKS.values()}
    assert len(drawn) == len(_GLYPH_MASKS)  # no two characters look alike
    assert set("0123456789abcdefghijklmnopqrstuvwxyz%|().,:;-+=") <= set(_GLYPH_MASKS)
    assert _text_mask("T2", 1).shape == (8, 11)
    np.testing.assert_array_equal(_text_mask("T2", 2), _text_mask("t2", 2))  # drawn lowercased
    np.testing.assert_array_equal(_text_mask("é", 1), _GLYPH_MASKS["?"])


# ---------------------------------------------------------------------------------------------------
# Alignment panels (models that estimate displacement fields)


class _Aligner(torch.nn.Module):
    """A model that "estimates displacement fields" (tests): the zero-filled image as its reconstruction,
    the reference shifted by one pixel along x as the aligned reference, and a constant field of
    (slice + 1, 2) pixels; with fields=False a dict output with the reconstruction only."""

    def __init__(self, fields: bool = True):
        super().__init__()
        self.fields = fields

    def forward(self, batch: dict) -> dict:
        if not self.fields:
            return {"image": batch["zero_filled"]}
        reference = batch["reference"]
        return {"image": batch["zero_filled"], "aligned": torch.roll(reference, 1, dims=-1),
                "flow": _constant_flow(batch["slice"], tuple(reference.shape[-2:])).to(reference.device)}


def _constant_flow(slices: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, 2, H, W]: x displacement slice + 1, y displacement 2, everywhere."""
    values = torch.stack([torch.as_tensor(slices).float() + 1, torch.full((len(slices),), 2.0)], dim=1)
    return values[:, :, None, None].expand(-1, -1, *size).clone()


@pytest.fixture
def aligner_models(monkeypatch) -> tuple[str, str]:
    """The names of two untrained test models registered for one test: "test_aligner" (with fields) and
    "test_dict_output" (a dict output without them); the registry is restored afterwards."""
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))
    names = ("test_aligner", "test_dict_output")
    for name, fields in zip(names, (True, False)):
        models.register(models.ModelSpec(
            name=name, build=lambda fields=fields: _Aligner(fields), config={}, loss="l1",
            data={"magnitude": True, "normalization": None}, optimizer={"name": "adam", "lr": 1e-3},
            schedule={"name": "none"}, epochs=0, batch_size=1, trainable=False, description="a test model"))
    return names


ALIGNMENT_TITLES = ("reference (t1)", "aligned (t1)", "|flow| (px)")


def test_alignment_panels_of_a_model_with_displacement_fields(tmp_path, aligner_models, paired_data):
    aligner, dict_output = aligner_models
    options = dict(dataset="paired_h5", data=paired_data, target="t2", reference="t1", slices_to_plot=(0, -1),
                   batch_size=3, progress=False)  # batches of 3 span the volumes of 3, 4 and 2 slices
    summary = evaluate(aligner, tmp_path / "aligner", **options)
    expected = ["case0_s000", "case0_s002", "case1_s000", "case1_s003", "case2_s000", "case2_s001"]
    assert summary["panels"] == [f"{stem}.png" for stem in expected]
    assert summary["alignment_panels"] == [f"{stem}_alignment.png" for stem in expected]
    panels_dir = tmp_path / "aligner" / "panels"
    assert sorted(p.name for p in panels_dir.iterdir()) == sorted(summary["panels"] + summary["alignment_panels"])
    assert json.loads((tmp_path / "aligner" / "summary.json").read_text())["alignment_panels"] == summary["alignment_panels"]

    # each is the panel of its own slice: the dataset's reference, shifted, and the slice's field
    layout = alignment_panel_layout((64, 64), ALIGNMENT_TITLES)
    height = layout["top"] + 64 + 3 + 3 * 11  # text at scale 1: the caption and two lines of ranges
    references = _stack_volumes(PairedH5Dataset(paired_data, _volume_masks(), target="t2", reference="t1",
                                                normalization=None), "reference")
    for stem in expected:
        volume, index = stem.split("_s")
        reference = references[f"{volume}.h5"][int(index)]
        flow = _constant_flow(torch.tensor([int(index)]), (64, 64))[0]
        direct = alignment_panel_image(reference, torch.roll(reference, 1, dims=-1), flow, titles=ALIGNMENT_TITLES,
                                       caption=f"{aligner}: {volume}, slice {int(index)}")
        path = panels_dir / f"{stem}_alignment.png"
        assert _png_size(path) == (layout["width"], height)
        np.testing.assert_array_equal(_read_png(path), direct)
    panel = _read_png(panels_dir / "case1_s003_alignment.png")
    before, after, magnitude = _panel_tiles(panel, layout)
    np.testing.assert_array_equal(after, np.roll(before, 1, axis=1))  # one display range before and after
    assert (magnitude == (252, 255, 164)).all()  # a constant |flow|: its max, the scale's top colour everywhere

    # models without fields, a dict output among them: no alignment panels, the same scores
    plain = evaluate(dict_output, tmp_path / "dict_output", **options)
    assert plain["panels"] == summary["panels"] and plain["alignment_panels"] == []
    assert not list((tmp_path / "dict_output" / "panels").glob("*_alignment.png"))
    assert plain["metrics"] == summary["metrics"]
    zero_filled = evaluate("zero_filled", tmp_path / "zero_filled", **options)
    assert zero_filled["alignment_panels"] == [] and zero_filled["metrics"] == summary["metrics"]


def test_alignment_panel_layout_and_display_ranges():
    reference = torch.linspace(-1, 3, 256 * 256).reshape(256, 256)
    aligned = reference.flip(0) * 2  # beyond the reference's range: clipped at its max
    flow = torch.zeros(2, 256, 256)
    flow[0, :, 128:] = 3.0
    flow[1, :, 128:] = 4.0  # |flow| 5 px on the right half, 0 on the left
    panel = alignment_panel_image(reference, aligned, flow, caption="test: case, slice 0")
    layout = alignment_panel_layout((256, 256))
    assert layout["scale"] == 2 and layout["lefts"] == [0, 258, 516]  # 256-pixel columns 2 apart: the titles fit
    assert panel.shape == (layout["top"] + 256 + 6 + 3 * 22, layout["width"], 3)
    before, after, magnitude = _panel_tiles(panel, layout)
    for tile in (before, after):
        assert (tile == tile[..., :1]).all()  # gray
    np.testing.assert_array_equal(before[..., 0], np.round((reference.double().numpy() + 1) / 4 * 255).astype(np.uint8))
    np.testing.assert_array_equal(after[..., 0], np.round(np.clip((aligned.double().numpy() + 1) / 4, 0, 1) * 255).astype(np.uint8))
    assert (magnitude[:, :128] == (0, 0, 4)).all() and (magnitude[:, 128:] == (252, 255, 164)).all()
    # titles above each image, the colour bar at the right, the caption and the ranges below
    top, bar, scale = layout["top"], layout["bar"], layout["scale"]
    for first, width in layout["columns"]:
        assert _inked(panel[:top, first : first + width])
    strip = panel[top : top + 256, bar : bar + 6 * scale]
    assert tuple(strip[0, 0]) == (252, 255, 164) and tuple(strip[-1, 0]) == (0, 0, 4)
    assert _inked(panel[top : top + 256, bar + 6 * scale :]) and _inked(panel[top + 256 :])
    # a field of 0 everywhere: drawn at the scale's bottom (the range guarded), the ranges still stated
    still = alignment_panel_image(reference, reference, torch.zeros(2, 256, 256))
    assert (_panel_tiles(still, layout)[2] == (0, 0, 4)).all() and still.shape[0] == panel.shape[0] - (8 + 3) * scale
    # the footer states the field's range: a different max draws differently there only
    other = alignment_panel_image(reference, aligned, flow * 2, caption="test: case, slice 0")
    differs = (other != panel).any(axis=-1)
    assert differs[top + 256 :].any() and not differs[: top + 256].any()
    with pytest.raises(ValueError, match=r"flow \[2, H, W\]"):
        alignment_panel_image(reference, aligned, flow[:1])
    with pytest.raises(ValueError, match="three lines"):
        alignment_panel_layout((256, 256), ("a", "b"))


def test_a_model_with_misshapen_fields_is_refused(tmp_path, monkeypatch, aligner_models):
    aligner = aligner_models[0]
    forward = _Aligner.forward
    monkeypatch.setattr(_Aligner, "forward", lambda self, batch: {**forward(self, batch), "flow": forward(self, batch)["flow"][:, :1]})
    with pytest.raises(ValueError, match=f"model '{aligner}': 'aligned' must be .*'flow' real"):
        evaluate(aligner, tmp_path, crop=32, progress=False)
