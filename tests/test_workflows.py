"""The `mcmri` command: train → eval → recon through the CLI, bad input, and the U-Net baseline
against zero-filling on the builtin test split (small sizes: a cropped, narrow U-Net)."""
import json
import re
import subprocess
import sys

import h5py
import pytest
import torch

from mcmri_fast.models import get_model_spec
from mcmri_fast.workflows import cli
from mcmri_fast.workflows.evaluate import evaluate
from mcmri_fast.workflows.train import TrainConfig, train

TINY = ["--set", "chans=4", "--set", "num_pool_layers=2", "--crop", "64", "--batch-size", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def _run(args, capsys):
    code = cli.main(["-q", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_eval_recon_through_the_cli(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _run(["train", "--model", "unet", *TINY, "--epochs", "2", "--max-steps-per-epoch", "3",
                           "--run-dir", str(run)], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["epoch"] == 2
    assert (run / "checkpoints" / "best.pt").exists() and (run / "config.json").exists()
    config = json.loads((run / "config.json").read_text())
    assert config["model_config"] == {"chans": 4, "num_pool_layers": 2} and config["crop"] == 64

    code, out, err = _run(["eval", "--model", str(run / "checkpoints" / "best.pt"), "--out", str(tmp_path / "eval"),
                           "--slices", "0"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["metrics"]["psnr"]["mean"] > 0
    assert (tmp_path / "eval" / "metrics.csv").exists() and list((tmp_path / "eval" / "panels").glob("*.png"))

    code, out, err = _run(["recon", "--checkpoint", str(run / "checkpoints" / "last.pt"), "--model", "unet",
                           "--out", str(tmp_path / "recon")], capsys)
    assert code == 0, err
    files = out.split()
    assert files
    with h5py.File(files[0]) as f:
        assert f["reconstruction"].ndim == 3 and f["reconstruction"].shape[1:] == (64, 64)

    # resume the same run for one more epoch
    code, out, err = _run(["train", "--run-dir", str(run), "--resume", "--epochs", "3"], capsys)
    assert code == 0, err
    assert json.loads(out)["epoch"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--model", "no_such_model"], "no_such_model"),
        (["eval", "--model", "no_such_model", "--out", "{tmp}/e"], "no_such_model"),
        (["train", "--dataset", "paired_h5", "--train-data", "{tmp}/missing", "--target", "t2", "--reference", "t1"], "missing"),
        (["eval", "--model", "{tmp}/corrupt.pt", "--out", "{tmp}/e"], "corrupt.pt"),
        (["train", "--config", "{tmp}/missing.json"], "missing.json"),
        (["train", "--set", "chans"], "KEY=VALUE"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code, _, err = _run(args, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("mcmri: error:")


@pytest.mark.parametrize("content", [b"", b".", b"\x80\x02]q\x00a.", b"not a checkpoint", b"PK\x03\x04" + bytes(200)])
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(tmp_path, capsys, content):
    """torch.load's own errors for these ("pop from empty list", "list index out of range", "Unsupported
    operand 110", a miniz error) say nothing about the file: one line says what it is."""
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    code, _, err = _run(["eval", "--model", str(path), "--out", str(tmp_path / "e")], capsys)
    assert code == 2
    assert err == f"mcmri: error: {path}: not a readable checkpoint: the file ({len(content)} bytes) is corrupt, " \
                  "truncated or not a torch.save file\n"


@pytest.mark.parametrize("quiet", [False, True])
def test_training_progress_shows_on_a_terminal_unless_quiet(tmp_path, monkeypatch, capsys, quiet):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # capsys's stderr stands in for a terminal
    args = ["train", "--model", "unet", *TINY, "--epochs", "1", "--max-steps-per-epoch", "2", "--run-dir", str(tmp_path / "r")]
    assert cli.main(["-q", *args] if quiet else args) == 0
    err = capsys.readouterr().err
    bars = re.search(r"epoch 1/1: +\d+%\|", err) and re.search(r"validation: +\d+%\|", err)  # tqdm's "desc: 50%|"
    assert bool(bars) != quiet, err


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path, capsys):
    args = ["train", "--model", "unet", *TINY, "--epochs", "1", "--max-steps-per-epoch", "2", "--run-dir", str(tmp_path / "r")]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and not re.search(r"\d+%\|", err), err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_request_without_cuda(tmp_path, capsys):
    code, _, err = _run(["train", "--device", "cuda", "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and "cuda" in err.lower() and "Traceback" not in err


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert _run(["train", "--model", "unet", *TINY, "--epochs", "1", "--max-steps-per-epoch", "1", "--run-dir", str(run)], capsys)[0] == 0
    code, _, err = _run(["eval", "--model", "unet_dc", "--checkpoint", str(run / "checkpoints" / "last.pt"),
                         "--out", str(tmp_path / "e")], capsys)
    assert code == 2 and "last.pt" in err and "unet" in err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "mcmri_fast", "train", "--model", "nope"], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 2 and "mcmri: error:" in result.stderr and "nope" in result.stderr


def test_unet_beats_zero_filling_on_the_builtin_test_split(tmp_path):
    """The U-Net baseline with the demo's model (half width, 3 pooling levels), trained for 4 epochs of
    the builtin train split (the demo trains 8), reconstructs the held-out test split better than
    zero-filling by PSNR and by SSIM (fastMRI definitions, per volume). About a minute on one core."""
    from mcmri_fast.workflows.demo import DEMO_BATCH

    demo_config = get_model_spec("unet").demo["model_config"]
    config = TrainConfig(model="unet", model_config=dict(demo_config), epochs=4, batch_size=DEMO_BATCH,
                         run_dir=str(tmp_path / "run"), val_data=None, device="cpu")
    result = train(config, progress=False)
    unet = evaluate(result["last_checkpoint"], tmp_path / "eval-unet", slices_to_plot=(), progress=False)
    zero_filled = evaluate("zero_filled", tmp_path / "eval-zf", slices_to_plot=(), progress=False)
    for metric in ("psnr", "ssim"):
        assert unet["metrics"][metric]["mean"] > zero_filled["metrics"][metric]["mean"], (metric, unet["metrics"], zero_filled["metrics"])


def test_demo_runs_end_to_end(tmp_path, capsys):
    """`mcmri demo`, cut to one step per epoch: every registered model trained and evaluated, the
    tables printed, the results and panels written. (The full demo, as the README runs it, takes
    about 6 minutes on 2 cores; its figures are in BENCHMARKS.md.)"""
    from mcmri_fast import models

    code, out, err = _run(["demo", "--out", str(tmp_path / "demo"), "--steps-per-epoch", "1"], capsys)
    assert code == 0, err
    assert "zero_filled" in out and "data_consistency" in out
    assert "Test split: 1 volume, 16 slices" in out and "±" not in out  # the builtin test split is one brain
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    trained = [n for n in models.model_names() if models.get_model_spec(n).trainable]
    # and zero-filling of the noisy measurements of the models trained with k-space noise (MANet's 10%)
    noisy = {f"zero_filled_noise{models.get_model_spec(n).data['noise']:g}" for n in trained
             if models.get_model_spec(n).data.get("noise")}
    assert noisy and set(results["models"]) == {"zero_filled", *trained, *noisy}
    for name in results["models"]:
        assert list((tmp_path / "demo" / "eval" / name / "panels").glob("*.png"))
    assert {row["provider"] for row in results["ops"]} >= {"reference"}
    code, _, err = _run(["demo", "--out", str(tmp_path / "demo")], capsys)  # an earlier demo is not overwritten
    assert code == 2 and "earlier demo" in err


def _step_losses(run_dir) -> dict:
    """(epoch, step) -> loss of a run's metrics.jsonl training lines (the last line of a step wins: a
    killed run's partial epoch is logged again after its resume)."""
    losses = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("kind") == "train":
            losses[(record["epoch"], record["step"])] = record["loss"]
    return losses


def test_kill_and_resume_repeat_the_uninterrupted_run(tmp_path, capsys):
    """A run killed (SIGKILL) after its first checkpoint and resumed gives the losses of an
    uninterrupted run, step by step, from the checkpoint on."""
    import os
    import signal
    import time

    options = ["--model", "unet", *TINY, "--epochs", "10", "--max-steps-per-epoch", "4", "--val-data", "none",
               "--log-every", "1", "--seed", "3"]
    assert _run(["train", *options, "--run-dir", str(tmp_path / "whole")], capsys)[0] == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "mcmri_fast", "-q", "train", *options, "--run-dir", str(killed)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "last.pt").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    from mcmri_fast.workflows.common import load_checkpoint

    assert load_checkpoint(killed / "checkpoints" / "last.pt")["epoch"] < 10, "the run ended before it was killed"

    code, _, err = _run(["train", "--run-dir", str(killed), "--resume"], capsys)
    assert code == 0, err
    whole, resumed = _step_losses(tmp_path / "whole"), _step_losses(killed)
    assert len(whole) == 40 and resumed.keys() == whole.keys()
    assert resumed == whole


def _summary(volumes: int, psnr: float, std: float) -> dict:
    return {"volumes": volumes, "slices": 16 * volumes, "time_per_slice_ms": 12.34,
            "metrics": {m: {"mean": psnr if m == "psnr" else 0.5, "std": std} for m in ("nmse", "psnr", "ssim", "mae")}}


def test_demo_table_shows_a_spread_only_over_several_volumes():
    from mcmri_fast.workflows.demo import _split_line, model_table

    one = model_table({"zero_filled": _summary(1, 24.9224, 0.0), "unet": _summary(1, 26.5, 0.0)})
    lines = one.splitlines()
    assert lines[0].split() == ["model", "PSNR", "(dB)", "SSIM", "NMSE", "ms/slice"]
    assert lines[2].split() == ["zero_filled", "24.9224", "0.5000", "0.5000", "12.3"] and "±" not in one
    several = model_table({"unet": _summary(3, 26.5, 0.25)})
    assert several.splitlines()[2].split() == ["unet", "26.5000", "±", "0.2500", "0.5000", "±", "0.2500", "0.5000", "±",
                                               "0.2500", "12.3"]
    assert "1 volume, 16 slices" in _split_line(_summary(1, 0, 0)) and "no spread" in _split_line(_summary(1, 0, 0))
    assert "3 volumes, 48 slices" in _split_line(_summary(3, 0, 0)) and "mean ± std" in _split_line(_summary(3, 0, 0))
