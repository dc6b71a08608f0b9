"""gated_fusion: every fused backend against the reference, autograd, registration and bad inputs."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError, backend_status
from mcmri_fast.ops.gated_fusion import gated_fusion

from fused_backends import FUSED, require_backend

# [B, C, *spatial]: 4-D and 3-D, odd sizes, C in {8, 64}; the interpreter gets the small ones only.
SHAPES = [(2, 8, 7, 9), (1, 8, 33), (1, 64, 5, 3), (2, 64, 13)]
TRITON_SHAPES = [(2, 8, 7, 9), (1, 8, 33), (1, 64, 3)]
NONFINITE = 1e-5

# The interpreter computes in numpy, which warns about the nan and inf the tests inject on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


def _inputs(shape, dtype=torch.float32, device="cpu", seed=0, inject=False):
    """a, b, gate, grad; with inject, nan and ±inf in a, b and the gate (some results non-finite)."""
    B, C, *spatial = shape
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g, dtype=torch.float64)
    b = torch.randn(shape, generator=g, dtype=torch.float64)
    gate = 3 * torch.randn((B, 2 * C, *spatial), generator=g, dtype=torch.float64)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    if inject:
        for t, value in ((a, float("inf")), (b, float("nan")), (gate, float("-inf")), (a, float("-inf")), (gate, float("nan"))):
            flat = t.view(-1)
            flat[torch.randint(flat.numel(), (max(1, flat.numel() // 20),), generator=g)] = value
    return tuple(t.to(device=device, dtype=dtype) for t in (a, b, gate, grad))


def _run(backend, a, b, gate, grad, nonfinite):
    """Output and gradients to (a, b, gate) of one backend."""
    a, b, gate = (t.detach().clone().requires_grad_() for t in (a, b, gate))
    with mcmri_fast.use_backend(backend):
        out = gated_fusion(a, b, gate, nonfinite=nonfinite)
    return (out,) + torch.autograd.grad(out, (a, b, gate), grad)


def _assert_all_close(got, expected, atol, rtol=1e-4):
    for name, x, y in zip(("out", "grad_a", "grad_b", "grad_gate"), got, expected):
        torch.testing.assert_close(x, y.to(x.dtype), atol=atol, rtol=rtol, equal_nan=True, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("nonfinite", [None, NONFINITE], ids=["plain", "nonfinite"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, nonfinite, shape):
    """float32 forward and fused backward against the reference (computed in float64), with nan and ±inf
    injected when the cleanup is on (where no cleanup runs, nan must sit where the reference has it)."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape not in TRITON_SHAPES:
        pytest.skip("the Triton interpreter gets the small shapes")
    inputs = _inputs(shape, device=device, inject=nonfinite is not None)
    got = _run(backend, *inputs, nonfinite)
    expected = _run("reference", *(t.double() for t in inputs), nonfinite)
    _assert_all_close(got, expected, atol=1e-5)
    if nonfinite is not None:
        assert torch.isfinite(got[0]).all()
        assert (got[0] == NONFINITE).any(), "the injected values should make some results non-finite"


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    inputs = _inputs((2, 8, 5, 3), dtype=torch.float64, device=device, seed=1, inject=True)
    _assert_all_close(_run(backend, *inputs, NONFINITE), _run("reference", *inputs, NONFINITE), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("nonfinite", [None, NONFINITE], ids=["plain", "nonfinite"])
def test_half_precision(backend, device, dtype, nonfinite):
    """Half inputs give half outputs and gradients close to the float32 reference on the same values."""
    require_backend(backend, device)
    inputs = _inputs((2, 8, 7, 5), dtype=dtype, device=device, seed=2, inject=nonfinite is not None)
    got = _run(backend, *inputs, nonfinite)
    assert all(t.dtype == dtype for t in got)
    expected = _run("reference", *(t.float() for t in inputs), nonfinite)
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    _assert_all_close(got, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_gradcheck(backend, device):
    """float64 gradcheck through the fused backward kernels, with and without the cleanup (fast mode,
    a random projection of the Jacobian, and a smaller shape under the slow Triton interpreter)."""
    require_backend(backend, device)
    interpreted = backend == "triton" and device == "cpu"
    a, b, gate, _ = _inputs((1, 8, 3) if interpreted else (1, 8, 3, 5), dtype=torch.float64, device=device, seed=3)
    for nonfinite in (None, NONFINITE):
        def f(a, b, gate):
            with mcmri_fast.use_backend(backend):
                return gated_fusion(a, b, gate, nonfinite=nonfinite)

        assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (a, b, gate)), fast_mode=interpreted)


