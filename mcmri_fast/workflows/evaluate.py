"""Evaluation and reconstruction: a trained checkpoint (or a model that needs none, "zero_filled") on a
dataset split, scored per volume with fastMRI's metrics, drawn as PNG panels, or written as fastMRI-style
HDF5 reconstructions.

- `evaluate(model, out_dir, ...)` writes `<out_dir>/metrics.csv` (one row per volume: NMSE, PSNR, SSIM,
  MAE), `<out_dir>/summary.json` (mean ± std per metric over the volumes, the model, the checkpoint,
  the data, the reconstruction time per slice) and `<out_dir>/panels/<volume>_s<slice>.png` (reference,
  zero-filled, reconstruction, target, |error| side by side), and returns the summary. For a model that
  estimates displacement fields it also writes `<out_dir>/panels/<volume>_s<slice>_alignment.png` per
  drawn slice (the reference before and after alignment, the field's magnitude), listed under the
  summary's "alignment_panels" ("panels" lists the first kind only; both lists are always there).
- `reconstruct(model, out, ...)` writes one HDF5 file per volume, named after its input file, holding
  "reconstruction" float32 [S, H, W] with attrs model, checkpoint, acceleration (fastMRI's layout).

Conventions: images are magnitudes in the data's units ([S, H, W] float32 per volume, slices in slice
order); the reconstruction is the model's output de-normalised (x · scale + offset, its magnitude for
complex x), the target the magnitude of the fully sampled k-space's inverse FFT and the zero-filled
image that of the measurement's (`common.ground_truth`, `common.zero_filled_magnitude`), so scores do
not depend on the normalisation. Metrics are fastMRI's (`mcmri_fast.metrics`, data_range = the target
volume's max); "std" is the population standard deviation over volumes (0 for one volume). Masks are
drawn per volume (MaskSampler "volume", seeded by the file name as fastMRI does), so every model sees
the same measurements. Data options default to those the checkpoint was trained with (dataset kind,
contrasts, crop, mask, misalignment, noise); the builtin dataset's "test" split is the default data.

PNG panels are 8-bit RGB, drawn and written without a plotting library (a 5 × 8 bitmap font, zlib +
struct): a title above each image (the contrasts named), the zero-filled image, the reconstruction and
the target in gray on one display range [0, target slice max]; the reference (the model's input,
normalised) on its own [min, max]; the error |reconstruction − target| in colour (inferno) from 0 to
20 % of the target slice max, the same fraction for every model, so panels compare, with a colour bar
in % of that max; a line below states the ranges in the data's units and the share of error pixels
above the scale's top.

Alignment panels: a model estimates displacement fields when its forward returns a dict that holds,
besides the reconstruction under "image", "aligned" (the reference warped onto the target, real
[B, 1, H, W], in batch["reference"]'s units) and "flow" (real [B, 2, H, W]: the x then the y
displacement, in pixels); other models' outputs are used as before. The panel, drawn the same way,
shows the reference and the aligned reference in gray on one display range (the reference's own
[min, max], as in the first panel) and |flow| = sqrt(flow_x² + flow_y²) in colour (inferno) from 0 to
its max over the slice (any range when that is 0), with a colour bar in % of that max, titles above,
and below the caption and lines stating the ranges ("|flow| 0 to 3.2 px").
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import atomic_file, atomic_write_text
from ..data.masks import default_mask_kwargs
from ..models import build_model, get_model_spec
from ._progress import progress_bar
from .common import (
    DATASET_KINDS,
    METRIC_NAMES,
    CheckpointError,
    autocast,
    contrasts,
    iter_volumes,
    load_checkpoint,
    make_dataset,
    make_mask_sampler,
    resolve_device,
    to_device,
    volume_metrics,
)

__all__ = ["evaluate", "reconstruct", "write_png", "panel_image", "panel_layout", "alignment_panel_image",
           "alignment_panel_layout", "CheckpointError"]

logger = logging.getLogger(__name__)

ERROR_DISPLAY_FRACTION = 0.2  # |error| maps: the colour scale's top at this fraction of the target slice's max
_PANEL_GAP = 2  # pixels of white between the images of a panel
_DATA_OPTIONS = ("dataset", "data_root", "target", "reference", "crop", "mask", "mask_kwargs", "misalignment", "noise")


# ---------------------------------------------------------------------------------------------------
# PNG


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Writes an 8-bit image as PNG (grayscale [H, W] or RGB [H, W, 3], uint8), atomically; returns
    the path. Dependency-free: one IDAT chunk, zlib-compressed scanlines with filter type 0."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"image must be uint8 [H, W] or [H, W, 3], got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"image must not be empty, got shape {image.shape}")
    color_type = 0 if image.ndim == 2 else 2
    rows = np.ascontiguousarray(image).reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter byte 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with atomic_file(path) as temporary:
        temporary.write_bytes(png)
    return Path(path)


def _to_uint8(image: torch.Tensor, low: float, high: float) -> np.ndarray:
    span = high - low if high > low else 1.0
    return (((image.double() - low) / span).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# A 5 × 8 bitmap font (rows 0-6 the body, row 7 the descenders) for the panels' labels, so the PNGs
# need no plotting library. Lowercase only: text is drawn lowercased; a character it lacks draws "?".
_GLYPHS = {
    " ": "..... ..... ..... ..... ..... ..... ..... .....",
    "0": ".###. #...# #..## #.#.# ##..# #...# .###. .....",
    "1": "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###. .....",
    "2": ".###. #...# ....# ...#. ..#.. .#... ##### .....",
    "3": "##### ...#. ..#.. ...#. ....# #...# .###. .....",
    "4": "...#. ..##. .#.#. #..#. ##### ...#. ...#. .....",
    "5": "##### #.... ####. ....# ....# #...# .###. .....",
    "6": "..##. .#... #.... ####. #...# #...# .###. .....",
    "7": "##### ....# ...#. ..#.. .#... .#... .#... .....",
    "8": ".###. #...# #...# .###. #...# #...# .###. .....",
    "9": ".###. #...# #...# .#### ....# ...#. .##.. .....",
    "a": "..... ..... .###. ....# .#### #...# .#### .....",
    "b": "#.... #.... #.##. ##..# #...# #...# ####. .....",
    "c": "..... ..... .###. #.... #.... #...# .###. .....",
    "d": "....# ....# .##.# #..## #...# #...# .#### .....",
    "e": "..... ..... .###. #...# ##### #.... .###. .....",
    "f": "..##. .#..# .#... ###.. .#... .#... .#... .....",
    "g": "..... ..... .#### #...# #...# .#### ....# .###.",
    "h": "#.... #.... #.##. ##..# #...# #...# #...# .....",
    "i": "..#.. ..... .##.. ..#.. ..#.. ..#.. .###. .....",
    "j": "...#. ..... ..##. ...#. ...#. ...#. #..#. .##..",
    "k": "#.... #.... #..#. #.#.. ##... #.#.. #..#. .....",
    "l": ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###. .....",
    "m": "..... ..... ##.#. #.#.# #.#.# #.#.# #.#.# .....",
    "n": "..... ..... #.##. ##..# #...# #...# #...# .....",
    "o": "..... ..... .###. #...# #...# #...# .###. .....",
    "p": "..... ..... ####. #...# #...# ####. #.... #....",
    "q": "..... ..... .#### #...# #...# .#### ....# ....#",
    "r": "..... ..... #.##. ##..# #.... #.... #.... .....",
    "s": "..... ..... .#### #.... .###. ....# ####. .....",
    "t": ".#... .#... ###.. .#... .#... .#..# ..##. .....",
    "u": "..... ..... #...# #...# #...# #..## .##.# .....",
    "v": "..... ..... #...# #...# #...# .#.#. ..#.. .....",
    "w": "..... ..... #...# #...# #.#.# #.#.# .#.#. .....",
    "x": "..... ..... #...# .#.#. ..#.. .#.#. #...# .....",
    "y": "..... ..... #...# #...# #...# .#### ....# .###.",
    "z": "..... ..... ##### ...#. ..#.. .#... ##### .....",
    ".": "..... ..... ..... ..... ..... .##.. .##.. .....",
    ",": "..... ..... ..... ..... ..... .##.. ..#.. .#...",
    ":": "..... .##.. .##.. ..... .##.. .##.. ..... .....",
    ";": "..... .##.. .##.. ..... .##.. .##.. ..#.. .#...",
    "-": "..... ..... ..... .###. ..... ..... ..... .....",
    "+": "..... ..#.. ..#.. ##### ..#.. ..#.. ..... .....",
    "=": "..... ..... ##### ..... ##### ..... ..... .....",
    "%": "##... ##..# ...#. ..#.. .#... #..## ...## .....",
    "|": "..#.. ..#.. ..#.. ..#.. ..#.. ..#.. ..#.. .....",
    "/": "..... ....# ...#. ..#.. .#... #.... ..... .....",
    "(": "...#. ..#.. .#... .#... .#... ..#.. ...#. .....",
    ")": ".#... ..#.. ...#. ...#. ...#. ..#.. .#... .....",
    "<": "...#. ..#.. .#... #.... .#... ..#.. ...#. .....",
    ">": ".#... ..#.. ...#. ....# ...#. ..#.. .#... .....",
    "_": "..... ..... ..... ..... ..... ..... ..... #####",
    "?": ".###. #...# ....# ...#. ..#.. ..... ..#.. .....",
}
_GLYPH_MASKS = {c: np.array([[p == "#" for p in row] for row in rows.split()], bool) for c, rows in _GLYPHS.items()}
_GLYPH_HEIGHT = 8

# Panel layout, in font pixels (× the text scale): the padding around text and the colour bar's width.
_TEXT_PAD = 3
_BAR_WIDTH = 6
_PANEL_TITLES = ("reference", "zero-filled", "reconstruction", "target", "|error|")
# The colour scale of the error map and the flow magnitude: inferno's colours at 0, 1/4, 1/2, 3/4, 1,
# linearly interpolated.
_SCALE_COLORS = np.array([(0, 0, 4), (87, 16, 110), (188, 55, 84), (249, 142, 9), (252, 255, 164)], np.float64)


def _text_mask(text: str, scale: int) -> np.ndarray:
    """The pixels of a line of text: bool [8·scale, (6·len − 1)·scale] (one blank column between glyphs)."""
    glyphs = [_GLYPH_MASKS.get(c, _GLYPH_MASKS["?"]) for c in text.lower()]
    if not glyphs:
        return np.zeros((_GLYPH_HEIGHT * scale, 0), bool)
    spacer = np.zeros((_GLYPH_HEIGHT, 1), bool)
    line = np.concatenate([part for g in glyphs for part in (g, spacer)][:-1], axis=1)
    return line.repeat(scale, axis=0).repeat(scale, axis=1)


def _draw_text(canvas: np.ndarray, text: str, top: int, left: int, scale: int) -> None:
    """Draws text in black onto an RGB canvas (clipped at its edges)."""
    mask = _text_mask(text, scale)
    height, width = min(mask.shape[0], canvas.shape[0] - top), min(mask.shape[1], canvas.shape[1] - left)
    if height > 0 and width > 0:
        canvas[top : top + height, left : left + width][mask[:height, :width]] = 0


def _colour_scale(fraction: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> uint8 RGB [..., 3] on the panels' colour scale (inferno; NaN draws as 0)."""
    position = np.nan_to_num(np.clip(fraction, 0, 1), nan=0.0) * (len(_SCALE_COLORS) - 1)
    low = np.minimum(position.astype(np.int64), len(_SCALE_COLORS) - 2)
    weight = (position - low)[..., None]
    return np.round(_SCALE_COLORS[low] * (1 - weight) + _SCALE_COLORS[low + 1] * weight).astype(np.uint8)


