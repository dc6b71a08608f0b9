"""DUN-SA against its alignment=False ablation and zero-filling on the builtin data with a misaligned
reference, at the demo's budget: the table of BENCHMARKS.md ("DUN-SA on the builtin data with a
misaligned reference"). Usage: python scripts/dunsa_alignment.py SIGMA [OUT_DIR] (about 6 minutes on
2 CPU cores per σ)."""
import sys
import time

from mcmri_fast import models
from mcmri_fast.workflows.demo import DEMO_BATCH
from mcmri_fast.workflows.evaluate import evaluate
from mcmri_fast.workflows.train import TrainConfig, train


def main(sigma: float, out: str) -> None:
    demo = models.get_model_spec("dunsa").demo
    for name, alignment in (("dunsa", True), ("dunsa-without-sa", False)):
        run = f"{out}/s{sigma:g}-{name}"
        began = time.perf_counter()
        train(TrainConfig(model="dunsa", model_config={**demo["model_config"], "alignment": alignment},
                          epochs=demo["epochs"], batch_size=DEMO_BATCH, lr=demo["lr"], misalignment=sigma, run_dir=run,
                          device="cpu"), progress=False)
        trained = time.perf_counter() - began
        summary = evaluate(f"{run}/checkpoints/best.pt", f"{run}/eval", device="cpu", slices_to_plot=(), progress=False)
        metrics = summary["metrics"]
        print(f"σ = {sigma:g} {name}: {metrics['psnr']['mean']:.2f} dB, SSIM {metrics['ssim']['mean']:.3f}, trained in {trained:.0f} s",
              flush=True)
    summary = evaluate("zero_filled", f"{out}/zero_filled", device="cpu", slices_to_plot=(), progress=False)
    print(f"zero_filled: {summary['metrics']['psnr']['mean']:.2f} dB, SSIM {summary['metrics']['ssim']['mean']:.3f}")


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "runs/dunsa-alignment")
