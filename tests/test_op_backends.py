"""Every public op under every backend: a forced backend the op has runs it (and agrees with the
reference), a forced backend it lacks for these inputs, or one that cannot run here, raises
BackendUnavailableError saying which; nothing falls back silently."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import ops
from mcmri_fast.backends import BACKENDS, BackendUnavailableError, backend_status

ALL = ("cpu", "cuda", "triton", "reference")


def _randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _mask(W, seed=0):
    mask = torch.rand(W, generator=torch.Generator().manual_seed(seed)) < 0.5
    mask[W // 2] = True
    return mask


# name → (inputs, the backends that implement the op for them). Small sizes: the Triton interpreter runs
# them too.
CASES = {
    "prelu": (lambda: ((_randn(2, 3, 4, 5), torch.rand(3)), {}), ALL),
    "gated_fusion": (lambda: ((_randn(2, 3, 4, 5), _randn(2, 3, 4, 5, seed=1), _randn(2, 6, 4, 5, seed=2)), {}), ALL),
    "depthwise_conv3x3": (lambda: ((_randn(2, 3, 6, 5), _randn(3, 1, 3, 3, seed=1), _randn(3, seed=2)), {}), ALL),
    "channel_attention": (
        lambda: ((_randn(2, 4, 5, 3), _randn(2, 4, 5, 3, seed=1), _randn(2, 4, 5, 3, seed=2), torch.ones(2), 2), {}),
        ALL,
    ),
    "depthwise_channel_attention": (
        lambda: ((_randn(1, 4, 5, 6), _randn(1, 8, 5, 6, seed=1), _randn(4, 1, 3, 3, seed=2),
                  _randn(8, 1, 3, 3, seed=3), torch.ones(2), 2), {}),
        ALL,
    ),
    "data_consistency": (
        lambda: ((_randn(1, 2, 6, 8, dtype=torch.complex64), _randn(1, 2, 6, 8, dtype=torch.complex64, seed=1),
                  _mask(8)), {}),
        ALL,
    ),
    "dunsa_data_consistency": (
        lambda: ((_randn(1, 2, 6, 8, dtype=torch.complex64), _randn(1, 2, 6, 8, dtype=torch.complex64, seed=1),
                  _mask(8), 0.5), {}),
        ALL,
    ),
    "spectrum_to_polar": (lambda: ((_randn(2, 3, 6, 4, dtype=torch.complex64),), {"signal_width": 6}), ALL),
    "polar_to_spectrum": (lambda: ((_randn(2, 3, 6, 4).abs(), _randn(2, 3, 6, 4, seed=1)), {}), ALL),
    "frequency_epilogue": (
        lambda: ((_randn(2, 3, 6, 5), _randn(4, 3, 1, 1, seed=1), _randn(4, seed=2), _randn(2, 4, 6, 5, seed=3)), {}),
        ALL,
    ),
    "dcm_data_consistency": (
        lambda: ((_randn(1, 2, 6, 8), _randn(1, 2, 6, 8, seed=1), _randn(1, 2, 6, 8, seed=2), _randn(1, 2, 6, 8, seed=3),
                  _mask(8), _mask(8, seed=1), 0.5, 0.3, 0.2), {}),
        ALL,
    ),
    "warp": (lambda: ((_randn(2, 3, 5, 6), _randn(2, 2, 5, 6, seed=1)), {}), ALL),
    "instance_norm_leaky_relu": (lambda: ((_randn(2, 3, 5, 6),), {}), ALL),
    "batch_norm_relu": (lambda: ((_randn(2, 3, 5, 6), torch.rand(3) + 0.5, _randn(3, seed=1)), {"residual": _randn(2, 3, 5, 6, seed=2)}),
                        ALL),
    "guided_attention": (
        lambda: ((_randn(2, 16, 5, 6), _randn(2, 16, 5, 6, seed=1), (_randn(1, 16, 1, 1, seed=2), _randn(16, 1, 1, 1, seed=3)),
                  _randn(1, 1, 7, 7, seed=4)), {}),
        ALL,
    ),
    # Library calls, not kernels of ours: oneDNN on the CPU; on CUDA tensors the reference (cuBLAS, cuDNN).
    "conv1x1": (lambda: ((_randn(2, 3, 4, 5), _randn(4, 3, 1, 1, seed=1), _randn(4, seed=2)), {}), ("cpu", "reference")),
    "conv3x3": (lambda: ((_randn(2, 8, 8, 9), _randn(8, 8, 3, 3, seed=1), _randn(8, seed=2)), {}), ("cpu", "reference")),
    # An algebraic rewrite on torch's convolution, for CPU and CUDA tensors alike; no Triton kernel.
    "unshuffle_downsample": (
        lambda: ((_randn(1, 3, 8, 6), _randn(4, 3, 3, 3, seed=1), _randn(5, 16, seed=2)), {}),
        ("cpu", "cuda", "reference"),
    ),
}


# Functions of ops that dispatch to no backend: one implementation in torch's tensor ops, for any device.
BACKEND_FREE = {"dcm_schedule": lambda: ((_mask(8), 6), {})}


def test_every_public_op_has_a_case():
    assert sorted([*CASES, *BACKEND_FREE]) == sorted(ops.__all__)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(BACKEND_FREE))
def test_backend_free_functions_run_under_any_forcing(name, backend):
    args, kwargs = BACKEND_FREE[name]()
    expected = getattr(ops, name)(*args, **kwargs)
    with mcmri_fast.use_backend(backend):
        torch.testing.assert_close(getattr(ops, name)(*args, **kwargs), expected)


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_forced_backend_runs_or_raises(name, backend):
    make, implemented = CASES[name]
    op = getattr(ops, name)
    args, kwargs = make()
    with mcmri_fast.use_backend("reference"):
        expected = _outputs(op(*args, **kwargs))
    reason = backend_status(backend, torch.device("cpu"))
    with mcmri_fast.use_backend(backend):
        if backend not in implemented:
            with pytest.raises(BackendUnavailableError, match=f"{name} has no {backend} implementation"):
                op(*args, **kwargs)
        elif reason is not None:
            with pytest.raises(BackendUnavailableError, match="forced but is unavailable"):
                op(*args, **kwargs)
        else:
            got = _outputs(op(*args, **kwargs))
            for g, e in zip(got, expected, strict=True):
                torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_preference_runs_the_first_backend_the_op_has(name):
    """use_backend("triton", "reference"): the ops without a Triton implementation run the reference."""
    make, implemented = CASES[name]
    args, kwargs = make()
    with mcmri_fast.use_backend("triton", "reference"):
        getattr(ops, name)(*args, **kwargs)
