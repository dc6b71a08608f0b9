"""Which instruction sets the CPU paths use on this machine, and which fast path each op takes there.

Three switches cap them, each read once per process (set them before the first op runs):

- `MCMRI_FAST_CPU_ISA` = `baseline`, `avx2` or `avx512`: the library's own kernels (csrc/cpu). Unset,
  they follow ATen's capability, so `ATEN_CPU_CAPABILITY` caps both.
- `ATEN_CPU_CAPABILITY` = `default`, `avx2` or `avx512`: torch's own vector kernels.
- `ONEDNN_MAX_CPU_ISA` (e.g. `SSE41`, `AVX2`, `AVX512_CORE`): oneDNN's convolutions and matrix products.

Capping all three to AVX2 runs the library as on an AVX2-only CPU, and to the baseline as on an
x86-64 CPU without AVX2; CI runs the op and model tests both ways (`.ci/run`).
"""
from __future__ import annotations

import os

import torch

from . import _native

__all__ = ["aten_capability", "cpu_fast_paths", "isa_switches", "kernel_isa"]


def kernel_isa() -> str | None:
    """The instruction set of the library's C++ CPU kernels in this process: "avx512", "avx2" or
    "baseline" (None without the native extension). Raises ValueError for a bad MCMRI_FAST_CPU_ISA."""
    if not _native.native_loaded():
        return None
    try:
        return torch.ops.mcmri_fast.cpu_kernel_isa()
    except RuntimeError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


def aten_capability() -> str:
    """ATen's CPU capability in this process ("DEFAULT", "AVX2", "AVX512", or another architecture's)."""
    return torch.backends.cpu.get_cpu_capability()


def cpu_fast_paths() -> list[tuple[str, str]]:
    """(op, what its cpu backend runs on this machine) for every op, float32 unless stated."""
    from .ops.conv1x1 import onednn_supports
    from .ops.conv3x3 import winograd_applies

    isa = kernel_isa()
    if isa is None:
        return [("every op", f"the reference (no native extension: {_native.load_error})")]
    vector = "the AVX2 build" if isa in ("avx2", "avx512") else "the baseline build"
    probe = torch.empty(1, 64, 16, 16), torch.empty(64, 64, 3, 3)
    winograd = {"avx512": "Winograd F(4×4, 3×3) in AVX-512", "avx2": "Winograd F(4×4, 3×3) in AVX2"}
    conv3x3_path = (
        f"{winograd.get(isa, 'Winograd F(4×4, 3×3)')} (float32, Co ≥ 8, C ≥ 8, planes ≥ 8 × 8), else "
        "torch's convolution (oneDNN)"
        if winograd_applies(*probe)
        else "torch's convolution (oneDNN): no Winograd kernel for this ISA"
    )
    products = ", ".join(
        f"{str(dtype).removeprefix('torch.')}: {'oneDNN' if onednn_supports(dtype) else 'torch.matmul'}"
        for dtype in (torch.float32, torch.bfloat16)
    )
    return [
        ("data_consistency", "C++ blend (OpenMP), torch.fft"),
        ("dcm_data_consistency", "C++ pointwise passes (OpenMP), torch.fft's real transforms"),
        ("warp", "C++ bilinear sampling, rows in parallel (OpenMP), "
                 + ("8 float32 pixels a vector (AVX2 build)" if isa in ("avx2", "avx512") else "pixel by pixel (baseline build)")
                 + "; backward: scalar scatter into per-block buffers"),
        ("spectrum_to_polar, polar_to_spectrum, frequency_epilogue", f"C++ vector kernels, {vector}"),
        ("channel_attention, depthwise_channel_attention", f"C++ vector kernels, {vector}"),
        ("depthwise_conv3x3, gated_fusion, prelu", f"C++ vector kernels, {vector}"),
        ("instance_norm_leaky_relu", f"C++ vector kernels, {vector}, rows in parallel (OpenMP)"),
        ("batch_norm_relu", f"C++ vector kernels, {vector}, channels in parallel (OpenMP)"),
        ("guided_attention", f"C++ vector kernels, {vector}, rows or pixel blocks in parallel (OpenMP); its "
                             "one-channel k×k convolution and channel-max scatter in C++ loops"),
        ("conv3x3", conv3x3_path),
        ("conv1x1", f"matrix products on the planes ({products})"),
        ("unshuffle_downsample", "torch's 4×4 stride-2 convolution (oneDNN) on the composed kernel"),
    ]


def isa_switches() -> dict[str, str | None]:
    """The three capping variables as this process sees them (None: unset)."""
    return {name: os.environ.get(name) for name in ("MCMRI_FAST_CPU_ISA", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
