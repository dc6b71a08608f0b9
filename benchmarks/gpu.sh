#!/usr/bin/env bash
# Everything a GPU machine has to prove, in one run: build the extension for this GPU, run the whole
# test suite (the `cuda` tests included), run the benchmarks, and leave the results under $OUT
# (default ./gpu-results): info.txt, build.log, tests.log, bench.log, bench.json, bench_table.txt.
# Works offline against the torch, triton, pybind11 and ninja already installed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0

capability=$(python3 -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())") || exit 1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$capability}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

echo "== build for sm_$capability"
python3 -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
python3 -m mcmri_fast info | tee "$OUT/info.txt"

echo "== tests"
python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -25
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmarks (pytest-benchmark)"
python3 -m pytest benchmarks -q -p no:cacheprovider --benchmark-json "$OUT/bench.json" "$@" >"$OUT/bench.log" 2>&1
[ $? -eq 0 ] || { status=1; tail -40 "$OUT/bench.log"; }

echo "== benchmark table"
python3 -m mcmri_fast bench --device cuda 2>&1 | tee "$OUT/bench_table.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
exit $status
