"""Tests of mcmri_fast.workflows.train: the run configuration, a training run's files (config.json,
metrics.jsonl, atomic last/best checkpoints), validation metrics against a direct computation with
mcmri_fast.metrics, exact resume (1 epoch + resume = 2 epochs uninterrupted, step by step), checkpoint
errors, torch.compile, and a 2-process DDP run through torchrun on CPU (gloo)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from mcmri_fast import metrics
from mcmri_fast.data import builtin
from mcmri_fast.data.datasets import BuiltinDataset, PairedH5Dataset
from mcmri_fast.data.formats import write_paired_h5
from mcmri_fast.data.masks import mask_func
from mcmri_fast.data.transforms import MaskSampler
from mcmri_fast.models import ModelSpec, build_model, model_names, register
from mcmri_fast.workflows.common import CheckpointError, load_checkpoint, resolve_device, save_checkpoint
from mcmri_fast.workflows.train import TrainConfig, train

TINY_UNET = {"chans": 4, "num_pool_layers": 2}
MASK_KWARGS = {"center_fractions": [0.08], "accelerations": [4]}


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def _direct_metrics(model: torch.nn.Module, inputs, targets) -> list[dict]:
    """Per-volume metrics computed here, independently of the training loop: the model slice by slice
    on `inputs` (a normalised dataset), de-normalised as fastMRI's U-Net does (x·std + mean), against
    the targets of `targets` (the same dataset without normalisation); volumes by file, in slice order."""
    model.eval()
    volumes: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    with torch.no_grad():
        for i in range(len(inputs)):
            item, raw = inputs[i], targets[i]
            batch = torch.utils.data.default_collate([item])
            prediction = model(batch)[0, 0] * item["scale"] + item["offset"]
            volumes.setdefault(item["file"], {})[item["slice"]] = (prediction, raw["target"][0])
    rows = []
    for file in sorted(volumes):
        slices = [volumes[file][s] for s in sorted(volumes[file])]
        pred, gt = torch.stack([p for p, _ in slices]), torch.stack([t for _, t in slices])
        rows.append({"nmse": float(metrics.nmse(gt, pred)), "psnr": float(metrics.psnr(gt, pred)),
                     "ssim": float(metrics.ssim(gt, pred)), "mae": float(metrics.mae(gt, pred))})
    return rows


def _model_from(checkpoint: dict) -> torch.nn.Module:
    model = build_model(checkpoint["model"], **checkpoint["model_config"])
    model.load_state_dict(checkpoint["state_dict"])
    return model


def _write_paired_volumes(folder: Path, split: str, counts: list[int], size: int = 64) -> Path:
    """Project-format files of `counts` slices each (size × size centre crops of the builtin split)."""
    images = builtin.load_builtin(split, ("t2", "t1"))
    top = (256 - size) // 2
    start = 0
    for v, count in enumerate(counts):
        crop = {c: images[c][start : start + count, top : top + size, top : top + size] for c in ("t2", "t1")}
        write_paired_h5(folder / f"vol{v}.h5", crop, source="builtin")
        start += count
    return folder


# ---------------------------------------------------------------------------------------------------
# Configuration


def test_config_round_trip_and_errors(tmp_path):
    config = TrainConfig(model="unet", model_config=TINY_UNET, epochs=3, lr=2e-4, schedule={"name": "cosine"}, crop=64)
    assert TrainConfig.from_dict(config.to_dict()) == config
    path = config.save(tmp_path / "run.json")
    assert TrainConfig.load(path) == config
    assert json.loads(path.read_text())["lr"] == 2e-4

    with pytest.raises(ValueError, match="unknown training option.*bogus.*learning_rate"):
        TrainConfig.from_dict({**config.to_dict(), "bogus": 1, "learning_rate": 1})
    (tmp_path / "bad.json").write_text('{"epochs": 2, "colour": "red"}')
    with pytest.raises(ValueError, match="bad.json.*colour"):
        TrainConfig.load(tmp_path / "bad.json")
    for options, name in [({"epochs": 0}, "epochs"), ({"dataset": "mnist"}, "dataset"), ({"device": "gpu"}, "device"),
                          ({"mask": "stripes"}, "mask"), ({"lr": -1.0}, "lr"), ({"grad_clip": -1}, "grad_clip"),
                          ({"batch_size": 1.5}, "batch_size"), ({"noise": -0.1}, "noise")]:
        with pytest.raises(ValueError, match=name):
            TrainConfig(**options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_request_without_cuda(tmp_path):
    with pytest.raises(ValueError, match="device 'cuda'.*CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device 'cuda'"):
        train(TrainConfig(model_config=TINY_UNET, device="cuda", run_dir=str(tmp_path / "run")), progress=False)
    with pytest.raises(ValueError, match="amp"):
        train(TrainConfig(model_config=TINY_UNET, amp=True, device="cpu", run_dir=str(tmp_path / "run")), progress=False)
    assert not (tmp_path / "run").exists()


def test_untrainable_and_unknown_models_refused(tmp_path):
    with pytest.raises(ValueError, match="zero_filled.*nothing to train"):
        train(TrainConfig(model="zero_filled", run_dir=str(tmp_path / "a")))
    with pytest.raises(ValueError, match="unknown model 'nope'.*unet"):
        train(TrainConfig(model="nope", run_dir=str(tmp_path / "b")))


# ---------------------------------------------------------------------------------------------------
# A run: files, metrics, checkpoints


def test_run_files_and_validation_metrics(tmp_path):
    run_dir = tmp_path / "run"
    config = TrainConfig(model="unet", model_config=TINY_UNET, epochs=2, batch_size=2, max_steps_per_epoch=2, log_every=1,
                         lr=3e-3, run_dir=str(run_dir))
    result = train(config, progress=False)

    # the config as given, with the model's default misalignment and noise (the U-Net's: 0) filled in
    recorded = {**config.to_dict(), "misalignment": 0.0, "noise": 0.0}
    assert json.loads((run_dir / "config.json").read_text()) == recorded
    steps = _records(run_dir, "train")
    assert [(r["epoch"], r["step"]) for r in steps] == [(1, 1), (1, 2), (2, 3), (2, 4)]
    assert all(np.isfinite(r["loss"]) and r["lr"] == 3e-3 and r["time"] >= 0 for r in steps)
    validations = _records(run_dir, "val")
    assert [(r["epoch"], r["step"]) for r in validations] == [(1, 2), (2, 4)]
    assert all({"nmse", "psnr", "ssim", "mae", "loss", "lr", "time"} <= set(r) and r["volumes"] == 1 and r["slices"] == 16
               for r in validations)
    assert result["epoch"] == 2 and result["step"] == 4 and result["val"]["ssim"] == validations[-1]["ssim"]
    assert not [p for p in (run_dir / "checkpoints").iterdir() if p.name not in ("last.pt", "best.pt")]  # no temp files

    last = load_checkpoint(run_dir / "checkpoints" / "last.pt", expected_model="unet")
    assert last["format"] == "mcmri_fast.checkpoint" and last["version"] == 1
    assert (last["epoch"], last["step"]) == (2, 4) and last["config"] == recorded
    assert last["model_config"] == {"chans": 4, "num_pool_layers": 2, "drop_prob": 0.0}
    assert last["data"]["normalization"] == "instance" and last["data"]["magnitude"] is True
    torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)  # plain types only

    # the logged validation metrics are the fastMRI metrics of the checkpoint's model on the val volume
    masks = MaskSampler(mask_func("random", **MASK_KWARGS), mode="volume")
    inputs = BuiltinDataset("val", masks, normalization="instance")
    targets = BuiltinDataset("val", masks, normalization=None)
    direct = _direct_metrics(_model_from(last), inputs, targets)[0]
    for name in ("nmse", "psnr", "ssim", "mae"):
        assert validations[-1][name] == pytest.approx(direct[name], rel=1e-5), name

    best = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    best_epoch = max(validations, key=lambda r: r["ssim"])["epoch"]
    assert best["epoch"] == best_epoch == result["best_epoch"]

    with pytest.raises(ValueError, match="already holds a run"):
        train(config, progress=False)


def test_resume_repeats_the_uninterrupted_run(tmp_path):
    """train 2 epochs == train 1 epoch, then resume for the second in a fresh call: the same losses
    step by step, the same final parameters. Dropout, shuffling and a step schedule make every RNG
    stream and optimiser/scheduler state matter."""
    options = dict(model="unet", model_config={**TINY_UNET, "drop_prob": 0.2}, crop=64, batch_size=4, max_steps_per_epoch=3,
                   log_every=1, schedule={"name": "step", "step_size": 1, "gamma": 0.5}, seed=7)
    whole = train(TrainConfig(**options, epochs=2, run_dir=str(tmp_path / "whole")), progress=False)
    first = train(TrainConfig(**options, epochs=1, run_dir=str(tmp_path / "split")), progress=False)
    resumed = train(TrainConfig(**options, epochs=2, run_dir=str(tmp_path / "split")), resume=True, progress=False)

    def losses(run: str) -> list[tuple]:
        return [(r["epoch"], r["step"], r["loss"], r["lr"]) for r in _records(tmp_path / run, "train")]

    assert len(losses("whole")) == 6
    assert losses("split") == losses("whole")  # bit for bit, lr schedule included
    assert first["parameter_hash"] != whole["parameter_hash"]
    assert resumed["parameter_hash"] == whole["parameter_hash"]
    assert resumed["val"] == whole["val"]

    with pytest.raises(ValueError, match="changed option.*lr"):
        train(TrainConfig(**options, epochs=3, lr=1.0, run_dir=str(tmp_path / "split")), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="last.pt"):
        train(TrainConfig(**options, epochs=2, run_dir=str(tmp_path / "nothing")), resume=True, progress=False)


# ---------------------------------------------------------------------------------------------------
# Checkpoint files


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint({"a": torch.arange(3)}, path)
    with pytest.raises(Exception):
        save_checkpoint({"a": lambda: None}, path)  # fails mid-write: the old file must stay whole
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


def test_load_checkpoint_errors_name_the_file(tmp_path):
    run_dir = tmp_path / "run"
    train(TrainConfig(model_config=TINY_UNET, crop=64, epochs=1, batch_size=2, max_steps_per_epoch=1, val_data=None,
                      run_dir=str(run_dir)), progress=False)
    good = run_dir / "checkpoints" / "last.pt"
    assert load_checkpoint(good, expected_model="unet")["model"] == "unet"

    with pytest.raises(CheckpointError, match="missing.pt.*no such"):
        load_checkpoint(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(2048))
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match=path.name):
            load_checkpoint(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a mcmri_fast checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="last.pt.*of model 'unet', not of 'unet_dc'"):
        load_checkpoint(good, expected_model="unet_dc")


# ---------------------------------------------------------------------------------------------------
# torch.compile


class _ResidualConv(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, batch: dict) -> torch.Tensor:
        return batch["zero_filled"] + self.conv(batch["zero_filled"])


def _register_tiny_conv() -> str:
    name = "test_train_residual_conv"
    if name not in model_names():
        register(ModelSpec(name=name, build=_ResidualConv, config={}, loss="l1", data={"magnitude": True, "normalization": "instance"},
                           optimizer={"name": "adam", "lr": 1e-3}, schedule={"name": "none"}, epochs=1, batch_size=2,
                           trainable=True, description="a residual 3x3 convolution (tests)"))
    return name


def test_compile_runs_a_step(tmp_path):
    name = _register_tiny_conv()
    options = dict(model=name, crop=32, epochs=1, max_steps_per_epoch=2, log_every=1, val_data=None)
    train(TrainConfig(**options, run_dir=str(tmp_path / "eager")), progress=False)
    compiled = train(TrainConfig(**options, compile=True, run_dir=str(tmp_path / "compiled")), progress=False)
    eager_losses = [r["loss"] for r in _records(tmp_path / "eager", "train")]
    compiled_losses = [r["loss"] for r in _records(tmp_path / "compiled", "train")]
    assert compiled_losses == pytest.approx(eager_losses, rel=1e-4)
    # the checkpoint holds the plain module's weights (no torch.compile prefix)
    checkpoint = load_checkpoint(compiled["last_checkpoint"])
    assert set(checkpoint["state_dict"]) == {"conv.weight", "conv.bias"}
    _model_from(checkpoint)


# ---------------------------------------------------------------------------------------------------
# DistributedDataParallel


_DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from mcmri_fast.workflows.train import TrainConfig, train
    result = train(TrainConfig.load(sys.argv[1]), progress=False)
    with open(os.path.join(sys.argv[2], f"result_{os.environ['RANK']}.json"), "w") as f:
        json.dump(result, f)
""")


