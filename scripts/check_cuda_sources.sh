#!/usr/bin/env bash
# Compile-checks every CUDA source (csrc/cuda/*.cu) with nvcc for sm_80, sm_86 and sm_90, as the
# extension's build compiles it (torch's nvcc flags and headers), on a machine without a GPU. A CPU
# build of torch ships the c10/cuda headers but not the one CMake writes for CUDA builds,
# c10/cuda/impl/cuda_cmake_macros.h: a stand-in is put on the include path. Files run two at a time.
# Usage: scripts/check_cuda_sources.sh [file.cu ...]   (default: every csrc/cuda/*.cu)
set -euo pipefail
cd "$(dirname "$0")/.."
stub=$(mktemp -d)
trap 'rm -rf "$stub"' EXIT
mkdir -p "$stub/c10/cuda/impl"
printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$stub/c10/cuda/impl/cuda_cmake_macros.h"
flags=$(python -c "
from torch.utils import cpp_extension as c
print(' '.join(c.COMMON_NVCC_FLAGS + ['-I' + p for p in c.include_paths()]))")
files=("$@")
[ ${#files[@]} -gt 0 ] || files=(csrc/cuda/*.cu)
check() {
  # shellcheck disable=SC2086
  nvcc -std=c++20 -c "$1" -o /dev/null -Xcompiler -Wall -DMCMRI_FAST_WITH_CUDA=1 -I"$stub" $flags \
    -gencode arch=compute_80,code=sm_80 -gencode arch=compute_86,code=sm_86 -gencode arch=compute_90,code=sm_90 \
    && echo "ok  $1"
}
export -f check
export stub flags
printf '%s\n' "${files[@]}" | xargs -P 2 -I{} bash -c 'check "$@"' _ {}
