"""The training engine: one run of a registered model on a multi-contrast dataset, with validation,
checkpoints, exact resume, mixed precision and DistributedDataParallel.

What a run does (`train(config)`):
- builds the training and validation datasets (`common.make_dataset`): training masks are drawn per sample and
  per epoch (MaskSampler "sample", `set_epoch` each epoch), validation masks per volume (MaskSampler
  "volume", seeded by the file name as fastMRI does);
- builds the model, its loss, the paper's optimiser and schedule from the registry
  (`mcmri_fast.models`), each overridable in `TrainConfig`;
- trains with gradient clipping, AMP on CUDA (torch.autocast float16 + GradScaler), optionally
  `torch.compile`, a tqdm bar per epoch, and logs JSON lines to `<run_dir>/metrics.jsonl`;
- validates every `val_every` epochs with fastMRI's per-volume metrics (`mcmri_fast.metrics`) on the
  de-normalised magnitude images, and writes `<run_dir>/checkpoints/last.pt` every epoch and `best.pt`
  on the best validation SSIM, atomically (write to a temporary file, then `os.replace`).

Units and shapes: batches are the dataset dicts of `mcmri_fast.data.datasets`, collated: images
[B, 1, H, W] (float32 magnitudes, or complex64 with magnitude=False), "scale" and "offset" [B] float64.
A model returns the reconstruction in normalised units with the shape and dtype of batch["target"]; the
image in the data's units is |x · scale + offset| for complex x and x · scale + offset for real x
(fastMRI's U-Net de-normalisation). The ground truth of the metrics is the magnitude of the fully
sampled k-space's inverse FFT (centre-cropped to the image size), so no normalisation or clamping of
the target can change a score. A volume is [S, H, W], its slices in slice order.

Exact resume: a checkpoint holds the model, optimiser, scheduler and GradScaler states, the epoch and
step, every rank's RNG states (python, numpy, torch CPU, the current CUDA device) and the state of the
training DataLoader's sampling generator, all taken at the end of an epoch (after validation). A run
killed at any point resumes from last.pt and repeats the steps after it exactly as an uninterrupted run
takes them (on CPU bit for bit; on CUDA up to the non-determinism of its kernels).

DistributedDataParallel: when launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set) a run initialises
the process group (nccl on CUDA, gloo on CPU) unless one exists, wraps the model, shards the training
set with a DistributedSampler (`batch_size` is per rank), and shards validation by whole volumes; the
per-volume metrics of all ranks are gathered, so they equal those of one process. Only rank 0 writes
checkpoints, logs and bars. Each rank draws its own masks: a training mask is seeded by its sample.
Multi-node resume needs `run_dir` on a file system every node sees.

Checkpoints: a dict saved with torch.save, readable with `torch.load(weights_only=True)` (tensors,
numbers, strings, lists, tuples, dicts only): {"format": "mcmri_fast.checkpoint", "version": 1,
"model", "model_config" (the full constructor arguments), "data" (dataset options), "state_dict",
"optimizer", "scheduler", "scaler", "epoch" (epochs done), "step" (optimiser steps done), "rng",
"metrics", "best_ssim", "config" (the run's TrainConfig as a dict)}. `common.load_checkpoint` reads and
checks one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import numbers
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics
from .._files import atomic_write_text
from ..data.masks import MASK_NAMES, default_mask_kwargs
from ..models import ModelSpec, build_model, get_model_spec, reconstruction
from ._progress import progress_bar
from .common import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    DATASET_KINDS,
    DEVICE_OPTION,
    METRIC_NAMES,
    autocast,
    contrasts,
    iter_volumes,
    load_checkpoint,
    make_dataset,
    make_mask_sampler,
    resolve_device,
    save_checkpoint,
    to_device,
    volume_metrics,
)

__all__ = ["TrainConfig", "train", "make_loss"]

logger = logging.getLogger(__name__)

# Options a resumed run may change; any other difference from the checkpoint's config is refused.
RESUMABLE_OPTIONS = ("run_dir", "epochs", "workers", "val_every", "log_every", "device", "amp", "compile", "max_steps_per_epoch")


# ---------------------------------------------------------------------------------------------------
# The run configuration




@dataclasses.dataclass
class TrainConfig:
    """Every option of a training run; None means the model's paper default (from its ModelSpec).

    Data: `dataset` is one of DATASET_KINDS. "builtin": `train_data` / `val_data` are split names of
    the builtin dataset ("train", "val", "test"). "fastmri": CSV files of (pd_file, pdfs_file) rows,
    relative to `data_root` (default: the CSV's folder); the target is PDFS and the reference PD.
    "paired_h5": folders (or single files) of the project HDF5 format. "ixi" / "brats": NIfTI roots
    (one folder of subjects per split). `val_data` None: no validation. `target` / `reference`: the
    contrasts (defaults: builtin t2/t1, ixi t2/pd, brats t2/t1; paired_h5 needs them). `crop`: a
    centred crop × crop of the images before the mask is drawn (fastMRI: the image crop, default 320).
    `mask` and `mask_kwargs`: `mcmri_fast.data.masks.mask_func(mask, **mask_kwargs)` (None: the mask's
    defaults, `masks.default_mask_kwargs`: 4×, and a centre fraction of 0.08 where the mask takes one).
    `misalignment`, `noise`: see `mcmri_fast.data.datasets` (None: the model's default, its
    ModelSpec.data["misalignment"] or ["noise"], else 0).

    Optimisation: `epochs`, `batch_size` (per rank under DDP), `lr`, `optimizer` (a dict merged into
    the spec's when it names the same optimiser or none, else replacing it), `schedule` (likewise),
    `grad_clip` (max gradient norm; None or 0: off), `amp` (None: on for CUDA, off on CPU; True on CPU
    is refused), `compile` (torch.compile the model), `max_steps_per_epoch` (a short budget).

    Run: `device` ("auto", "cpu", "cuda" or "cuda:N"), `workers` (DataLoader processes), `seed`,
    `run_dir` (None: runs/<model>-<date>-<time>), `val_every` (epochs), `log_every` (steps per
    metrics.jsonl line).
    """

    model: str = "unet"
    model_config: dict = dataclasses.field(default_factory=dict)
    dataset: str = "builtin"
    train_data: str | None = "train"
    val_data: str | None = "val"
    data_root: str | None = None
    target: str | None = None
    reference: str | None = None
    crop: int | None = None
    mask: str = "random"
    mask_kwargs: dict | None = None
    misalignment: float | None = None
    noise: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: dict | None = None
    schedule: dict | None = None
    grad_clip: float | None = 1.0
    amp: bool | None = None
    device: str = "auto"
    workers: int = 0
    seed: int = 0
    run_dir: str | None = None
    val_every: int = 1
    log_every: int = 10
    compile: bool = False
    max_steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(f"{name} must be {expected}, got {getattr(self, name)!r}")

        if self.mask_kwargs is None and self.mask in MASK_NAMES:
            self.mask_kwargs = default_mask_kwargs(self.mask)

        def is_int(v: Any) -> bool:
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def is_number(v: Any) -> bool:
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

        if not isinstance(self.model, str) or not self.model:
            fail("model", "a model name")
        for name in ("model_config", "mask_kwargs"):
            if not isinstance(getattr(self, name), dict):
                fail(name, "a dict")
        for name in ("optimizer", "schedule"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                fail(name, "a dict or None")
        if self.dataset not in DATASET_KINDS:
            fail("dataset", f"one of {DATASET_KINDS}")
        if self.train_data is None:
            fail("train_data", "a split name (builtin) or a path")
        for name in ("train_data", "val_data", "data_root", "target", "reference", "run_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, os.PathLike)):
                fail(name, "a string or None")
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))  # the config is saved as JSON
        if self.mask not in MASK_NAMES:
            fail("mask", f"one of {MASK_NAMES}")
        if self.misalignment is not None and (not is_number(self.misalignment) or self.misalignment < 0):
            fail("misalignment", "a number >= 0 or None")
        if self.noise is not None and (not is_number(self.noise) or self.noise < 0):
            fail("noise", "a number >= 0 or None")
        for name in ("crop", "epochs", "batch_size", "max_steps_per_epoch"):
            value = getattr(self, name)
            if value is not None and (not is_int(value) or value < 1):
                fail(name, "a positive integer or None")
        for name in ("val_every", "log_every"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "a positive integer")
        if not is_int(self.workers) or self.workers < 0:
            fail("workers", "an integer >= 0")
        if not is_int(self.seed) or self.seed < 0:
            fail("seed", "an integer >= 0")
        if self.lr is not None and (not is_number(self.lr) or self.lr <= 0):
            fail("lr", "a positive number or None")
        if self.grad_clip is not None and (not is_number(self.grad_clip) or self.grad_clip < 0):
            fail("grad_clip", "a number >= 0 or None")
        for name in ("amp",):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                fail(name, "True, False or None")
        if not isinstance(self.compile, bool):
            fail("compile", "True or False")
        if not isinstance(self.device, str) or not DEVICE_OPTION.match(self.device):
            fail("device", "'auto', 'cpu', 'cuda' or 'cuda:N'")

    def to_dict(self) -> dict:
        """The options as a JSON-compatible dict (lists, not tuples)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, options: dict) -> "TrainConfig":
        """A config from a dict such as `to_dict` gives; unknown keys raise ValueError naming them."""
        if not isinstance(options, dict):
            raise TypeError(f"options must be a dict, got {type(options).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(unknown)}; the options are: {', '.join(sorted(known))}")
        return cls(**options)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the options to `path` as JSON (atomically); returns the path."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        """A config from a JSON file written by `save` (or by hand); errors name the file."""
        path = Path(path)
        try:
            options = json.loads(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{path}: no such config file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable JSON config ({exc})") from None
        if not isinstance(options, dict):
            raise ValueError(f"{path}: a config file holds a JSON object, got {type(options).__name__}")
        try:
            return cls.from_dict(options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------------
# Loss, optimiser, schedule


def make_loss(loss: str | Callable[[Any, dict], torch.Tensor]) -> Callable[[Any, dict], torch.Tensor]:
    """The training loss as loss(output, batch) -> 0-d float32 tensor: a registry entry's own callable as
    it is, or a named loss ("l1", "mse", "ssim") of the reconstruction (`models.reconstruction(output)`).

    l1 / mse: mean over pixels, complex images as (real, imaginary) pairs (the 2-channel view the
    networks compute). ssim: 1 − SSIM of the magnitudes (mcmri_fast.metrics.SSIMLoss) with data_range
    = the target volume's max in normalised units, (max − offset) / scale (fastMRI trains with the
    volume max).
    """
    if callable(loss):
        return loss

    def as_real(x: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(x) if x.is_complex() else x

    if loss == "l1":
        return lambda output, batch: F.l1_loss(as_real(reconstruction(output)).float(), as_real(batch["target"]).float())
    if loss == "mse":
        return lambda output, batch: F.mse_loss(as_real(reconstruction(output)).float(), as_real(batch["target"]).float())
    if loss == "ssim":
        ssim_loss = metrics.SSIMLoss()

        def ssim(output: Any, batch: dict) -> torch.Tensor:
            target = batch["target"]
            data_range = ((batch["max"] - batch["offset"]) / batch["scale"]).to(device=target.device, dtype=torch.float32)
            return ssim_loss(reconstruction(output).abs().float(), target.abs().float(), data_range=data_range)

        return ssim
    raise ValueError(f"loss must be 'l1', 'mse', 'ssim' or a callable, got {loss!r}")


_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}


def _merged(default: dict, override: dict | None) -> dict:
    """An override dict merged into a default one when it names the same "name" (or none), else it
    replaces the default."""
    if not override:
        return dict(default)
    if override.get("name", default.get("name")) == default.get("name"):
        return {**default, **override}
    return dict(override)


def _make_optimizer(parameters: Any, options: dict) -> torch.optim.Optimizer:
    options = dict(options)
    name = options.pop("name", None)
    if name not in _OPTIMIZERS:
        raise ValueError(f"optimizer: name must be one of {tuple(_OPTIMIZERS)}, got {name!r}")
    try:
        return _OPTIMIZERS[name](parameters, **options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"optimizer {name!r}: bad options {options}: {exc}") from None


def _make_scheduler(optimizer: torch.optim.Optimizer, options: dict, epochs: int):
    options = dict(options)
    name = options.pop("name", "none")
    try:
        if name == "none":
            return None
        if name == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, **options)
        if name == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1), **options)
    except TypeError as exc:
        raise ValueError(f"schedule {name!r}: bad options {options}: {exc}") from None
    raise ValueError(f"schedule: name must be 'none', 'step' or 'cosine', got {name!r}")


# ---------------------------------------------------------------------------------------------------
# RNG states (exact resume) and the parameters' hash


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The user's module inside torch.compile and DistributedDataParallel wrappers."""
    model = getattr(model, "_orig_mod", model)
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def _parameter_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in _unwrap(model).state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _rng_state(loader_generator: torch.Generator, device: torch.device) -> dict:
    """This process's RNG states, in types torch.load(weights_only=True) reads (numpy's key as a tensor)."""
    kind, key, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(key.astype(np.int64)), int(position), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "loader": loader_generator.get_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, loader_generator: torch.Generator, device: torch.device) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, key, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------------------------------------------
