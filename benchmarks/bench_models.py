"""Benchmarks of whole models: the network with its fused ops (cpu, triton, cuda backends) against the
same network, same weights, on the reference ops (eager) and torch.compile of that; fwd and fwd+bwd.

"fwd" is a no-grad forward pass; "fwd+bwd" a training step without the optimiser: forward, the
model's own loss, and the gradients of every parameter. The `measure` fixture (conftest.py) times
them; extra_info holds the speedup over the reference measured in this session, on CUDA the peak
memory of one step beyond the resident model and inputs (for training memory: fwd+bwd), and for
fwd+bwd on any device kept_mb, the activations autograd keeps for the backward (not for compile). The
paper shapes of a 240 x 240 model take seconds to tens of seconds per step on a CPU: pick cases with
-k, or time the providers interleaved with `python -m mcmri_fast bench --model fsmnet` (BENCHMARKS.md
has the commands).
"""
import pytest

from mcmri_fast.workflows import benchmarking

cases = benchmarking.model_cases  # parametrises `case` (benchmarks/conftest.py)


def test_model(case, bench_device, measure):
    try:
        run, setup_s = benchmarking.build_model_case(case, bench_device)
    except Exception as error:
        if case.provider != "compile":
            raise
        # Inductor does not compile every network (FSMNet's reference backward once failed on complex
        # gradients, see reference.spectrum_to_polar): the other providers are still timed.
        pytest.skip(f"torch.compile of the reference network failed: {type(error).__name__}: {str(error).splitlines()[0]}")
    extra_info = dict(model=case.model, config=dict(case.config), shape="x".join(map(str, case.shape)))
    if case.mode == "fwd+bwd" and case.provider != "compile":
        extra_info["kept_mb"] = benchmarking.kept_for_backward(run) / 2**20
    # One warm step suffices to estimate the cost of a step: a paper-size step takes seconds on a CPU.
    measure(run, setup_s=setup_s, extra_info=extra_info, min_estimate_calls=1)
