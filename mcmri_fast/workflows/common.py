"""What the workflows share: the device option and batches on the device, the datasets by kind, the
evaluation loop with fastMRI's per-volume metrics (training validates with it, `evaluate` scores with
it), and the checkpoint files (`train` writes them, `train` and `evaluate` read them). Units, shapes and
the checkpoint layout are in `train`'s docstring.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import metrics
from .._files import atomic_file
from ..data.datasets import BuiltinDataset, FastMRIPairDataset, NiftiPairDataset, PairedH5Dataset
from ..data.fft import ifft2c
from ..data.masks import mask_func
from ..data.transforms import MaskSampler, center_crop
from ..models import reconstruction

__all__ = [
    "DEVICE_OPTION",
    "resolve_device",
    "to_device",
    "autocast",
    "synchronize",
    "DATASET_KINDS",
    "contrasts",
    "make_mask_sampler",
    "make_dataset",
    "METRIC_NAMES",
    "denormalized_magnitude",
    "ground_truth",
    "zero_filled_magnitude",
    "volume_metrics",
    "VolumeResult",
    "iter_volumes",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
]

DATASET_KINDS = ("builtin", "fastmri", "paired_h5", "ixi", "brats")
METRIC_NAMES = ("nmse", "psnr", "ssim", "mae")
CHECKPOINT_FORMAT = "mcmri_fast.checkpoint"
CHECKPOINT_VERSION = 1
# Contrast pairs (target, reference) of each dataset kind when the config names none.
_DEFAULT_CONTRASTS = {"builtin": ("t2", "t1"), "fastmri": ("pdfs", "pd"), "ixi": ("t2", "pd"), "brats": ("t2", "t1")}


# ---------------------------------------------------------------------------------------------------
# Devices


DEVICE_OPTION = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(option: str) -> torch.device:
    """The torch.device of a device option: "auto" (CUDA when available, else CPU), "cpu", "cuda" or
    "cuda:N". A CUDA request without CUDA raises ValueError naming the option."""
    if not isinstance(option, str) or not DEVICE_OPTION.match(option):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {option!r}")
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if option.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {option!r} was requested, but CUDA is not available (torch {torch.__version__}); use --device cpu")
        device = torch.device(option)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {option!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
        return device
    return torch.device("cpu")


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch with its tensors on `device` (non-blocking: asynchronous from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def autocast(device: torch.device, amp: bool):
    """float16 autocast when `amp` and on CUDA, else a no-op context."""
    return torch.autocast(device_type="cuda", dtype=torch.float16) if amp and device.type == "cuda" else nullcontext()


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA; a no-op on CPU), so a timer measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------
# Data


def make_mask_sampler(name: str, kwargs: dict, mode: str, seed: int = 0) -> MaskSampler:
    """MaskSampler(mask_func(name, **kwargs), mode=mode, seed=seed); bad arguments raise ValueError
    naming the mask."""
    try:
        function = mask_func(name, **kwargs)
    except TypeError as exc:
        raise ValueError(f"mask {name!r}: bad mask_kwargs {kwargs}: {exc}") from None
    return MaskSampler(function, mode=mode, seed=seed)


def contrasts(kind: str, target: str | None, reference: str | None) -> tuple[str, str]:
    """The (target, reference) contrasts of a dataset kind: those given, else the kind's defaults."""
    if kind == "fastmri":
        if (target, reference) not in ((None, None), ("pdfs", "pd")):
            raise ValueError(f"target/reference: fastMRI pairs are PDFS (target) and PD (reference), got {target!r}/{reference!r}")
        return "pdfs", "pd"
    if kind == "paired_h5" and (target is None or reference is None):
        raise ValueError("target and reference must name two contrasts of the paired HDF5 files (e.g. target='t2', reference='t1')")
    default_target, default_reference = _DEFAULT_CONTRASTS.get(kind, (None, None))
    return target or default_target, reference or default_reference