def test_ddp_two_processes_on_cpu(tmp_path):
    train_dir = _write_paired_volumes(tmp_path / "train", "train", [5, 4])
    val_dir = _write_paired_volumes(tmp_path / "val", "val", [3, 4, 3])  # rank 0: volumes 0 and 2, rank 1: volume 1
    run_dir = tmp_path / "run"
    config = TrainConfig(model="unet", model_config=TINY_UNET, dataset="paired_h5", train_data=str(train_dir), val_data=str(val_dir),
                         target="t2", reference="t1", epochs=2, batch_size=2, log_every=1, run_dir=str(run_dir))
    config_path = config.save(tmp_path / "config.json")
    (tmp_path / "ddp_run.py").write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(tmp_path / "ddp_run.py"), str(config_path), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = [json.loads((tmp_path / f"result_{rank}.json").read_text()) for rank in (0, 1)]

    # the ranks end with identical parameters and report the same (gathered) validation
    assert results[0]["parameter_hash"] == results[1]["parameter_hash"]
    assert results[0]["val"] == results[1]["val"]
    assert results[0]["val"]["volumes"] == 3 and results[0]["val"]["slices"] == 10

    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert checkpoint["rng"]["world_size"] == 2 and checkpoint["epoch"] == 2
    # 9 training slices, 2 ranks × batch 2: ceil(5 / 2) = 3 steps per epoch on every rank
    assert [r["step"] for r in _records(run_dir, "train")] == [1, 2, 3, 4, 5, 6]

    # one process on the same volumes with the same model gives the same per-volume metrics
    masks = MaskSampler(mask_func("random", **MASK_KWARGS), mode="volume")
    inputs = PairedH5Dataset(val_dir, masks, target="t2", reference="t1", normalization="instance")
    targets = PairedH5Dataset(val_dir, masks, target="t2", reference="t1", normalization=None)
    direct = _direct_metrics(_model_from(checkpoint), inputs, targets)
    for name in ("nmse", "psnr", "ssim", "mae"):
        assert results[0]["val"][name] == pytest.approx(np.mean([row[name] for row in direct]), rel=1e-5), name