def _gray_tile(image: torch.Tensor, low: float, high: float) -> np.ndarray:
    """A gray RGB tile [H, W, 3] of a real image on the display range [low, high]."""
    return np.repeat(_to_uint8(image, low, high)[..., None], 3, axis=2)


def _layout(image_size: Sequence[int], titles: Sequence[str], tick_labels: Sequence[str],
            widest_lines: Sequence[str]) -> dict:
    """What `panel_layout` returns, for any row of titled images followed by a colour bar whose tick
    labels are `tick_labels`; `widest_lines` are the text lines below at their widest (the panel is
    made wide enough for them)."""
    height, width = (int(n) for n in image_size)
    scale = 2 if min(height, width) >= 128 else 1
    pad, glyph_height = _TEXT_PAD * scale, _GLYPH_HEIGHT * scale
    top = glyph_height + 2 * pad
    lefts, columns, x = [], [], 0
    for title in titles:
        column = max(width, _text_mask(title, scale).shape[1])
        columns.append((x, column))
        lefts.append(x + (column - width) // 2)
        x += column + _PANEL_GAP
    bar = x - _PANEL_GAP + 2 * pad
    label_width = max(_text_mask(label, scale).shape[1] for label in tick_labels)
    footer_width = max(_text_mask(line, scale).shape[1] for line in widest_lines) + 2 * pad
    total_width = max(bar + (_BAR_WIDTH + 3) * scale + label_width + pad, footer_width)
    return {"scale": scale, "top": top, "image": (height, width), "lefts": lefts, "columns": columns, "bar": bar,
            "width": total_width}


def _compose(layout: dict, tiles: Sequence[np.ndarray], titles: Sequence[str], ticks: Sequence[tuple[float, str]],
             lines: Sequence[str]) -> np.ndarray:
    """Draws a panel on white: the RGB tiles [H, W, 3] where `layout` (`_layout`) puts them, each title
    centred above its column, the colour bar (the colour scale from 1 at its top to 0 at its bottom)
    with a tick and a label at each (fraction, label) of `ticks`, and the text lines below the images."""
    scale, top, (height, width) = layout["scale"], layout["top"], layout["image"]
    pad, glyph_height = _TEXT_PAD * scale, _GLYPH_HEIGHT * scale
    canvas = np.full((top + height + pad + len(lines) * (glyph_height + pad), layout["width"], 3), 255, np.uint8)
    for tile, left, column, title in zip(tiles, layout["lefts"], layout["columns"], titles):
        canvas[top : top + height, left : left + width] = tile
        title_width = _text_mask(title, scale).shape[1]
        _draw_text(canvas, title, pad, column[0] + (column[1] - title_width) // 2, scale)

    bar_left = layout["bar"]
    bar_width = _BAR_WIDTH * scale
    canvas[top : top + height, bar_left : bar_left + bar_width] = _colour_scale(np.linspace(1, 0, height))[:, None]
    for fraction, label in ticks:
        row = top + round((1 - fraction) * (height - 1))
        canvas[row : row + scale, bar_left + bar_width : bar_left + bar_width + 2 * scale] = 0
        label_top = min(max(row - glyph_height // 2, top), top + height - glyph_height)
        _draw_text(canvas, label, label_top, bar_left + bar_width + 3 * scale, scale)
    for line, text in enumerate(lines):
        _draw_text(canvas, text, top + height + pad + line * (glyph_height + pad), pad, scale)
    return canvas


def _error_ticks() -> tuple[tuple[float, str], ...]:
    """The error map's colour bar ticks: its top (ERROR_DISPLAY_FRACTION of the target max), halfway, 0."""
    percent = 100 * ERROR_DISPLAY_FRACTION
    return ((1.0, f"{percent:g}%"), (0.5, f"{percent / 2:g}%"), (0.0, "0"))


def panel_image(reference: torch.Tensor, zero_filled: torch.Tensor, reconstruction: torch.Tensor, target: torch.Tensor,
                *, titles: Sequence[str] = _PANEL_TITLES, caption: str | None = None) -> np.ndarray:
    """One panel, RGB uint8 [H', W', 3] on white: reference, zero-filled, reconstruction, target
    (grayscale) and |reconstruction − target| (colour) side by side, each [H, W] real, a title above
    each (`titles`, five lines), the error map's colour bar at the right with its ticks in % of the
    target slice's max, and below them the caption (a line, if given) and two lines saying the display
    ranges (see the module docstring). Text that does not fit the panel's width is cut at its edge.

    Layout: text is drawn at scale 2 (10 × 16-pixel glyphs) for images of 128 pixels or more, else 1;
    the images start `panel_layout(...)["top"]` rows down, at the columns `panel_layout(...)["lefts"]`.
    """
    layout = panel_layout(target.shape[-2:], titles)
    vmax = float(target.max())
    error = (reconstruction - target).abs()
    span = ERROR_DISPLAY_FRACTION * vmax if vmax > 0 else 1.0
    tiles = [
        _gray_tile(reference, float(reference.min()), float(reference.max())),
        _gray_tile(zero_filled, 0.0, vmax),
        _gray_tile(reconstruction, 0.0, vmax),
        _gray_tile(target, 0.0, vmax),
        _colour_scale(error.double().numpy() / span),
    ]
    above = float((error > span).double().mean()) if error.numel() else 0.0
    lines = ([caption] if caption else []) + list(_panel_footer(vmax, above))
    return _compose(layout, tiles, titles, _error_ticks(), lines)


def _panel_footer(vmax: float, above: float) -> tuple[str, str]:
    """The panel's last two lines: the display ranges, and how much of the error map is clipped."""
    return (f"gray: 0 to the target slice max ({vmax:.3g}); reference: its own range",
            f"|error|: 0 to {100 * ERROR_DISPLAY_FRACTION:g}% of the target slice max ({ERROR_DISPLAY_FRACTION * vmax:.3g}); "
            f"{100 * above:.1f}% of pixels above")


_WIDEST_NUMBER = -8.88e-88  # the longest "{:.3g}" of a number: 9 characters (8 for a positive one)


def panel_layout(image_size: Sequence[int], titles: Sequence[str] = _PANEL_TITLES) -> dict:
    """Where `panel_image` puts things for images of `image_size` (H, W): {"scale" (of the text),
    "top" (the images' first row), "image" (H, W), "lefts" (each image's first column), "columns"
    ((first column, width) of each title's column), "bar" (the colour bar's first column), "width"}
    in pixels; the text lines below the images make the height."""
    if len(titles) != 5:
        raise ValueError(f"titles: five lines (reference, zero-filled, reconstruction, target, error), got {len(titles)}")
    return _layout(image_size, titles, [label for _, label in _error_ticks()], _panel_footer(-_WIDEST_NUMBER, 1.0))


# The alignment panel of a model that estimates displacement fields (see `alignment_panel_image`).
_ALIGNMENT_TITLES = ("reference", "aligned", "|flow| (px)")
_FLOW_TICKS = ((1.0, "100%"), (0.5, "50%"), (0.0, "0"))


def _alignment_footer(low: float, high: float, flow_max: float) -> tuple[str, str]:
    """The alignment panel's last two lines: the display ranges."""
    return (f"gray: {low:.3g} to {high:.3g} (the reference slice range), before and after alignment",
            f"|flow| 0 to {flow_max:.3g} px (the slice max); colour bar in % of it")


def alignment_panel_image(reference: torch.Tensor, aligned: torch.Tensor, flow: torch.Tensor, *,
                          titles: Sequence[str] = _ALIGNMENT_TITLES, caption: str | None = None) -> np.ndarray:
    """The alignment panel of a model that estimates displacement fields, RGB uint8 [H', W', 3] on
    white, drawn like `panel_image`'s: the reference before alignment and after it (`reference` and
    `aligned`, [H, W] real, gray on one display range, the reference's [min, max]) and the magnitude
    of the displacement field |φ| = sqrt(φx² + φy²) (`flow` [2, H, W] real, x then y displacement, in
    pixels) in colour from 0 to its max over the slice (any range when that is 0), a title above each
    (`titles`, three lines), the colour bar at the right with its ticks in % of that max, and below
    them the caption (a line, if given) and two lines saying the display ranges ("|flow| 0 to 3.2
    px"). Layout: `alignment_panel_layout`.
    """
    size = tuple(reference.shape)
    if reference.dim() != 2 or tuple(aligned.shape) != size or tuple(flow.shape) != (2, *size):
        raise ValueError(f"reference and aligned must be [H, W] and flow [2, H, W] of the same H, W, got "
                         f"{tuple(reference.shape)}, {tuple(aligned.shape)} and {tuple(flow.shape)}")
    layout = alignment_panel_layout(size, titles)
    low, high = float(reference.min()), float(reference.max())
    magnitude = flow.double().square().sum(dim=0).sqrt()
    flow_max = float(magnitude.max())
    span = flow_max if flow_max > 0 and np.isfinite(flow_max) else 1.0
    tiles = [_gray_tile(reference, low, high), _gray_tile(aligned, low, high), _colour_scale(magnitude.numpy() / span)]
    lines = ([caption] if caption else []) + list(_alignment_footer(low, high, flow_max))
    return _compose(layout, tiles, titles, _FLOW_TICKS, lines)


def alignment_panel_layout(image_size: Sequence[int], titles: Sequence[str] = _ALIGNMENT_TITLES) -> dict:
    """Where `alignment_panel_image` puts things for images of `image_size` (H, W): the keys of
    `panel_layout`, for its three images."""
    if len(titles) != 3:
        raise ValueError(f"titles: three lines (reference, aligned reference, field magnitude), got {len(titles)}")
    return _layout(image_size, titles, [label for _, label in _FLOW_TICKS],
                   _alignment_footer(_WIDEST_NUMBER, _WIDEST_NUMBER, -_WIDEST_NUMBER))


# ---------------------------------------------------------------------------------------------------
# Model and data


@dataclasses.dataclass
class _Setup:
    model: torch.nn.Module
    name: str
    checkpoint: str | None
    data: dict  # the data options used (what the summary reports)
    dataset: torch.utils.data.Dataset
    loader: torch.utils.data.DataLoader
    device: torch.device
    amp: bool


def _looks_like_path(value: str | os.PathLike) -> bool:
    text = os.fspath(value)
    return isinstance(value, os.PathLike) or os.sep in text or text.endswith((".pt", ".pth")) or Path(text).is_file()


def _prepare(model: str | os.PathLike, checkpoint: str | os.PathLike | None, options: dict, *, batch_size: int,
             device: str, workers: int, amp: bool) -> _Setup:
    """Resolves the model (a name or a checkpoint), the data options (given, else the checkpoint's
    training ones, else the defaults) and builds the dataset of the split and its sequential loader."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    if checkpoint is None and _looks_like_path(model):
        model, checkpoint = None, model
    elif not isinstance(model, str):
        raise TypeError(f"model must be a model name or a checkpoint path, got {type(model).__name__}")
    torch_device = resolve_device(device)
    if amp and torch_device.type != "cuda":
        raise ValueError(f"amp: mixed precision needs a CUDA device, the evaluation runs on {torch_device}")

    trained: dict = {}
    seed = 0
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, expected_model=model)
        name, spec_data = state["model"], {k: state["data"][k] for k in ("magnitude", "normalization")}
        get_model_spec(name)  # an unknown model: UnknownModelError listing the registered ones
        module = build_model(name, **state["model_config"])
        try:
            module.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise CheckpointError(f"{checkpoint}: its weights do not fit model {name!r} as configured: {exc}") from None
        trained = {k: state["config"].get(k) for k in _DATA_OPTIONS}
        seed = int(state["config"].get("seed", 0))
        checkpoint = str(checkpoint)
    else:
        spec = get_model_spec(model)
        if spec.trainable:
            raise ValueError(f"model {model!r} is trained: pass a checkpoint of it (a run's checkpoints/best.pt)")
        name, module = model, build_model(model)
        spec_data = {k: spec.data[k] for k in ("magnitude", "normalization")}

    def option(key: str, default: Any) -> Any:
        value = options.get(key)
        if value is None:
            value = trained.get(key)
        return default if value is None else value

    kind = option("dataset", "builtin")
    if kind not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {kind!r}")
    data_path = options.get("data")
    if data_path is None:
        if kind != "builtin":
            raise ValueError(f"data: give the split to evaluate (a path for dataset {kind!r})")
        data_path = "test"
    target, reference = contrasts(kind, option("target", None), option("reference", None))
    mask = option("mask", "random")
    # the arguments given override the run's (with the run's mask) or the mask's defaults (another mask)
    same_mask = trained.get("mask", "random") == mask and trained.get("mask_kwargs")
    mask_kwargs = {**(trained["mask_kwargs"] if same_mask else default_mask_kwargs(mask)), **(options.get("mask_kwargs") or {})}
    data = {
        "dataset": kind, "data": os.fspath(data_path), "data_root": option("data_root", None),
        "target": target, "reference": reference, "crop": option("crop", None), "mask": mask, "mask_kwargs": mask_kwargs,
        "misalignment": float(option("misalignment", 0.0)), "noise": float(option("noise", 0.0)), **spec_data,
    }
    if data["data_root"] is not None:
        data["data_root"] = os.fspath(data["data_root"])
    dataset = make_dataset(
        kind, data_path, make_mask_sampler(mask, mask_kwargs, "volume", seed), data_root=data["data_root"],
        target=target, reference=reference, crop=data["crop"], magnitude=spec_data["magnitude"],
        normalization=spec_data["normalization"], misalignment=data["misalignment"], noise=data["noise"], seed=seed,
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         pin_memory=torch_device.type == "cuda")
    return _Setup(module.to(torch_device).eval(), name, checkpoint, data, dataset, loader, torch_device, amp)


def _bar(setup: _Setup, progress: bool, description: str):
    return progress_bar(progress, total=len(setup.loader), desc=description, unit="batch")


def _warm_up(setup: _Setup) -> None:
    """One untimed forward pass, so lazy initialisation (kernels, caches) stays out of the timing."""
    if len(setup.dataset) == 0:
        return
    batch = to_device(torch.utils.data.default_collate([setup.dataset[0]]), setup.device)
    with torch.no_grad(), autocast(setup.device, setup.amp):
        setup.model(batch)


class _FieldRecorder(torch.nn.Module):
    """Runs a model for `iter_volumes` and passes its output through, keeping the displacement-field
    outputs of a model that estimates them (a dict output that holds "aligned", the warped reference
    [B, 1, H, W], and "flow", [B, 2, H, W] in pixels, next to "image") per batch, for the alignment
    panels. The tensors are kept as the model gave them (no copy or device sync inside the timed
    forward) until `take` asks for a volume's; other models' outputs are passed through untouched."""

    def __init__(self, model: torch.nn.Module, name: str):
        super().__init__()
        self.model = model
        self.name = name
        self._pending: list[tuple[list[str], Any, torch.Tensor, torch.Tensor]] = []  # files, slices, aligned, flow
        self._taken: set[str] = set()

    def forward(self, batch: dict) -> Any:
        output = self.model(batch)
        if isinstance(output, dict) and "aligned" in output and "flow" in output:
            aligned, flow = output["aligned"], output["flow"]
            count, size = len(batch["file"]), tuple(batch["reference"].shape[-2:])
            if tuple(aligned.shape) != (count, 1, *size) or tuple(flow.shape) != (count, 2, *size) or flow.is_complex():
                raise ValueError(f"model {self.name!r}: 'aligned' must be [B, 1, H, W] and 'flow' real [B, 2, H, W], the H, W "
                                 f"of the reference {tuple(batch['reference'].shape)}; got {tuple(aligned.shape)} and "
                                 f"{tuple(flow.shape)} {flow.dtype}")
            self._pending.append((list(batch["file"]), batch["slice"], aligned.detach(), flow.detach()))
        return output

    def take(self, file: str, slices: Sequence[int]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """{slice index: (aligned [H, W], flow [2, H, W])} (float32, CPU; the aligned reference a magnitude
        as `VolumeResult.reference` is) of the volume `file`'s slices among `slices` that the model gave
        fields for; forgets all of that volume's (call it once per volume, after `iter_volumes` yields it)."""
        self._taken.add(file)
        wanted, found, kept = set(slices), {}, []
        for files, indices, aligned, flow in self._pending:
            indices = torch.as_tensor(indices).tolist()
            for i, (other, index) in enumerate(zip(files, indices)):
                if other == file and index in wanted:
                    image = aligned[i, 0]
                    found[int(index)] = ((image.abs() if image.is_complex() else image).float().cpu(), flow[i].float().cpu())
            if not set(files) <= self._taken:
                kept.append((files, indices, aligned, flow))
        self._pending = kept
        return found


def _file_stem(file: str) -> str:
    name = Path(file).name
    return name[: -len(".h5")] if name.endswith(".h5") else name


# ---------------------------------------------------------------------------------------------------
# The workflows


def evaluate(
    model: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    dataset: str | None = None,
    data: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    target: str | None = None,
    reference: str | None = None,
    crop: int | None = None,
    mask: str | None = None,
    mask_kwargs: dict | None = None,
    misalignment: float | None = None,
    noise: float | None = None,
    slices_to_plot: Sequence[int] | None = None,
    batch_size: int = 1,
    device: str = "auto",
    workers: int = 0,
    amp: bool = False,
    progress: bool = True,
) -> dict:
    """Scores a model on a dataset split; writes metrics.csv, summary.json and panels/ under out_dir.

    model: a checkpoint path, or a model name: "zero_filled" (any model that is not trained) alone,
        or with `checkpoint` (the checkpoint must then be of that model: CheckpointError otherwise).
    dataset, data, data_root, target, reference, crop, mask, mask_kwargs, misalignment, noise: as in
        `mcmri_fast.workflows.train.TrainConfig` (data: the split to evaluate, a builtin split name or
        a path); None takes the checkpoint's training value, else the default (builtin "test").
    slices_to_plot: slice positions drawn per volume (negative: from the end; positions a volume does
        not have are skipped); None: the middle slice of each volume; () none.
    batch_size, device ("auto", "cpu", "cuda"), workers, amp (float16 autocast, CUDA only).

    Returns the summary (what summary.json holds): {"model", "checkpoint", "data", "device",
    "volumes", "slices", "metrics": {"nmse"|"psnr"|"ssim"|"mae": {"mean", "std"}},
    "time_per_slice_ms" (the model's forward time, synchronised, per slice), "metrics_csv", "panels"
    (the file names in panels/ of the drawn slices' panels, "<volume>_s<slice>.png"),
    "alignment_panels" (those of their alignment panels, "<volume>_s<slice>_alignment.png", for a model
    whose output holds "aligned" and "flow" (see the module docstring); [] for any other model)}.
    """
    options = dict(dataset=dataset, data=data, data_root=data_root, target=target, reference=reference, crop=crop,
                   mask=mask, mask_kwargs=mask_kwargs, misalignment=misalignment, noise=noise)
    setup = _prepare(model, checkpoint, options, batch_size=batch_size, device=device, workers=workers, amp=amp)
    if slices_to_plot is not None and not all(isinstance(s, int) and not isinstance(s, bool) for s in slices_to_plot):
        raise ValueError(f"slices_to_plot must be slice positions (integers), got {slices_to_plot!r}")
    out_dir = Path(out_dir)
    panels_dir = out_dir / "panels"
    panels_dir.mkdir(parents=True, exist_ok=True)

    _warm_up(setup)
    timing: dict = {}
    rows, panels, alignment_panels = [], [], []
    titles = (f"reference ({setup.data['reference']})", "zero-filled", "reconstruction", f"target ({setup.data['target']})",
              "|error|")
    alignment_titles = (f"reference ({setup.data['reference']})", f"aligned ({setup.data['reference']})", "|flow| (px)")
    recorder = _FieldRecorder(setup.model, setup.name)
    bar = _bar(setup, progress, "evaluate")
    try:
        for volume in iter_volumes(recorder, setup.loader, setup.device, amp=setup.amp, timing=timing, progress=bar):
            rows.append({"file": volume.file, "slices": len(volume.slices), **volume_metrics(volume.target, volume.prediction)})
            count = len(volume.slices)
            positions = [count // 2] if slices_to_plot is None else list(slices_to_plot)
            drawn = []
            for position in positions:
                if not -count <= position < count:
                    logger.warning("%s has %d slices: slice position %d is not drawn", volume.file, count, position)
                    continue
                drawn.append(position % count)
            fields = recorder.take(volume.file, [volume.slices[i] for i in drawn])
            for i in drawn:
                stem = f"{_file_stem(volume.file)}_s{volume.slices[i]:03d}"
                caption = f"{setup.name}: {_file_stem(volume.file)}, slice {volume.slices[i]}"
                image = panel_image(volume.reference[i], volume.zero_filled[i], volume.prediction[i], volume.target[i],
                                    titles=titles, caption=caption)
                panels.append(write_png(panels_dir / f"{stem}.png", image).name)
                if volume.slices[i] in fields:
                    aligned, flow = fields[volume.slices[i]]
                    image = alignment_panel_image(volume.reference[i], aligned, flow, titles=alignment_titles, caption=caption)
                    alignment_panels.append(write_png(panels_dir / f"{stem}_alignment.png", image).name)
    finally:
        bar.close()
    if not rows:
        raise ValueError(f"data: {setup.data['data']} holds no slices to evaluate")

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["file", "slices", *METRIC_NAMES], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    metrics_csv = atomic_write_text(out_dir / "metrics.csv", buffer.getvalue())

    summary = {
        "model": setup.name,
        "checkpoint": setup.checkpoint,
        "data": setup.data,
        "device": str(setup.device),
        "volumes": len(rows),
        "slices": int(sum(row["slices"] for row in rows)),
        "metrics": {name: {"mean": float(np.mean([r[name] for r in rows])), "std": float(np.std([r[name] for r in rows]))}
                    for name in METRIC_NAMES},
        "time_per_slice_ms": 1000.0 * timing.get("model_seconds", 0.0) / max(timing.get("slices", 0), 1),
        "metrics_csv": metrics_csv.name,
        "panels": panels,
        "alignment_panels": alignment_panels,
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    spread = (lambda v: f" ± {v['std']:.2g}") if len(rows) > 1 else (lambda v: "")  # no spread over one volume
    logger.info("%s on %s (%d volume(s)): %s", setup.name, setup.data["data"], len(rows),
                ", ".join(f"{k} {v['mean']:.4g}{spread(v)}" for k, v in summary["metrics"].items()))
    return summary


def reconstruct(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    dataset: str | None = None,
    data: str | os.PathLike | None = None,
    data_root: str | os.PathLike | None = None,
    target: str | None = None,
    reference: str | None = None,
    crop: int | None = None,
    mask: str | None = None,
    mask_kwargs: dict | None = None,
    misalignment: float | None = None,
    noise: float | None = None,
    batch_size: int = 1,
    device: str = "auto",
    workers: int = 0,
    amp: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Writes the model's reconstructions of a split in fastMRI's style and returns the files.

    One HDF5 file per volume, named after its input file (<name>.h5), in the folder `out`, or the file
    `out` itself when it ends in ".h5" and the split has one volume. Each holds the dataset
    "reconstruction" float32 [S, H, W] (de-normalised magnitudes, slices in order) and attrs "model",
    "checkpoint" ("" for none), "acceleration" (the mean achieved acceleration of the volume's mask),
    "mask", "target", "reference"; written to a temporary file, then renamed. The model and data
    arguments are those of `evaluate`.
    """
    import h5py

    options = dict(dataset=dataset, data=data, data_root=data_root, target=target, reference=reference, crop=crop,
                   mask=mask, mask_kwargs=mask_kwargs, misalignment=misalignment, noise=noise)
    setup = _prepare(model, checkpoint, options, batch_size=batch_size, device=device, workers=workers, amp=amp)
    out = Path(out)
    single_file = out.suffix == ".h5"
    written: list[Path] = []
    bar = _bar(setup, progress, "reconstruct")
    try:
        for volume in iter_volumes(setup.model, setup.loader, setup.device, amp=setup.amp, progress=bar):
            if single_file:
                if written:
                    raise ValueError(f"out: {out} names one file, but the split has more than one volume; give a folder")
                path = out
            else:
                path = out / f"{_file_stem(volume.file)}.h5"
                if path in written:
                    raise ValueError(f"two volumes of the split are named {volume.file!r}: their reconstructions would collide")
            with atomic_file(path) as temporary, h5py.File(temporary, "w") as f:
                f.create_dataset("reconstruction", data=volume.prediction.numpy().astype(np.float32))
                f.attrs["model"] = setup.name
                f.attrs["checkpoint"] = setup.checkpoint or ""
                f.attrs["acceleration"] = volume.acceleration
                f.attrs["mask"] = setup.data["mask"]
                f.attrs["target"] = setup.data["target"]
                f.attrs["reference"] = setup.data["reference"]
            written.append(path)
    finally:
        bar.close()
    if not written:
        raise ValueError(f"data: {setup.data['data']} holds no slices to reconstruct")
    logger.info("wrote %d reconstruction file(s) to %s", len(written), out)
    return written