def test_reference_gradcheck():
    a, b, gate, _ = _inputs((2, 8, 3, 2), dtype=torch.float64, seed=4)
    inputs = tuple(t.requires_grad_() for t in (a, b, gate))
    assert torch.autograd.gradcheck(lambda *t: reference.gated_fusion(*t), inputs)
    assert torch.autograd.gradcheck(lambda *t: reference.gated_fusion(*t, NONFINITE), inputs)


def test_reference_is_the_formula():
    """An independent check of the reference: the gate halves, and what the cleanup replaces."""
    a, b, gate, _ = _inputs((1, 2, 3), dtype=torch.float64, seed=5)
    expected = a / (1 + torch.exp(-gate[:, :2])) + b / (1 + torch.exp(-gate[:, 2:]))
    torch.testing.assert_close(reference.gated_fusion(a, b, gate), expected)
    a[0, 0, 0], b[0, 1, 2] = float("inf"), float("nan")
    out = reference.gated_fusion(a, b, gate, 0.5)
    assert out[0, 0, 0] == 0.5 and out[0, 1, 2] == 0.5


@pytest.mark.parametrize("backend,device", FUSED)
def test_cleanup_zeroes_the_gradient_where_not_finite(backend, device):
    """Where a·σ + b·σ overflows (finite inputs, infinite sum) the cleanup's gradient is zero everywhere."""
    require_backend(backend, device)
    a = torch.full((1, 1, 3), 3e38, device=device)
    b = a.clone()
    a[0, 0, 2] = b[0, 0, 2] = 1.0
    gate = torch.full((1, 2, 3), 2.0, device=device)
    out, grad_a, grad_b, grad_gate = _run(backend, a, b, gate, torch.ones_like(a), NONFINITE)
    assert out[0, 0, :2].tolist() == pytest.approx([NONFINITE] * 2)
    assert grad_a[0, 0, :2].tolist() == [0.0, 0.0] and grad_b[0, 0, :2].tolist() == [0.0, 0.0]
    assert grad_gate[0, :, :2].eq(0).all() and grad_gate[0, :, 2].ne(0).all()


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs_and_stride0_gradient(backend, device):
    require_backend(backend, device)
    a, b, gate, _ = _inputs((2, 8, 6, 5), device=device, seed=6)
    grad = torch.full((1, 1, 1, 1), 0.75, device=device).expand_as(a)  # what out.sum().backward() gives
    expected = _run("reference", a, b, gate, grad.contiguous(), NONFINITE)
    a_nc = a.transpose(-1, -2).contiguous().transpose(-1, -2)
    b_nc = torch.stack([b, torch.zeros_like(b)], dim=-1)[..., 0]
    gate_nc = gate.contiguous(memory_format=torch.channels_last)
    assert not any(t.is_contiguous() for t in (a_nc, b_nc, gate_nc)) and grad.stride() == (0, 0, 0, 0)
    _assert_all_close(_run(backend, a_nc, b_nc, gate_nc, grad, NONFINITE), expected, atol=1e-6)


@pytest.mark.parametrize("backend,device", FUSED)
def test_mixed_dtypes_are_promoted(backend, device):
    require_backend(backend, device)
    a, b, gate, grad = _inputs((1, 8, 5), device=device, seed=7)
    got = _run(backend, a.half(), b, gate.bfloat16(), grad, None)
    # out in the promoted dtype; each gradient in its input's dtype
    assert [t.dtype for t in got] == [torch.float32, torch.float16, torch.float32, torch.bfloat16]
    expected = _run("reference", a.half().float(), b, gate.bfloat16().float(), grad, None)
    _assert_all_close(got, expected, atol=1e-6)


