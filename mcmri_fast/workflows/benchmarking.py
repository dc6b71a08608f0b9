"""Benchmark cases and timing helpers, shared by the pytest-benchmark suite and `python -m mcmri_fast bench`.

This module is the one place that says what is benchmarked: the providers (implementations), the shapes
(the papers' sizes, and a small set for CI), the mask kinds and the modes, and how one case is built
into a zero-argument callable that runs one iteration. `benchmarks/bench_data_consistency.py` and the
CLI both build their cases here.

Providers:
    reference  the pure-PyTorch reference, eager (the baseline every speedup is measured against)
    compile    torch.compile(reference, dynamic=False), compiled and warmed before timing
    cpu, triton, cuda
               the fused backends, forced with `mcmri_fast.use_backend`; a whole network forces a
               preference (MODEL_BACKENDS), so an op without that backend takes the next one

Modes: "fwd" runs the op under torch.no_grad; "fwd+bwd" runs it and backpropagates a fixed random
complex gradient to x, k0 and the (learnable, per-channel) DC weight.

A speedup is a ratio of two medians measured in one run, never a comparison with a stored time.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import math
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
import torch.utils.benchmark

from .. import _native, models, ops, reference
from ..data.fft import fft2c, ifft2c
from ..backends import BackendUnavailableError, available_backends, backend_status, use_backend
from .common import synchronize
from .train import make_loss

logger = logging.getLogger(__name__)

__all__ = [
    "DC_SHAPES",
    "MASK_KINDS",
    "MODEL_BACKENDS",
    "MODEL_SHAPES",
    "MODES",
    "PROVIDERS",
    "SIZES",
    "BuiltCase",
    "DCCase",
    "DCShape",
    "ModelCase",
    "OpCase",
    "Timing",
    "build_data_consistency_case",
    "build_model_case",
    "column_mask",
    "data_consistency_bytes",
    "data_consistency_cases",
    "default_device",
    "device_name",
    "environment",
    "format_table",
    "kept_for_backward",
    "measured_copy_bandwidth",
    "model_cases",
    "op_cases",
    "peak_memory",
    "provider_status",
    "select",
    "throughput",
    "time_interleaved",
    "triton_version",
]

PROVIDERS = ("reference", "compile", "cpu", "triton", "cuda")
FUSED_PROVIDERS = ("cpu", "triton", "cuda")
MODES = ("fwd", "fwd+bwd")
MASK_KINDS = ("1d", "2d")
SIZES = ("paper", "small")

# Sampling of the benchmark masks: 4x acceleration with a fully sampled centre of 8% of the columns
# (fastMRI's knee setting).
ACCELERATION = 4
CENTER_FRACTION = 0.08
# The initial value of the learnable soft-DC weight.
DC_WEIGHT = 0.9


@dataclasses.dataclass(frozen=True)
class DCShape:
    """x is [batch, channels, height, width]; k0 has `channels` channels when that is 1, else 1 (shared)."""

    batch: int
    channels: int
    height: int
    width: int
    note: str = dataclasses.field(default="", compare=False)

    @property
    def k0_channels(self) -> int:
        # Multi-channel cases model IMA's embedded channels, which share one measured k-space.
        return 1 if self.channels > 1 else self.channels

    def __str__(self) -> str:
        return f"{self.batch}x{self.channels}x{self.height}x{self.width}"


DC_SHAPES: dict[str, tuple[DCShape, ...]] = {
    "paper": (
        DCShape(4, 1, 320, 320, "fastMRI knee, batch 4"),
        DCShape(1, 32, 256, 256, "IMA's embedded channels"),
        DCShape(8, 1, 256, 256, "batch 8, 256x256"),
    ),
    "small": (
        DCShape(2, 1, 32, 32, "CI smoke"),
        DCShape(1, 4, 24, 24, "CI smoke, shared k0"),
    ),
}


@dataclasses.dataclass(frozen=True)
class DCCase:
    """One data-consistency benchmark: a provider on a shape, a mask kind and a mode."""

    provider: str
    shape: DCShape
    mask: str
    mode: str

    def __post_init__(self):
        if self.provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {self.provider!r}")
        if self.mask not in MASK_KINDS:
            raise ValueError(f"mask must be one of {', '.join(MASK_KINDS)}, got {self.mask!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    @property
    def id(self) -> str:
        return f"{self.shape}-{self.mask}-{self.mode}-{self.provider}"

    @property
    def group(self) -> str:
        """The cases that are compared with each other: everything but the provider."""
        return f"data_consistency {self.shape} {self.mask} {self.mode}"


def data_consistency_cases(
    size: str = "paper",
    providers: Iterable[str] = PROVIDERS,
    masks: Iterable[str] = MASK_KINDS,
    modes: Iterable[str] = MODES,
) -> list[DCCase]:
    """All cases of a size set, grouped by (shape, mask, mode) with the providers innermost, in the order
    given: so the reference of a group runs right before the providers compared with it."""
    if size not in DC_SHAPES:
        raise ValueError(f"size must be one of {', '.join(DC_SHAPES)}, got {size!r}")
    providers, masks, modes = tuple(providers), tuple(masks), tuple(modes)
    return [
        DCCase(provider, shape, mask, mode)
        for shape, mask, mode, provider in itertools.product(DC_SHAPES[size], masks, modes, providers)
    ]


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def provider_status(provider: str, device: torch.device | str) -> str | None:
    """None when `provider` can be benchmarked on `device`, else the reason it cannot."""
    device = torch.device(device)
    if provider not in PROVIDERS:
        raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    if provider in ("reference", "compile"):
        return None
    if provider == "triton" and device.type == "cpu":
        # TRITON_INTERPRET=1 makes Triton run CPU tensors, but the interpreter is a test tool, not a target.
        return "triton runs on CUDA devices (the CPU interpreter is not benchmarked)"
    reason = backend_status(provider, device)
    if reason is not None:
        return reason
    if provider not in available_backends(device):
        return f"the {provider} backend is not available on {device.type} devices"
    return None


def column_mask(width: int, generator: torch.Generator) -> torch.Tensor:
    """A random bool column mask [width]: the centre CENTER_FRACTION of the columns fully sampled, the
    rest drawn at random up to width / ACCELERATION sampled columns in all."""
    n_center = max(1, round(width * CENTER_FRACTION))
    n_total = max(n_center, round(width / ACCELERATION))
    mask = torch.zeros(width, dtype=torch.bool)
    start = (width - n_center + 1) // 2
    mask[start : start + n_center] = True
    outside = (~mask).nonzero().flatten()
    chosen = outside[torch.randperm(outside.numel(), generator=generator)[: n_total - n_center]]
    mask[chosen] = True
    return mask


def data_consistency_bytes(shape: DCShape, mask: str, mode: str, itemsize: int = 8) -> int:
    """The bytes data consistency must move at least (complex64: itemsize 8), for a GB/s figure.

    fwd reads x, k0 and the mask and writes out. fwd+bwd adds the backward: read the incoming gradient,
    x (the weight gradient needs F x) and k0, write grad_x and grad_k0 (the weight gradient is tiny).
    """
    n_x = shape.batch * shape.channels * shape.height * shape.width * itemsize
    n_k0 = shape.batch * shape.k0_channels * shape.height * shape.width * itemsize
    n_mask = shape.width if mask == "1d" else shape.height * shape.width
    forward = 2 * n_x + n_k0 + n_mask
    if mode == "fwd":
        return forward
    backward = 3 * n_x + 2 * n_k0 + n_mask
    return forward + backward


@dataclasses.dataclass
class BuiltCase:
    """A case ready to time: `run()` performs one iteration (not synchronised: the timers do that)."""

    case: DCCase
    device: torch.device
    run: Callable[[], None]
    bytes_moved: int
    input_copies: int
    setup_s: float  # building, compiling (provider "compile") and warming up


# Inputs that fit in the GPU's L2 would be timed cache-hot, flattering the memory-bound blend. We rotate
# through enough copies of the inputs that one pass over all of them is ROTATE_L2_MULTIPLE times the L2
# size (the LRU L2 then holds nothing of the copy an iteration reads), rather than flushing L2 with a
# 256 MB write between iterations: a flush would land inside the timed loop of both timers used here,
# while the rotation costs only a Python `next`. Inputs that exceed L2 that far get one copy. The copy
# count is capped, so the smallest (CI smoke) shapes stay partly cache-resident; they measure launch
# latency, not bandwidth, anyway. CPU runs use one copy.
ROTATE_L2_MULTIPLE = 4
MAX_INPUT_COPIES = 1024


def _l2_bytes(device: torch.device) -> int:
    props = torch.cuda.get_device_properties(device)
    return int(getattr(props, "L2_cache_size", 0)) or 64 * 2**20  # older torch: assume a large L2


def _input_copies(input_bytes: int, device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return max(1, min(MAX_INPUT_COPIES, math.ceil(ROTATE_L2_MULTIPLE * _l2_bytes(device) / input_bytes)))


@functools.lru_cache(maxsize=None)
def _settle_host_allocator() -> None:
    """Puts glibc's malloc into the state a long-running training process reaches early on.

    glibc serves blocks above its mmap threshold (128 KiB at start) with fresh mmaps and gives heap memory
    back to the OS when more than twice the threshold lies free at its top; freeing an mmapped block
    raises the threshold to that block's size (up to 32 MiB). Until then every iteration of a fresh
    process pays page faults for its temporaries: the first cases of a run timed 2-3x slow on CPU
    (reference 4x1x320x320 fwd: 5-7 ms, 2.2 ms after this). Freeing one 30 MiB block sets the threshold
    as a process that has handled such tensors would have it. Harmless on other allocators.
    """
    block = torch.empty(30 * 2**20, dtype=torch.uint8)
    del block


def _make_op(provider: str, mask: torch.Tensor, centered: bool) -> Callable[..., torch.Tensor]:
    """op(x, k0, weight) for a provider; the mask is bound (public form for the fused backends, the
    reference's [1, 1, Hm, W] form for reference and compile)."""
    if provider in FUSED_PROVIDERS:

        def fused(x, k0, weight):
            with use_backend(provider):
                return ops.data_consistency(x, k0, mask, weight, centered=centered)

        return fused

    mask4d = mask.reshape(1, 1, -1, mask.shape[-1])
    if provider == "reference":
        return lambda x, k0, weight: reference.data_consistency(x, k0, mask4d, weight, centered)
    # Dynamo's cache is per code object and holds at most a few graphs, which the shapes, modes and
    # grad modes of a suite would exceed (falling back to eager without a word): start each case afresh.
    torch._dynamo.reset()
    compiled = torch.compile(reference.data_consistency, dynamic=False)
    return lambda x, k0, weight: compiled(x, k0, mask4d, weight, centered)


def build_data_consistency_case(
    case: DCCase,
    device: torch.device | str,
    *,
    seed: int = 0,
    centered: bool = True,
    warmup: int = 2,
) -> BuiltCase:
    """Builds `case` on `device`: inputs, the provider's op (compiled for "compile") and `run()`.

    Raises mcmri_fast.BackendUnavailableError when the provider cannot run on the device (see
    `provider_status`). `run()` is called `warmup` times before returning: for "compile" that compiles,
    for all providers it creates the FFT plans and warms the allocator.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    reason = provider_status(case.provider, device)
    if reason is not None:
        raise BackendUnavailableError(f"provider {case.provider!r} is unavailable on {device}: {reason}")
    _settle_host_allocator()
    start = time.perf_counter()
    shape = case.shape
    B, C, H, W = shape.batch, shape.channels, shape.height, shape.width
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, H, W, dtype=torch.complex64, generator=generator)
    k0 = torch.randn(B, shape.k0_channels, H, W, dtype=torch.complex64, generator=generator)
    grad = torch.randn(B, C, H, W, dtype=torch.complex64, generator=generator)
    columns = column_mask(W, generator)
    # The 2-D mask is the same columns spread over the rows: both paths compute the same thing, so the
    # 1d/2d pair shows what the fused column path (1-D FFTs along W) gains over the general 2-D path.
    mask = columns if case.mask == "1d" else columns.expand(H, W).contiguous()
    mask = mask.to(device)
    backward = case.mode == "fwd+bwd"
    weight = torch.full((C,), DC_WEIGHT, device=device, requires_grad=backward)

    input_bytes = sum(t.numel() * t.element_size() for t in (x, k0) + ((grad,) if backward else ()))
    copies = _input_copies(input_bytes, device)
    x, k0, grad = (t.to(device) for t in (x, k0, grad))
    inputs = [
        (
            x.clone().requires_grad_(backward),
            k0.clone().requires_grad_(backward),
            grad.clone() if backward else None,
        )
        for _ in range(copies)
    ]
    del x, k0, grad
    next_inputs = itertools.cycle(inputs).__next__
    op = _make_op(case.provider, mask, centered)

    if backward:

        def run() -> None:
            x, k0, grad = next_inputs()
            out = op(x, k0, weight)
            # autograd.grad instead of .backward(): no accumulation into .grad between iterations.
            torch.autograd.grad(out, (x, k0, weight), grad)

    else:

        def run() -> None:
            x, k0, _ = next_inputs()
            with torch.no_grad():
                op(x, k0, weight)

    for _ in range(warmup):
        run()
    synchronize(device)
    return BuiltCase(
        case=case,
        device=device,
        run=run,
        bytes_moved=data_consistency_bytes(shape, case.mask, case.mode),
        input_copies=copies,
        setup_s=time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------------
# Single ops (the suites benchmarks/bench_<op>.py)


@dataclasses.dataclass(frozen=True)
class OpCase:
    """One benchmark of a single op: a provider on an input shape in a mode. The shape is a tuple of
    sizes or an object whose str() names it (with a note, say)."""

    op: str
    shape: object
    mode: str
    provider: str

    @property
    def shape_name(self) -> str:
        return "x".join(map(str, self.shape)) if isinstance(self.shape, tuple) else str(self.shape)

    @property
    def group(self) -> str:
        return f"{self.op} {self.shape_name} {self.mode}"

    @property
    def id(self) -> str:
        return f"{self.op}-{self.shape_name}-{self.mode}-{self.provider}"


def op_cases(shapes_by_op: Mapping[str, Iterable]) -> list[OpCase]:
    """Every op x shape x mode x provider, the providers innermost with the reference first: its median
    is there when the others' speedups are measured."""
    return [
        OpCase(op, shape, mode, provider)
        for op, shapes in shapes_by_op.items()
        for shape in shapes
        for mode in MODES
        for provider in PROVIDERS
    ]


# ---------------------------------------------------------------------------------------------------
# Whole models


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """One model benchmark: a registered model (with configuration overrides) on images [B, 1, H, W].

    Providers: the fused backends run the model with the preference MODEL_BACKENDS[provider] forced;
    "reference" runs it with every op on the reference backend (eager), "compile" is
    torch.compile(fullgraph=True) of that.
    Modes: "fwd" a no-grad forward; "fwd+bwd" a training step without the optimiser (forward, the
    model's own loss, the gradients of every parameter)."""

    model: str
    config: tuple  # (key, value) pairs of configuration overrides
    shape: tuple
    mode: str
    provider: str

    @property
    def id(self) -> str:
        config = ",".join(f"{k}={v}" for k, v in self.config)
        return f"{self.model}{'[' + config + ']' if config else ''}-{'x'.join(map(str, self.shape))}-{self.mode}-{self.provider}"

    @property
    def group(self) -> str:
        return self.id.rsplit("-", 1)[0]


# The backends forced on a whole network per provider, in preference order: some ops lack some fused
# backends (conv3x3 and conv1x1 have cpu and reference only, unshuffle_downsample no triton), and forcing
# a backend an op lacks raises, so each op runs the first of these it has.
MODEL_BACKENDS: dict[str, tuple[str, ...]] = {
    "reference": ("reference",),
    "compile": ("reference",),
    "cpu": ("cpu", "reference"),
    "cuda": ("cuda", "reference"),
    "triton": ("triton", "cuda", "reference"),
}

MODEL_SHAPES: dict[str, tuple] = {
    "paper": tuple(("fsmnet", (), shape) for shape in ((1, 1, 240, 240), (4, 1, 240, 240), (4, 1, 320, 320)))
    + tuple(("ima", (), shape) for shape in ((1, 1, 256, 256), (4, 1, 256, 256), (1, 1, 320, 320)))
    + tuple(("dunsa", (), shape) for shape in ((1, 1, 256, 256), (2, 1, 256, 256)))
    + tuple((model, (), shape) for model in ("manet", "mario") for shape in ((1, 1, 256, 256), (4, 1, 256, 256))),
    "small": (
        ("fsmnet", (("channels", 8), ("heads", 2), ("resblocks", 1)), (1, 1, 32, 32)),
        ("ima", (("channels", 8), ("reference_channels", 6), ("stages", 4), ("csca_width", 6), ("csca_heads", 2)),
         (1, 1, 32, 32)),
        ("dunsa", (("stages", 2), ("width", 4)), (1, 1, 32, 32)),
        ("manet", (("channels", 8),), (2, 1, 32, 32)),
        ("mario", (("channels", 8),), (2, 1, 32, 32)),
    ),
}


def model_cases(size: str = "paper", providers: Iterable[str] = PROVIDERS, modes: Iterable[str] = MODES,
                models: Iterable[str] | None = None) -> list[ModelCase]:
    """The model cases of a size set, the providers innermost (the reference first in each group)."""
    if size not in MODEL_SHAPES:
        raise ValueError(f"size must be one of {', '.join(MODEL_SHAPES)}, got {size!r}")
    providers, modes = tuple(providers), tuple(modes)
    return [
        ModelCase(model, config, shape, mode, provider)
        for model, config, shape in MODEL_SHAPES[size]
        if models is None or model in models
        for mode in modes
        for provider in providers
    ]


def _model_batch(shape: tuple, magnitude: bool) -> dict:
    """A model case's batch (seed 0): random images, and a column mask per sample for the models with data
    consistency (the others ignore it). Magnitude models get real images, and the k-space and masked
    k-space of the target as a complex image of that real part (MANet's k-space stage); complex-image
    models (DUN-SA, MARIO) a complex target with its k-space, masked k-space and the zero-filled image
    of it."""
    generator = torch.Generator().manual_seed(0)
    batch = {key: torch.randn(shape, generator=generator) for key in ("zero_filled", "reference", "target")}
    batch["mask"] = column_mask(shape[-1], generator).expand(shape[0], -1)
    target = torch.complex(batch["target"], torch.randn(shape, generator=generator) if not magnitude else torch.zeros(shape))
    batch["kspace"] = fft2c(target)
    batch["masked_kspace"] = batch["kspace"] * batch["mask"][:, None, None, :]
    if not magnitude:
        reference = torch.complex(batch["reference"], torch.randn(shape, generator=generator))
        batch.update(target=target, reference=reference, zero_filled=ifft2c(batch["masked_kspace"]))
    # the normalisation's constants (1 and 0: the images are their own units) and the volume max that an
    # SSIM loss takes as its data range
    batch.update(scale=torch.ones(shape[0]), offset=torch.zeros(shape[0]), max=batch["target"].abs().flatten(1).amax(1))
    return batch


def build_model_case(case: ModelCase, device: torch.device | str, *, warmup: int = 1) -> tuple[Callable[[], None], float]:
    """(run, setup seconds): run() performs one step of the case, warmed up `warmup` times (compiled,
    for "compile"). Same weights (seed 0) and inputs for every provider."""
    device = torch.device(device)
    reason = provider_status(case.provider, device)
    if reason is not None:
        raise BackendUnavailableError(f"provider {case.provider!r} is unavailable on {device}: {reason}")
    _settle_host_allocator()
    start = time.perf_counter()
    torch.manual_seed(0)
    model = models.build_model(case.model, **dict(case.config)).to(device)
    loss_fn = make_loss(models.get_model_spec(case.model).loss)
    batch = {k: v.to(device) for k, v in _model_batch(case.shape, models.get_model_spec(case.model).data["magnitude"]).items()}
    backends = MODEL_BACKENDS[case.provider]
    forward = model
    if case.provider == "compile":
        torch._dynamo.reset()
        with use_backend(*backends):
            forward = torch.compile(model, dynamic=False, fullgraph=True)
    parameters = [p for p in model.parameters() if p.requires_grad]

    if case.mode == "fwd":

        def run() -> None:
            with use_backend(*backends), torch.no_grad():
                forward(batch)

    else:

        def run() -> None:
            with use_backend(*backends):
                # autograd.grad: no accumulation into .grad between iterations
                torch.autograd.grad(loss_fn(forward(batch), batch), parameters)

    for _ in range(warmup):
        run()
    synchronize(device)
    return run, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass
class Timing:
    """A measurement of one case: the median seconds per call and, on CUDA, the peak memory one call
    allocates beyond its resident inputs."""

    median_s: float
    peak_memory_bytes: int | None = None


def time_interleaved(
    runs: Mapping[str, Callable[[], None]],
    device: torch.device | str,
    *,
    min_run_time: float = 0.2,
    min_rounds: int = 5,
    block_s: float = 0.01,
    measure_memory: bool = True,
) -> dict[str, Timing]:
    """Times several implementations of one case together and returns each one's median per call.

    Rounds go round-robin over `runs`, each timing a block of calls of every implementation (enough
    calls to last `block_s`; CUDA synchronised around each block), until every implementation has
    `min_run_time` seconds of timed calls and at least `min_rounds` blocks. Interleaving makes the
    ratio of two medians robust to what a shared machine does meanwhile (a slow minute slows all
    implementations alike), which timing them one after the other is not. `run`s should be warm.
    """
    device = torch.device(device)
    calls = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        synchronize(device)
        calls[name] = max(1, int(block_s / max(time.perf_counter() - start, 1e-9)))
    samples: dict[str, list[float]] = {name: [] for name in runs}
    spent = dict.fromkeys(runs, 0.0)
    while min(spent.values()) < min_run_time or min(len(v) for v in samples.values()) < min_rounds:
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(calls[name]):
                run()
            synchronize(device)
            elapsed = time.perf_counter() - start
            spent[name] += elapsed
            samples[name].append(elapsed / calls[name])
    timings = {}
    for name, values in samples.items():
        peak = peak_memory(runs[name], device) if measure_memory and device.type == "cuda" else None
        timings[name] = Timing(median_s=statistics.median(values), peak_memory_bytes=peak)
    return timings


def peak_memory(run: Callable[[], None], device: torch.device | str) -> int | None:
    """The peak CUDA memory one call of `run` allocates beyond what was allocated before it (its outputs
    and temporaries, not the resident inputs); None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def kept_for_backward(run: Callable[[], None]) -> int:
    """The bytes autograd keeps for the backward during one call of `run`: the distinct storages of the
    tensors saved by its forward (activations, so the training memory a fused model saves, on any
    device; counted, not sampled, so the same in every run). Not for torch.compile'd runs."""
    kept = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        # held until the count is done: no freed address is reused by another saved tensor meanwhile
        kept.setdefault(tensor.untyped_storage().data_ptr(), tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(tensor.untyped_storage().nbytes() for tensor in kept.values())


@functools.lru_cache(maxsize=None)
def _copy_bandwidth(device_index: int) -> float:
    device = torch.device("cuda", device_index)
    free, _ = torch.cuda.mem_get_info(device)
    # Far beyond L2 (tens of MB) so the copy streams from DRAM; two buffers must fit comfortably.
    nbytes = min(1 << 30, free // 8)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    bandwidth = 2 * nbytes / sorted(times)[len(times) // 2]  # read + write
    logger.info("measured device-to-device copy bandwidth of cuda:%d: %.0f GB/s", device_index, bandwidth / 1e9)
    return bandwidth


def measured_copy_bandwidth(device: torch.device | str) -> float | None:
    """The device's measured copy bandwidth in bytes/s (read + write of a large device-to-device copy,
    measured once per device and cached): the roofline of a memory-bound op. None off CUDA."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    return _copy_bandwidth(device.index if device.index is not None else torch.cuda.current_device())


# ---------------------------------------------------------------------------------------------------
# Environment


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back to what platform knows
    return platform.processor() or platform.machine() or "cpu"


def triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def environment(device: torch.device | str) -> dict[str, object]:
    """What a benchmark result was measured on: device, thread count and versions."""
    device = torch.device(device)
    env: dict[str, object] = {
        "device": device_name(device),
        "device_type": device.type,
        "torch": torch.__version__,
        "triton": triton_version(),
        "cuda": torch.version.cuda,
        "native_loaded": _native.native_loaded(),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["capability"] = "sm_{}{}".format(*torch.cuda.get_device_capability(device))
    return env


def throughput(bytes_moved: int, seconds: float, device: torch.device | str) -> dict[str, float | None]:
    """GB/s for `bytes_moved` in `seconds`, and on CUDA the percentage of the measured copy bandwidth."""
    gbps = bytes_moved / seconds / 1e9
    bandwidth = measured_copy_bandwidth(device)
    return {"gb_per_s": gbps, "pct_of_bandwidth": None if bandwidth is None else 100 * gbps * 1e9 / bandwidth}


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A plain-text table: the first `text_columns` columns left-aligned, the others (numbers) right-aligned."""
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if i < text_columns else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def select(values: Sequence[str] | None, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """`values` checked against `allowed` (all of them when None), in the order of `allowed`."""
    if values is None:
        return tuple(allowed)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(unknown)}; expected some of {', '.join(allowed)}")
    return tuple(v for v in allowed if v in values)