def make_dataset(
    kind: str,
    data: str | os.PathLike,
    masks: MaskSampler,
    *,
    data_root: str | os.PathLike | None = None,
    target: str | None = None,
    reference: str | None = None,
    crop: int | None = None,
    magnitude: bool = True,
    normalization: str | None = "instance",
    misalignment: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    option: str = "data",
) -> torch.utils.data.Dataset:
    """One split of a dataset of kind `kind` (one of DATASET_KINDS), as `train.TrainConfig` describes them.

    data: a builtin split name ("train", "val", "test") or the split's path (a fastMRI pairs CSV, a
    folder or file of paired HDF5, a NIfTI root). option: the option name that errors quote. The
    remaining arguments go to the dataset constructors (mcmri_fast.data.datasets).
    """
    if kind not in DATASET_KINDS:
        raise ValueError(f"dataset must be one of {DATASET_KINDS}, got {kind!r}")
    target, reference = contrasts(kind, target, reference)
    options = dict(normalization=normalization, magnitude=magnitude, misalignment=misalignment, noise=noise, seed=seed)
    crop_args = {} if crop is None else {"crop": crop}
    if kind == "builtin":
        if data not in ("train", "val", "test"):
            raise ValueError(f"{option}: the builtin dataset has the splits 'train', 'val' and 'test', got {data!r}")
        return BuiltinDataset(str(data), masks, target=target, reference=reference, **crop_args, **options)
    path = Path(data)
    if not path.exists():
        raise ValueError(f"{option}: {path} does not exist")
    if kind == "fastmri":
        root = Path(data_root) if data_root is not None else path.parent
        if not root.is_dir():
            raise ValueError(f"data_root: {root} is not a folder")
        return FastMRIPairDataset(path, root, masks, **crop_args, **options)
    if kind == "paired_h5":
        return PairedH5Dataset(path, masks, target=target, reference=reference, **crop_args, **options)
    return NiftiPairDataset(path, masks, layout=kind, target=target, reference=reference, **crop_args, **options)


# ---------------------------------------------------------------------------------------------------
# Images, metrics and the evaluation loop


def denormalized_magnitude(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The image in the data's units: x [B, 1, H, W] (real or complex, normalised), scale and offset [B]
    -> float32 [B, H, W]: x · scale + offset for real x, |x · scale + offset| for complex x."""
    shape = (-1, 1, 1, 1)
    image = x.to(torch.complex64 if x.is_complex() else torch.float32) * scale.to(torch.float32).reshape(shape)
    image = image + offset.to(torch.float32).reshape(shape)
    return (image.abs() if image.is_complex() else image)[:, 0].float()


def ground_truth(batch: dict) -> torch.Tensor:
    """The fully sampled target magnitude [B, H, W] float32: |ifft2c(kspace)| centre-cropped to the
    image size, independent of the normalisation (as the dataset computes it before normalising)."""
    size = tuple(batch["target"].shape[-2:])
    return center_crop(ifft2c(batch["kspace"]), size).abs()[:, 0].float()


def zero_filled_magnitude(batch: dict) -> torch.Tensor:
    """The zero-filled magnitude [B, H, W] float32 from the measurement, unnormalised (unclamped)."""
    size = tuple(batch["target"].shape[-2:])
    return center_crop(ifft2c(batch["masked_kspace"]), size).abs()[:, 0].float()


def volume_metrics(target: torch.Tensor, prediction: torch.Tensor) -> dict[str, float]:
    """fastMRI's per-volume metrics of prediction against target (both [S, H, W] real): NMSE, PSNR and
    SSIM with data_range = the target volume's max, MAE."""
    return {
        "nmse": float(metrics.nmse(target, prediction)),
        "psnr": float(metrics.psnr(target, prediction)),
        "ssim": float(metrics.ssim(target, prediction)),
        "mae": float(metrics.mae(target, prediction)),
    }


@dataclasses.dataclass
class VolumeResult:
    """One volume's reconstruction and what goes with it (CPU tensors, slices in slice order):
    file, slices (their indices), prediction / target / zero_filled float32 [S, H, W] in the data's
    units, reference [S, H, W] (the model's input, normalised as the dataset gives it, magnitude),
    acceleration (the mean achieved acceleration of its masks), loss_sum (the sum of the per-batch
    losses of its slices, weighted by slice count; 0 without a loss)."""

    file: str
    slices: list[int]
    prediction: torch.Tensor
    target: torch.Tensor
    zero_filled: torch.Tensor
    reference: torch.Tensor
    acceleration: float
    loss_sum: float = 0.0


def iter_volumes(
    model: torch.nn.Module,
    loader: Iterator[dict] | torch.utils.data.DataLoader,
    device: torch.device,
    *,
    amp: bool = False,
    loss_fn: Callable[[torch.Tensor, dict], torch.Tensor] | None = None,
    timing: dict | None = None,
    progress: Any = None,
) -> Iterator[VolumeResult]:
    """Runs `model` (in eval mode, no gradients) over a loader whose slices come grouped by volume (a
    sequential order) and yields each volume as soon as its last slice is done, so at most one volume
    is held. timing: a dict that gets "model_seconds" (forward time, synchronised) and "slices".
    progress: a tqdm bar to advance per batch, or None."""
    model.eval()
    current: dict | None = None
    finished: set[str] = set()

    def complete(volume: dict) -> VolumeResult:
        order = np.argsort(volume["slices"], kind="stable")
        stack = lambda key: torch.cat(volume[key])[torch.as_tensor(order)]  # noqa: E731
        return VolumeResult(
            file=volume["file"], slices=[volume["slices"][i] for i in order], prediction=stack("prediction"),
            target=stack("target"), zero_filled=stack("zero_filled"), reference=stack("reference"),
            acceleration=float(np.mean(volume["acceleration"])), loss_sum=volume["loss_sum"],
        )

    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, device)
            synchronize(device)
            start = time.perf_counter()
            with autocast(device, amp):
                output = model(batch)
            synchronize(device)
            if timing is not None:
                timing["model_seconds"] = timing.get("model_seconds", 0.0) + time.perf_counter() - start
                timing["slices"] = timing.get("slices", 0) + len(batch["file"])
            loss = float(loss_fn(output, batch)) * len(batch["file"]) if loss_fn is not None else 0.0
            prediction = denormalized_magnitude(reconstruction(output), batch["scale"], batch["offset"]).cpu()
            target, zero_filled = ground_truth(batch).cpu(), zero_filled_magnitude(batch).cpu()
            reference = batch["reference"][:, 0]
            reference = (reference.abs() if reference.is_complex() else reference).float().cpu()
            for i, file in enumerate(batch["file"]):
                if current is None or current["file"] != file:
                    if current is not None:
                        finished.add(current["file"])
                        yield complete(current)
                    if file in finished:
                        raise RuntimeError(f"the loader gave slices of {file!r} after another volume: evaluate with a sequential order")
                    current = {"file": file, "slices": [], "prediction": [], "target": [], "zero_filled": [],
                               "reference": [], "acceleration": [], "loss_sum": 0.0}
                current["slices"].append(int(batch["slice"][i]))
                for key, value in (("prediction", prediction), ("target", target), ("zero_filled", zero_filled), ("reference", reference)):
                    current[key].append(value[i : i + 1])
                current["acceleration"].append(float(batch["acceleration"][i]))
                current["loss_sum"] += loss / len(batch["file"])
            if progress is not None:
                progress.update(1)
    if current is not None:
        yield complete(current)