# Distributed


@dataclasses.dataclass
class _Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list:
        if not self.enabled:
            return [obj]
        gathered: list = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, obj)
        return gathered

    def broadcast(self, obj: Any) -> Any:
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.initialized_here:
            torch.distributed.destroy_process_group()


def _init_distributed(device_option: str) -> tuple[_Distributed, torch.device]:
    """The process group of a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK) and this rank's device."""
    env = os.environ
    if "RANK" not in env or "WORLD_SIZE" not in env or int(env["WORLD_SIZE"]) <= 1:
        return _Distributed(), resolve_device(device_option)
    rank, world_size, local_rank = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    device = resolve_device(device_option)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)  # one GPU per process
        torch.cuda.set_device(device)
    initialized_here = False
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world_size)
        initialized_here = True
    return _Distributed(rank, world_size, local_rank, initialized_here), device


def _volume_of(dataset: torch.utils.data.Dataset, index: int) -> int:
    """The volume number of slice `index` (datasets over several volumes have an `index` of
    (volume, slice) pairs; the others hold one volume)."""
    volume_index = getattr(dataset, "index", None)
    return volume_index[index][0] if volume_index is not None else 0


def _volume_shard(dataset: torch.utils.data.Dataset, rank: int, world_size: int) -> list[int]:
    """The slice indices of the volumes of rank `rank` (volume v goes to rank v mod world_size), in order."""
    return [i for i in range(len(dataset)) if _volume_of(dataset, i) % world_size == rank]


