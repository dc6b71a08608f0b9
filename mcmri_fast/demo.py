"""The main job (`mcmri demo`): train the registered models briefly on the builtin dataset, evaluate
them against zero-filling on its test split, print the table, write the figures, and time the fused
data-consistency op against the reference.

It needs no data and no arguments, and finishes within 10 minutes on a 2-core machine without a GPU:
each trainable model trains with the budget of its registry entry (`ModelSpec.demo`: a smaller width,
fewer epochs), so the figures are a smoke-level comparison, not the papers' numbers (`mcmri train`
runs the papers' schedules). About 6 minutes on 2 cores, 3.5 of them FSMNet's.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from . import benchmarking, models
from .evaluate import evaluate
from .train import TrainConfig, resolve_device, train

logger = logging.getLogger(__name__)

# Training of each trainable model in the demo: batch 4, the paper's optimiser, DEMO_EPOCHS epochs of
# the builtin train split (74 slices), with what the model's registry entry says in `demo` (a narrower
# network, fewer epochs, another learning rate) to fit the budget of a 2-core CPU.
DEMO_BATCH = 4
DEMO_EPOCHS = 8
# The DC timing: the fastMRI knee shape, fwd+bwd with a column mask.
DEMO_DC_CASE = ("4x1x320x320", "1d", "fwd+bwd")


def _trainable_models() -> list[str]:
    return [name for name in models.model_names() if models.get_model_spec(name).trainable]


def _time_data_consistency(device: torch.device) -> list[dict]:
    shape_id, mask, mode = DEMO_DC_CASE
    shape = next(s for s in benchmarking.DC_SHAPES["paper"] if str(s) == shape_id)
    providers = [p for p in ("reference", "cpu", "triton", "cuda") if benchmarking.provider_status(p, device) is None]
    built = {p: benchmarking.build_data_consistency_case(benchmarking.DCCase(p, shape, mask, mode), device) for p in providers}
    timings = benchmarking.time_interleaved({p: b.run for p, b in built.items()}, device, min_run_time=0.5)
    reference = timings["reference"].median_s
    return [
        {"op": "data_consistency", "shape": shape_id, "mask": mask, "mode": mode, "provider": p,
         "ms": timings[p].median_s * 1e3, "speedup": reference / timings[p].median_s}
        for p in providers
    ]


def run_demo(out_dir: str | Path = "demo", *, steps_per_epoch: int | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Runs the demo, writes `<out_dir>/results.json` and `<out_dir>/results.md`, the runs under
    `<out_dir>/runs/<model>` and the evaluations (metrics.csv, summary.json, panels/) under
    `<out_dir>/eval/<model>`; prints the tables; returns the results.

    steps_per_epoch: cut each of the DEMO_EPOCHS epochs to this many steps (None: whole epochs), for
    a quicker, rougher run.
    """
    out = Path(out_dir)
    if (out / "runs").exists():
        raise ValueError(f"{out}: holds an earlier demo; give another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    torch_device = resolve_device(device)
    start = time.perf_counter()
    # zero-filling first: the baseline of the table
    results: dict = {"device": str(torch_device), "models": {"zero_filled": {}}, "ops": []}

    checkpoints = {}
    for name in _trainable_models():
        logger.info("demo: training %s", name)
        demo = models.get_model_spec(name).demo
        epochs = demo.get("epochs", DEMO_EPOCHS)
        config = TrainConfig(
            model=name, model_config=demo.get("model_config", {}), epochs=epochs, batch_size=DEMO_BATCH,
            lr=demo.get("lr"), run_dir=str(out / "runs" / name), device=device, max_steps_per_epoch=steps_per_epoch,
            val_every=epochs,
        )
        began = time.perf_counter()
        train(config, progress=progress)
        results["models"].setdefault(name, {})["train_s"] = time.perf_counter() - began
        checkpoints[name] = out / "runs" / name / "checkpoints" / "best.pt"

    for name in ["zero_filled", *checkpoints]:
        logger.info("demo: evaluating %s", name)
        model = str(checkpoints[name]) if name in checkpoints else name
        summary = evaluate(model, out / "eval" / name, device=device, progress=progress)
        results["models"].setdefault(name, {})["eval"] = summary

    logger.info("demo: timing the fused data-consistency op against the reference")
    results["ops"] = _time_data_consistency(torch_device)
    results["total_s"] = time.perf_counter() - start

    metric_rows = []
    for name, entry in results["models"].items():
        metrics = entry["eval"]["metrics"]
        metric_rows.append([name] + [f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}" for m in ("psnr", "ssim", "nmse")]
                           + [f"{entry['eval']['time_per_slice_ms']:.1f}"])
    model_table = benchmarking.format_table(["model", "PSNR (dB)", "SSIM", "NMSE", "ms/slice"], metric_rows)
    op_rows = [[r["op"], r["shape"], r["mask"], r["mode"], r["provider"], f"{r['ms']:.3f}", f"{r['speedup']:.2f}x"] for r in results["ops"]]
    op_table = benchmarking.format_table(["op", "shape", "mask", "mode", "provider", "ms", "speedup"], op_rows)
    text = (f"# mcmri demo on the builtin dataset ({results['device']}, {results['total_s']:.0f} s)\n\n"
            f"Test split, T2 target with a T1 reference, random 4x mask (cf 0.08), fastMRI metrics per volume:\n\n"
            f"{model_table}\n\nFused ops against the eager reference (interleaved timing):\n\n{op_table}\n")
    print(text)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results