@pytest.mark.parametrize("backend,device", FUSED)
def test_empty_inputs(backend, device):
    require_backend(backend, device)
    a, b, gate, grad = _inputs((2, 8, 0, 3), device=device)
    out, *grads = _run(backend, a, b, gate, grad, NONFINITE)
    assert out.shape == a.shape and [g.shape for g in grads] == [a.shape, b.shape, gate.shape]


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("nonfinite", [None, NONFINITE], ids=["plain", "nonfinite"])
def test_opcheck(backend, device, nonfinite):
    require_backend(backend, device)
    a, b, gate, grad = _inputs((2, 8, 3, 5), device=device, seed=8)
    # The backward op has no autograd of its own (no double backward): its inputs need no gradient.
    torch.library.opcheck(torch.ops.mcmri_fast.gated_fusion_backward.default, (grad, a, b, gate, nonfinite, backend))
    args = (a.requires_grad_(), b.requires_grad_(), gate.requires_grad_(), nonfinite, backend)
    torch.library.opcheck(torch.ops.mcmri_fast.gated_fusion.default, args)


@pytest.mark.parametrize(
    "backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")]
)
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    a, b, gate, grad = _inputs((2, 8, 6, 7), seed=9)
    inputs = tuple(t.requires_grad_() for t in (a, b, gate))

    def step(a, b, gate):
        return gated_fusion(a, b, gate, nonfinite=NONFINITE) * 2

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend=compiler)
        out = compiled(*inputs)
        got = (out,) + torch.autograd.grad(out, inputs, grad)
    expected = _run("reference", a, b, gate, 2 * grad, NONFINITE)
    _assert_all_close((got[0] / 2,) + got[1:], expected, atol=1e-5)


def test_dispatch_and_forcing():
    a, b, gate, _ = _inputs((1, 8, 4))
    expected = "cpu" if backend_status("cpu", torch.device("cpu")) is None else "reference"
    from mcmri_fast.ops.gated_fusion import _gated_fusion

    assert _gated_fusion.select(a.device) == expected
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="gated_fusion"):
        gated_fusion(a, b, gate)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda a, b, g: (a.numpy(), b, g), TypeError, "a must be a torch.Tensor"),
        (lambda a, b, g: (a.to(torch.int32), b, g), TypeError, "a must be float32"),
        (lambda a, b, g: (a, b.to(torch.complex64), g), TypeError, "b must be float32"),
        (lambda a, b, g: (a[0, 0, 0], b[0, 0, 0], g[0, 0, 0]), ValueError, r"a must be \[B, C, \*spatial\]"),
        (lambda a, b, g: (a, b[..., :-1], g), ValueError, "b must have a's shape"),
        (lambda a, b, g: (a, b, g[:, :-1]), ValueError, r"gate must be \[B, 2C, \*spatial\]"),
        (lambda a, b, g: (a, b, g[..., :-1]), ValueError, r"gate must be \[B, 2C, \*spatial\]"),
        (lambda a, b, g: (a, b.to("meta"), g), ValueError, "b must be on a's device"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    a, b, gate, _ = _inputs((1, 8, 3, 4))
    with pytest.raises(error, match=match):
        gated_fusion(*change(a, b, gate))


@pytest.mark.parametrize("nonfinite", ["1e-5", True, torch.tensor(1e-5)])
def test_bad_nonfinite_raises(nonfinite):
    a, b, gate, _ = _inputs((1, 8, 3))
    with pytest.raises(TypeError, match="nonfinite must be None or a real number"):
        gated_fusion(a, b, gate, nonfinite=nonfinite)


def test_native_ops_check_their_arguments():
    require_backend("cpu", "cpu")
    a, b, gate, grad = _inputs((1, 8, 3))
    with pytest.raises(RuntimeError, match="gate must be"):
        torch.ops.mcmri_fast.gated_fusion_fwd(a, b, gate[:, :8], None)
    with pytest.raises(RuntimeError, match="b must match a"):
        torch.ops.mcmri_fast.gated_fusion_fwd(a, b.double(), gate, None)
    with pytest.raises(RuntimeError, match="grad must match a"):
        torch.ops.mcmri_fast.gated_fusion_bwd(grad[..., :2], a, b, gate, None)
    with pytest.raises(RuntimeError, match="float32, float64"):
        torch.ops.mcmri_fast.gated_fusion_fwd(a.int(), b.int(), gate.int(), None)
