"""The main job (`mcmri demo`): train the registered models briefly on the builtin dataset, evaluate
them against zero-filling on its test split, print the table, write the figures, and time the fused
data-consistency op against the reference.

It needs no data and no arguments, and finishes within 15 minutes on a 2-core machine without a GPU:
each trainable model trains with the budget of its registry entry (`ModelSpec.demo`: a smaller width,
fewer epochs), so the figures are a smoke-level comparison, not the papers' numbers (`mcmri train`
runs the papers' schedules). Each model is validated every epoch and evaluated at its best epoch. The
builtin test split is one brain, one volume: the table gives each metric of it, no ± over volumes.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from .. import models
from . import benchmarking
from ._progress import progress_bar
from .common import resolve_device
from .evaluate import evaluate
from .train import TrainConfig, train

logger = logging.getLogger(__name__)

# Training of each trainable model in the demo: batch 4, the paper's optimiser, DEMO_EPOCHS epochs of
# the builtin train split (74 slices), with what the model's registry entry says in `demo` (a narrower
# network, fewer epochs, another learning rate) to fit the budget of a 2-core CPU.
DEMO_BATCH = 4
DEMO_EPOCHS = 4
# The DC timing: the fastMRI knee shape, fwd+bwd with a column mask.
DEMO_DC_CASE = ("4x1x320x320", "1d", "fwd+bwd")


def _split_line(summary: dict) -> str:
    """What the table's figures are of: the test split's size, and whether they carry a spread."""
    volumes, slices = summary["volumes"], summary["slices"]
    if volumes > 1:
        return f"Test split: {volumes} volumes, {slices} slices; fastMRI metrics per volume, mean ± std over the volumes."
    return (f"Test split: 1 volume, {slices} slices (the builtin dataset is one brain, so there is no spread over "
            f"volumes to show); fastMRI metrics of the volume.")


def model_table(summaries: dict[str, dict]) -> str:
    """The demo's table of evaluations: one row per model (`evaluate`'s summaries, by model name) with
    PSNR, SSIM and NMSE and the reconstruction time per slice. A metric reads "mean ± std" over the
    volumes of the split, or the one volume's value alone: a standard deviation over one volume is 0
    by definition, not a measured spread."""
    rows = []
    for name, summary in summaries.items():
        metrics = summary["metrics"]
        if summary["volumes"] > 1:
            cells = [f"{metrics[m]['mean']:.4f} ± {metrics[m]['std']:.4f}" for m in ("psnr", "ssim", "nmse")]
        else:
            cells = [f"{metrics[m]['mean']:.4f}" for m in ("psnr", "ssim", "nmse")]
        rows.append([name, *cells, f"{summary['time_per_slice_ms']:.1f}"])
    return benchmarking.format_table(["model", "PSNR (dB)", "SSIM", "NMSE", "ms/slice"], rows)


def _trainable_models() -> list[str]:
    return [name for name in models.model_names() if models.get_model_spec(name).trainable]


def _time_data_consistency(device: torch.device, progress: bool) -> list[dict]:
    shape_id, mask, mode = DEMO_DC_CASE
    shape = next(s for s in benchmarking.DC_SHAPES["paper"] if str(s) == shape_id)
    providers = [p for p in ("reference", "cpu", "triton", "cuda") if benchmarking.provider_status(p, device) is None]
    built = {}
    bar = progress_bar(progress, total=len(providers) + 1, desc="timing data_consistency", unit="phase")
    try:
        for provider in providers:  # building warms each one up: a compile or a first CUDA call can take a while
            bar.set_postfix_str(f"building {provider}")
            built[provider] = benchmarking.build_data_consistency_case(benchmarking.DCCase(provider, shape, mask, mode), device)
            bar.update(1)
        bar.set_postfix_str("timing, interleaved")
        timings = benchmarking.time_interleaved({p: b.run for p, b in built.items()}, device, min_run_time=0.5)
        bar.update(1)
    finally:
        bar.close()
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
        )  # validated every epoch (a second or a few): best.pt is the best epoch's, not just the last one
        began = time.perf_counter()
        train(config, progress=progress)
        results["models"].setdefault(name, {})["train_s"] = time.perf_counter() - began
        checkpoints[name] = out / "runs" / name / "checkpoints" / "best.pt"

    for name in ["zero_filled", *checkpoints]:
        logger.info("demo: evaluating %s", name)
        model = str(checkpoints[name]) if name in checkpoints else name
        summary = evaluate(model, out / "eval" / name, device=device, progress=progress)
        results["models"].setdefault(name, {})["eval"] = summary
    # a model that trains with k-space noise (MANet's default) is scored on noisy measurements: zero-filling
    # of the same noisy data is its baseline, beside the clean one
    noise_levels = sorted({results["models"][name]["eval"]["data"].get("noise", 0.0) for name in checkpoints} - {0.0})
    for level in noise_levels:
        name = f"zero_filled_noise{level:g}"
        logger.info("demo: evaluating %s", name)
        summary = evaluate("zero_filled", out / "eval" / name, device=device, progress=progress, noise=level)
        results["models"][name] = {"eval": summary}

    logger.info("demo: timing the fused data-consistency op against the reference")
    results["ops"] = _time_data_consistency(torch_device, progress)
    results["total_s"] = time.perf_counter() - start

    op_rows = [[r["op"], r["shape"], r["mask"], r["mode"], r["provider"], f"{r['ms']:.3f}", f"{r['speedup']:.2f}x"] for r in results["ops"]]
    op_table = benchmarking.format_table(["op", "shape", "mask", "mode", "provider", "ms", "speedup"], op_rows)
    summaries = {name: entry["eval"] for name, entry in results["models"].items()}
    conditions = [f"{name} trains and is evaluated with the reference misaligned at σ = {summary['data']['misalignment']:g}"
                  for name, summary in summaries.items() if summary["data"].get("misalignment")]
    conditions += [f"{name} trains and is evaluated with k-space noise at {summary['data']['noise']:.0%} of the mean "
                   f"intensity (zero_filled_noise{summary['data']['noise']:g}: zero-filling of those measurements)"
                   for name, summary in summaries.items() if name in checkpoints and summary["data"].get("noise")]
    text = (f"# mcmri demo on the builtin dataset ({results['device']}, {results['total_s']:.0f} s)\n\n"
            f"{_split_line(summaries['zero_filled'])} T2 target with a T1 reference, random 4x mask (cf 0.08)"
            f"{' (' + '; '.join(conditions) + ', their defaults)' if conditions else ''}:\n\n"
            f"{model_table(summaries)}\n\nFused ops against the eager reference (interleaved timing):\n\n{op_table}\n")
    print(text)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results
