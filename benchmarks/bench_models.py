"""Benchmarks of whole models: the network with its fused ops (cpu, triton, cuda backends) against the
same network, same weights, on the reference ops (eager) and torch.compile of that; fwd and fwd+bwd.

"fwd" is a no-grad forward pass; "fwd+bwd" a training step without the optimiser: forward, the
model's own loss, and the gradients of every parameter. extra_info holds the speedup over the
reference measured in this session and, on CUDA, the peak memory of one step beyond the resident
model and inputs (for training memory: fwd+bwd). The paper shapes of a 240 x 240 model take tens of
seconds per step on a CPU: run them with -k to pick cases (see BENCHMARKS.md for the commands).
"""
import dataclasses
import math
import time

import pytest
import torch

from mcmri_fast import benchmarking, use_backend
from mcmri_fast.models import build_model, get_model_spec

MIN_ROUND_S = 1e-3
MIN_ROUNDS = 3
ESTIMATE_S = 0.05


@dataclasses.dataclass(frozen=True)
class ModelCase:
    model: str
    config: tuple  # (key, value) pairs of the model's configuration overrides
    shape: tuple  # [B, 1, H, W] of the images
    mode: str
    provider: str

    @property
    def id(self) -> str:
        config = ",".join(f"{k}={v}" for k, v in self.config)
        return f"{self.model}{'[' + config + ']' if config else ''}-{'x'.join(map(str, self.shape))}-{self.mode}-{self.provider}"

    @property
    def group(self) -> str:
        return self.id.rsplit("-", 1)[0]


MODEL_SHAPES = {
    "paper": [("fsmnet", (), shape) for shape in ((1, 1, 240, 240), (4, 1, 240, 240), (4, 1, 320, 320))],
    "small": [("fsmnet", (("channels", 8), ("heads", 2), ("resblocks", 1)), (1, 1, 32, 32))],
}


def pytest_generate_tests(metafunc):
    if "model_case" in metafunc.fixturenames:
        cases = [
            ModelCase(model, config, shape, mode, provider)
            for model, config, shape in MODEL_SHAPES[metafunc.config.getoption("bench_size")]
            for mode in benchmarking.MODES
            for provider in benchmarking.PROVIDERS
        ]
        metafunc.parametrize("model_case", cases, ids=[case.id for case in cases])


def _build(case: ModelCase, device: torch.device):
    """run() of one step of the case, warmed up (compiled for "compile")."""
    torch.manual_seed(0)
    model = build_model(case.model, **dict(case.config)).to(device)
    loss_fn = get_model_spec(case.model).loss
    generator = torch.Generator().manual_seed(0)
    batch = {key: torch.randn(case.shape, generator=generator).to(device) for key in ("zero_filled", "reference", "target")}
    backend = "reference" if case.provider in ("reference", "compile") else case.provider
    forward = model
    if case.provider == "compile":
        torch._dynamo.reset()
        forward = torch.compile(model, dynamic=False, fullgraph=True)
    parameters = [p for p in model.parameters() if p.requires_grad]

    if case.mode == "fwd":

        def run():
            with use_backend(backend), torch.no_grad():
                forward(batch)

    else:

        def run():
            with use_backend(backend):
                # autograd.grad: no accumulation into .grad between iterations
                torch.autograd.grad(loss_fn(forward(batch), batch), parameters)

    start = time.perf_counter()
    for _ in range(2):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return run, time.perf_counter() - start


def test_model(benchmark, model_case, bench_device, bench_time, reference_medians):
    reason = benchmarking.provider_status(model_case.provider, bench_device)
    if reason is not None:
        pytest.skip(reason)
    run, setup_s = _build(model_case, bench_device)
    if bench_device.type == "cuda":

        def timed():
            run()
            torch.cuda.synchronize()

    else:
        timed = run

    calls, start = 0, time.perf_counter()
    while calls < 1 or time.perf_counter() - start < ESTIMATE_S:
        timed()
        calls += 1
    one_call = (time.perf_counter() - start) / calls
    iterations = max(1, math.ceil(MIN_ROUND_S / one_call))
    rounds = max(MIN_ROUNDS, math.ceil(bench_time / (one_call * iterations)))

    benchmark.group = model_case.group
    benchmark.extra_info.update(
        model=model_case.model, config=dict(model_case.config), shape="x".join(map(str, model_case.shape)),
        mode=model_case.mode, provider=model_case.provider, setup_s=round(setup_s, 3),
        **benchmarking.environment(bench_device),
    )
    benchmark.pedantic(timed, rounds=rounds, iterations=iterations)
    if not benchmark.enabled:
        return
    median = benchmark.stats.stats.median
    peak = benchmarking.peak_memory(run, bench_device)
    if peak is not None:
        benchmark.extra_info["peak_mem_mb"] = peak / 2**20
    if model_case.provider == "reference":
        reference_medians[model_case.group] = median
    elif model_case.group in reference_medians:
        benchmark.extra_info["speedup_vs_reference"] = reference_medians[model_case.group] / median