# ---------------------------------------------------------------------------------------------------
# Training


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _JsonLines:
    """Appends one JSON object per line to metrics.jsonl (rank 0 only; a no-op elsewhere)."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def _check_resume(saved: dict, current: dict, path: Path) -> None:
    """Refuses to resume with options other than RESUMABLE_OPTIONS changed."""
    changed = sorted(k for k in set(saved) | set(current) if k not in RESUMABLE_OPTIONS and saved.get(k) != current.get(k))
    if changed:
        details = "; ".join(f"{k}: {saved.get(k)!r} in the checkpoint, {current.get(k)!r} now" for k in changed)
        raise ValueError(f"{path}: cannot resume with changed option(s) {', '.join(changed)} ({details})")


def _validate(model, loader, device, amp, loss_fn, dist: _Distributed, progress: bool) -> dict:
    """Per-volume metrics over this rank's volumes, gathered from all ranks; their means over volumes
    and the mean loss per slice. Returns {"nmse", "psnr", "ssim", "mae", "loss", "volumes", "slices"}."""
    rows, loss_sum, slices = [], 0.0, 0
    bar = progress_bar(progress, total=len(loader), desc="validation")
    try:
        for volume in iter_volumes(model, loader, device, amp=amp, loss_fn=loss_fn, progress=bar):
            rows.append({"file": volume.file, **volume_metrics(volume.target, volume.prediction)})
            loss_sum += volume.loss_sum
            slices += len(volume.slices)
    finally:
        bar.close()
    gathered = dist.gather((rows, loss_sum, slices))
    rows = sorted((row for part in gathered for row in part[0]), key=lambda row: row["file"])
    total_slices = sum(part[2] for part in gathered)
    result = {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}
    result.update(loss=sum(part[1] for part in gathered) / max(total_slices, 1), volumes=len(rows), slices=total_slices)
    return result


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> dict:
    """Trains `config.model` as `config` says (see the module docstring) and returns the final state:
    {"run_dir", "epoch", "step", "train_loss" (the last epoch's mean), "val" (the last validation's
    metrics, {} if none), "best_ssim", "best_epoch", "last_checkpoint", "best_checkpoint" (None
    without validation), "parameter_hash" (sha256 of this rank's final parameters), "seconds"}.

    resume: continue the run in config.run_dir from its checkpoints/last.pt (exactly: see the module
    docstring); only the options in RESUMABLE_OPTIONS may differ from the checkpoint's. A fresh run
    refuses a run_dir that already holds one. progress: a tqdm bar per epoch (rank 0, on a terminal).
    Errors in the options raise ValueError naming the option; a bad checkpoint, CheckpointError.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    spec = get_model_spec(config.model)
    if not spec.trainable:
        raise ValueError(f"model {config.model!r} has nothing to train; evaluate it directly (no checkpoint needed)")
    dist, device = _init_distributed(config.device)
    try:
        return _train(config, spec, dist, device, resume, progress)
    finally:
        dist.close()


def _train(config: TrainConfig, spec: ModelSpec, dist: _Distributed, device: torch.device, resume: bool, progress: bool) -> dict:
    run = _Run(config, spec, dist, device, resume, progress)
    for epoch in range(run.start_epoch, run.epochs):
        run.train_epoch(epoch)
        improved = run.validate(epoch)
        logger.info("epoch %d/%d: train loss %.4g%s", epoch + 1, run.epochs, run.train_loss,
                    "".join(f", val {k} {run.val_result[k]:.4g}" for k in ("psnr", "ssim")) if run.val_result else "")
        run.save_checkpoints(epoch, improved)
    return run.result()


class _Run:
    """One training run: set up from its config (and, resumed, from its last checkpoint), then trained by
    `_train` epoch by epoch. Its progress: start_epoch, step, train_loss (the last epoch's), val_result
    (the last validation's), best_ssim and best_epoch."""

    def __init__(self, config: TrainConfig, spec: ModelSpec, dist: _Distributed, device: torch.device, resume: bool,
                 progress: bool):
        self.started = time.perf_counter()
        self.spec, self.dist, self.device = spec, dist, device
        self.amp = config.amp if config.amp is not None else device.type == "cuda"
        if self.amp and device.type != "cuda":
            raise ValueError(f"amp: mixed precision needs a CUDA device, the run is on {device}; set amp to False or None")
        self.epochs = config.epochs if config.epochs is not None else spec.epochs
        batch_size = config.batch_size if config.batch_size is not None else spec.batch_size
        checkpoint = self._open_run_dir(config, resume)
        config = self.config  # with the run folder filled in
        self._make_loaders(batch_size)
        self._make_model()
        self.start_epoch, self.step, self.best_ssim, self.best_epoch = 0, 0, -math.inf, None
        last_metrics = self._restore(checkpoint) if checkpoint is not None else {}
        self.train_loss = last_metrics.get("train_loss", math.nan)
        self.val_result: dict = dict(last_metrics.get("val", {}))

        self.train_model: torch.nn.Module = self.model
        if dist.enabled:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            self.train_model = torch.compile(self.train_model)

        self.log = _JsonLines(self.run_dir / "metrics.jsonl" if dist.main else None)
        if dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save(self.run_dir / "config.json")
        self.show_bars = progress and dist.main
        target, reference = contrasts(config.dataset, config.target, config.reference)
        self.data_record = {**spec.data, "dataset": config.dataset, "target": target, "reference": reference,
                            "crop": config.crop, "mask": config.mask, "mask_kwargs": config.mask_kwargs,
                            "misalignment": config.misalignment, "noise": config.noise}
        self.steps_per_epoch = len(self.train_loader)
        if config.max_steps_per_epoch is not None:
            self.steps_per_epoch = min(self.steps_per_epoch, config.max_steps_per_epoch)

    # --- setup ----------------------------------------------------------------------------------------

    def _open_run_dir(self, config: TrainConfig, resume: bool) -> dict | None:
        """Names the run folder (rank 0 names it, every rank uses it) and returns its last checkpoint on
        resume, None for a fresh run, which refuses a folder that holds one."""
        run_dir = config.run_dir or os.path.join("runs", f"{config.model}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.run_dir = Path(self.dist.broadcast(run_dir))
        # the model's default misalignment and noise are written into the run's config: evaluation reads them there
        defaults = {key: getattr(config, key) if getattr(config, key) is not None else self.spec.data.get(key, 0.0)
                    for key in ("misalignment", "noise")}
        self.config = dataclasses.replace(config, run_dir=str(self.run_dir), **{k: float(v) for k, v in defaults.items()})
        checkpoint_dir = self.run_dir / "checkpoints"
        self.last_path, self.best_path = checkpoint_dir / "last.pt", checkpoint_dir / "best.pt"
        if resume:
            checkpoint = load_checkpoint(self.last_path, expected_model=config.model)
            _check_resume(checkpoint["config"], self.config.to_dict(), self.last_path)
            return checkpoint
        if self.last_path.exists():
            raise ValueError(f"run_dir: {self.run_dir} already holds a run ({self.last_path}); resume it, or choose another run_dir")
        return None

    def _make_loaders(self, batch_size: int) -> None:
        """The training set and its loader (shuffled by a seeded generator, or sharded by a
        DistributedSampler), and the loader of this rank's validation volumes (None without validation)."""
        config, spec, dist = self.config, self.spec, self.dist
        data_options = dict(
            data_root=config.data_root, target=config.target, reference=config.reference, crop=config.crop,
            magnitude=spec.data["magnitude"], normalization=spec.data["normalization"],
            misalignment=config.misalignment, noise=config.noise, seed=config.seed,
        )
        train_masks = make_mask_sampler(config.mask, config.mask_kwargs, "sample", config.seed)
        self.train_set = make_dataset(config.dataset, config.train_data, train_masks, option="train_data", **data_options)
        val_set = None
        if config.val_data is not None:
            val_masks = make_mask_sampler(config.mask, config.mask_kwargs, "volume", config.seed)
            val_set = make_dataset(config.dataset, config.val_data, val_masks, option="val_data", **data_options)
        self.loader_generator = torch.Generator().manual_seed(config.seed)
        if dist.enabled:
            self.sampler = torch.utils.data.DistributedSampler(self.train_set, num_replicas=dist.world_size, rank=dist.rank,
                                                               shuffle=True, seed=config.seed)
        else:
            self.sampler = torch.utils.data.RandomSampler(self.train_set, generator=self.loader_generator)
        pin = self.device.type == "cuda"
        self.train_loader = torch.utils.data.DataLoader(self.train_set, batch_size=batch_size, sampler=self.sampler,
                                                        num_workers=config.workers, generator=self.loader_generator, pin_memory=pin)
        self.val_loader = None
        if val_set is not None:
            val_indices = _volume_shard(val_set, dist.rank, dist.world_size)
            # its own generator: iterating it must not draw from the global RNG (exact resume)
            self.val_loader = torch.utils.data.DataLoader(val_set, batch_size=batch_size, sampler=val_indices,
                                                          num_workers=config.workers, generator=torch.Generator().manual_seed(0),
                                                          pin_memory=pin)

    def _make_model(self) -> None:
        """The model (its weights drawn after seeding every RNG), its loss, the optimiser and schedule
        (the paper's, with the config's overrides) and the GradScaler."""
        config, spec = self.config, self.spec
        _seed_everything(config.seed)
        self.model_config = {**spec.config, **config.model_config}
        self.model = build_model(config.model, **config.model_config).to(self.device)
        optimizer_options = _merged(spec.optimizer, config.optimizer)
        if config.lr is not None:
            optimizer_options["lr"] = config.lr
        self.optimizer = _make_optimizer(self.model.parameters(), optimizer_options)
        self.scheduler = _make_scheduler(self.optimizer, _merged(spec.schedule, config.schedule), self.epochs)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.loss_fn = make_loss(spec.loss)

    def _restore(self, checkpoint: dict) -> dict:
        """Loads a resumed run's states and progress from its checkpoint, RNG states included; returns
        the checkpoint's last metrics."""
        self.model.load_state_dict(checkpoint["state_dict"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.amp and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.start_epoch, self.step = int(checkpoint["epoch"]), int(checkpoint["step"])
        self.best_ssim = float(checkpoint.get("best_ssim", -math.inf))
        self.best_epoch = checkpoint.get("best_epoch")
        rng = checkpoint["rng"]
        states = rng["ranks"]
        if rng.get("world_size") != self.dist.world_size:
            logger.warning("%s: saved by %s rank(s), resumed on %s: the RNG streams continue from rank 0's", self.last_path,
                           rng.get("world_size"), self.dist.world_size)
        rank = self.dist.rank
        _set_rng_state(states[rank] if rank < len(states) else states[0], self.loader_generator, self.device)
        logger.info("resuming %s at epoch %d, step %d", self.run_dir, self.start_epoch, self.step)
        return dict(checkpoint.get("metrics", {}))

    # --- the phases of an epoch -----------------------------------------------------------------------

    def train_epoch(self, epoch: int) -> None:
        """Up to steps_per_epoch optimiser steps, a metrics.jsonl line every log_every of them; then
        train_loss (the mean over all ranks' steps) and the schedule's step."""
        device = self.device
        self.train_set.set_epoch(epoch)
        if self.dist.enabled:
            self.sampler.set_epoch(epoch)
        self.train_model.train()
        bar = progress_bar(self.show_bars, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{self.epochs}")
        epoch_loss_sum, epoch_steps = torch.zeros((), device=device), 0
        group_loss_sum, group_steps = torch.zeros((), device=device), 0
        try:
            for batch_index, batch in enumerate(self.train_loader):
                if batch_index >= self.steps_per_epoch:
                    break
                loss = self._step(batch)
                epoch_loss_sum += loss
                group_loss_sum += loss
                epoch_steps += 1
                group_steps += 1
                bar.update(1)
                if group_steps == self.config.log_every or batch_index + 1 == self.steps_per_epoch:
                    group_loss = float(group_loss_sum) / group_steps  # one synchronisation per group
                    self._log_steps(epoch, group_loss, group_steps, bar)
                    group_loss_sum, group_steps = torch.zeros((), device=device), 0
        finally:
            bar.close()
        if self.dist.enabled:  # the mean over all ranks' steps
            torch.distributed.all_reduce(epoch_loss_sum)
            epoch_loss_sum /= self.dist.world_size
        self.train_loss = float(epoch_loss_sum) / max(epoch_steps, 1)
        if self.scheduler is not None:
            self.scheduler.step()

    def _step(self, batch: dict) -> torch.Tensor:
        """One optimiser step on a batch (AMP, gradient clipping); returns its loss, detached."""
        batch = to_device(batch, self.device)
        with autocast(self.device, self.amp):
            output = self.train_model(batch)
        loss = self.loss_fn(output, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.step += 1
        return loss.detach()

    def _log_steps(self, epoch: int, loss: float, steps: int, bar) -> None:
        """The metrics.jsonl line and the bar's postfix of the last `steps` steps, their mean loss `loss`."""
        if not math.isfinite(loss):
            if not self.amp:
                raise FloatingPointError(f"the training loss is {loss} at epoch {epoch + 1}, step {self.step}: "
                                         "lower lr or enable grad_clip")
            # float16 overflow: GradScaler skips those steps and lowers its scale
            logger.warning("non-finite loss at epoch %d, step %d (AMP): the step was skipped", epoch + 1, self.step)
        lr = self.optimizer.param_groups[0]["lr"]
        self.log.write({"kind": "train", "epoch": epoch + 1, "step": self.step, "steps": steps, "loss": loss,
                        "lr": lr, "time": time.perf_counter() - self.started})
        bar.set_postfix(loss=f"{loss:.4g}", lr=f"{lr:.3g}")

    def validate(self, epoch: int) -> bool:
        """Validates after every val_every-th epoch and the last (when there is validation data), sets
        val_result and logs it; returns whether its SSIM is the best so far."""
        due = (epoch + 1) % self.config.val_every == 0 or epoch + 1 == self.epochs
        if self.val_loader is None or not due:
            return False
        self.val_result = _validate(self.model, self.val_loader, self.device, self.amp, self.loss_fn, self.dist, self.show_bars)
        self.log.write({"kind": "val", "epoch": epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                        "time": time.perf_counter() - self.started, **self.val_result})
        improved = self.val_result["ssim"] > self.best_ssim
        if improved:
            self.best_ssim, self.best_epoch = self.val_result["ssim"], epoch + 1
        return improved

    def save_checkpoints(self, epoch: int, improved: bool) -> None:
        """last.pt after the epoch, best.pt too when the validation improved; rank 0 writes them, with
        every rank's RNG states."""
        rng_states = self.dist.gather(_rng_state(self.loader_generator, self.device))
        if not self.dist.main:
            return
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.config.model,
            "model_config": self.model_config,
            "data": self.data_record,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "epoch": epoch + 1,
            "step": self.step,
            "rng": {"world_size": self.dist.world_size, "ranks": rng_states},
            "metrics": {"train_loss": self.train_loss, "val": self.val_result},
            "best_ssim": self.best_ssim,
            "best_epoch": self.best_epoch,
            "config": self.config.to_dict(),
        }
        save_checkpoint(payload, self.last_path)
        if improved:
            save_checkpoint(payload, self.best_path)

    def result(self) -> dict:
        """What `train` returns (see there)."""
        return {
            "run_dir": str(self.run_dir),
            "epoch": max(self.epochs, self.start_epoch),
            "step": self.step,
            "train_loss": self.train_loss,
            "val": self.val_result,
            "best_ssim": self.best_ssim if math.isfinite(self.best_ssim) else None,
            "best_epoch": self.best_epoch,
            "last_checkpoint": str(self.last_path),
            "best_checkpoint": str(self.best_path) if self.best_epoch is not None else None,
            "parameter_hash": _parameter_hash(self.model),
            "seconds": time.perf_counter() - self.started,
        }