# ---------------------------------------------------------------------------------------------------
# Checkpoint files


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, not a mcmri_fast checkpoint, or of another model;
    the message names the file."""


def save_checkpoint(payload: dict, path: str | os.PathLike) -> Path:
    """torch.save(payload) to `path` atomically (see mcmri_fast._files.atomic_file)."""
    with atomic_file(path) as temporary:
        torch.save(payload, temporary)
    return Path(path)


_CHECKPOINT_KEYS = ("model", "model_config", "data", "state_dict", "epoch", "step", "config")


def load_checkpoint(path: str | os.PathLike, expected_model: str | None = None) -> dict:
    """Reads a checkpoint written by `train` (on the CPU) and checks it.

    Raises CheckpointError naming the file when it is missing, unreadable or corrupt, not a
    mcmri_fast checkpoint (format, version, keys), or holds a model other than `expected_model`.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for a damaged file; all mean the same here
        # torch's own words ("pop from empty list", "Unsupported operand 110") say nothing to a user: the
        # message says what the file is, the cause stays chained for a traceback (mcmri -v)
        raise CheckpointError(f"{path}: not a readable checkpoint: the file ({path.stat().st_size} bytes) is corrupt, "
                              "truncated or not a torch.save file") from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a mcmri_fast checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {checkpoint.get('version')!r}, this mcmri_fast reads version {CHECKPOINT_VERSION}")
    missing = [key for key in _CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint lacks {', '.join(missing)}")
    if expected_model is not None and checkpoint["model"] != expected_model:
        raise CheckpointError(f"{path}: a checkpoint of model {checkpoint['model']!r}, not of {expected_model!r}")
    return checkpoint
