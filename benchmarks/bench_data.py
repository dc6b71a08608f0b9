"""DataLoader throughput of the slice datasets: slices per second over one epoch, 0 and 2 workers.

Sources: the builtin dataset (256 × 256, T2 target with a T1 reference) and synthetic fastMRI
single-coil knee pairs written in the exact fastMRI layout (k-space 640 × 368, images cropped to 320 ×
320, the FSMNet pipeline). Every item runs the whole pipeline: mask (per sample), undersampling, FFTs,
crop, misalignment of the reference, noise, normalisation. extra_info holds slices_per_s. A loader is
no bottleneck when it delivers slices faster than the training step consumes them.
"""
import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mcmri_fast.data.datasets import BuiltinDataset, FastMRIPairDataset
from mcmri_fast.data.masks import mask_func

# The writer of fastMRI-layout files that the tests use: one definition of that layout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_files import random_kspace, write_fastmri_singlecoil  # noqa: E402

SIZES = {  # per --bench-size: (fastMRI k-space [H, W], crop, volumes, slices per volume, builtin split)
    "paper": ((640, 368), 320, 4, 8, "train"),
    "small": ((64, 48), 32, 2, 2, "val"),
}
BATCH = 4
OPTIONS = dict(misalignment=0.5, noise=0.05)


@pytest.fixture(scope="module")
def fastmri_pairs(tmp_path_factory, pytestconfig):
    shape, crop, volumes, slices, _ = SIZES[pytestconfig.getoption("bench_size")]
    root = tmp_path_factory.mktemp("fastmri")
    rng = np.random.default_rng(0)
    rows = []
    for v in range(volumes):
        names = (f"file{v}_pd.h5", f"file{v}_pdfs.h5")
        for name, acquisition in zip(names, ("CORPD_FBK", "CORPDFS_FBK")):
            write_fastmri_singlecoil(root / name, random_kspace(rng, (slices, *shape)), recon_size=crop, acquisition=acquisition)
        rows.append(names)
    with open(root / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows([("pd_file", "pdfs_file"), *rows])
    return root, crop


def _dataset(source, size, fastmri_pairs):
    masks = mask_func("random", center_fractions=[0.08], accelerations=[4])
    if source == "builtin":
        return BuiltinDataset(SIZES[size][4], masks, **OPTIONS)
    root, crop = fastmri_pairs
    return FastMRIPairDataset(root / "pairs.csv", root, masks, crop=crop, **OPTIONS)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("source", ["builtin", "fastmri"])
def test_dataloader(benchmark, source, workers, fastmri_pairs, pytestconfig):
    size = pytestconfig.getoption("bench_size")
    dataset = _dataset(source, size, fastmri_pairs)
    # batch_size 4 even for fastMRI: the synthetic volumes share one k-space size
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=BATCH, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(0),
    )

    def epoch():
        for _ in loader:
            pass

    epoch()  # starts the workers and warms the caches
    benchmark.group = f"dataloader {source}"
    benchmark.pedantic(epoch, rounds=3, iterations=1)
    if not benchmark.enabled:  # --benchmark-disable: the epoch ran once, as a smoke test
        return
    slices_per_s = len(dataset) / benchmark.stats.stats.median
    benchmark.extra_info.update(source=source, workers=workers, slices=len(dataset), slices_per_s=slices_per_s,
                                torch_threads=torch.get_num_threads())
    print(f"\n{source} workers={workers}: {slices_per_s:.1f} slices/s over {len(dataset)} slices")
