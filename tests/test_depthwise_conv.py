"""depthwise_conv3x3: every fused backend against the reference, autograd, registration and bad inputs."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError, backend_status
from mcmri_fast.ops.depthwise_conv import depthwise_conv3x3

from fused_backends import FUSED, require_backend

# [B, C, H, W]: H, W in 1, 2, 3, odd and even (wider than a vector, with a tail), C in 1, 8, 64; the
# interpreter gets the small ones only.
SHAPES = [(2, 8, 1, 1), (1, 8, 2, 3), (2, 1, 3, 2), (2, 8, 7, 9), (1, 64, 5, 20), (3, 8, 16, 33), (1, 1, 19, 1)]
TRITON_SHAPES = [(2, 8, 1, 1), (1, 8, 2, 3), (2, 1, 3, 2), (2, 8, 7, 9), (1, 1, 19, 1)]


def _inputs(shape, dtype=torch.float32, device="cpu", seed=0, bias=True, flat_weight=False):
    """x, weight ([C, 1, 3, 3], or [C, 3, 3] with flat_weight), bias (or None), grad."""
    B, C, H, W = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    weight = torch.randn((C, 3, 3) if flat_weight else (C, 1, 3, 3), generator=g, dtype=torch.float64)
    b = torch.randn(C, generator=g, dtype=torch.float64) if bias else None
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple(None if t is None else t.to(device=device, dtype=dtype) for t in (x, weight, b, grad))


def _run(backend, x, weight, bias, grad, need=(True, True, True)):
    """Output and the gradients asked for (to x, weight, bias; None for the others) of one backend."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(n) for t, n in zip((x, weight, bias), need)]
    with mcmri_fast.use_backend(backend):
        out = depthwise_conv3x3(*leaves)
    wanted = [t for t in leaves if t is not None and t.requires_grad]
    grads = iter(torch.autograd.grad(out, wanted, grad))
    return (out,) + tuple(next(grads) if t is not None and t.requires_grad else None for t in leaves)


def _assert_all_close(got, expected, atol, rtol=1e-4):
    for name, a, b in zip(("out", "grad_x", "grad_weight", "grad_bias"), got, expected):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, shape):
    """float32 forward and fused backward against the reference computed in float64."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape not in TRITON_SHAPES:
        pytest.skip("the Triton interpreter gets the small shapes")
    inputs = _inputs(shape, device=device)
    got = _run(backend, *inputs)
    expected = _run("reference", *(t.double() for t in inputs))
    _assert_all_close(got, expected, atol=2e-5)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize(
    "need", [(True, False, False), (False, True, False), (False, False, True), (True, True, False)],
    ids=["x", "weight", "bias", "x+weight"],
)
def test_only_the_gradients_asked_for(backend, device, need):
    require_backend(backend, device)
    inputs = _inputs((2, 8, 5, 6), device=device, seed=1, flat_weight=True)
    got = _run(backend, *inputs, need=need)
    expected = _run("reference", *inputs, need=need)
    _assert_all_close(got, expected, atol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_without_bias(backend, device):
    require_backend(backend, device)
    inputs = _inputs((2, 8, 6, 5), device=device, seed=2, bias=False)
    _assert_all_close(_run(backend, *inputs), _run("reference", *inputs), atol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    inputs = _inputs((2, 8, 5, 7), dtype=torch.float64, device=device, seed=3)
    _assert_all_close(_run(backend, *inputs), _run("reference", *inputs), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(backend, device, dtype):
    """Half inputs give half outputs and gradients close to the float32 reference on the same values."""
    require_backend(backend, device)
    inputs = _inputs((2, 8, 7, 21), dtype=dtype, device=device, seed=4)
    got = _run(backend, *inputs)
    assert all(t.dtype == dtype for t in got)
    expected = _run("reference", *(t.float() for t in inputs))
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    _assert_all_close(got, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_gradcheck(backend, device):
    """float64 gradcheck through the fused backward kernels (fast mode and a smaller shape under the slow
    Triton interpreter)."""
    require_backend(backend, device)
    interpreted = backend == "triton" and device == "cpu"
    x, weight, bias, _ = _inputs((1, 2, 3, 4) if interpreted else (2, 3, 5, 4), dtype=torch.float64, device=device, seed=5)

    def f(x, weight, bias):
        with mcmri_fast.use_backend(backend):
            return depthwise_conv3x3(x, weight, bias)

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (x, weight, bias)), fast_mode=interpreted)


def test_reference_is_the_formula():
    """An independent check of the reference: the sum over the taps of the zero-padded map."""
    x, weight, bias, _ = _inputs((2, 3, 4, 5), dtype=torch.float64, seed=6, flat_weight=True)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    expected = bias.view(1, 3, 1, 1) + sum(
        weight[:, i, j].view(1, 3, 1, 1) * padded[:, :, i : i + 4, j : j + 5] for i in range(3) for j in range(3)
    )
    torch.testing.assert_close(reference.depthwise_conv3x3(x, weight, bias), expected)


@pytest.mark.parametrize("backend,device", FUSED)
def test_deterministic(backend, device):
    require_backend(backend, device)
    inputs = _inputs((2, 8, 9, 11), device=device, seed=7)
    first, second = _run(backend, *inputs), _run(backend, *inputs)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs_and_stride0_gradient(backend, device):
    require_backend(backend, device)
    x, weight, bias, _ = _inputs((2, 8, 6, 5), device=device, seed=8)
    grad = torch.full((1, 1, 1, 1), 0.75, device=device).expand_as(x)  # what out.sum().backward() gives
    expected = _run("reference", x, weight, bias, grad.contiguous())
    x_nc = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    weight_nc = weight.transpose(-1, -2).contiguous().transpose(-1, -2)
    bias_nc = torch.stack([bias, torch.zeros_like(bias)], dim=-1)[..., 0]
    assert not any(t.is_contiguous() for t in (x_nc, weight_nc, bias_nc)) and grad.stride() == (0, 0, 0, 0)
    _assert_all_close(_run(backend, x_nc, weight_nc, bias_nc, grad), expected, atol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_mixed_dtypes_are_promoted(backend, device):
    require_backend(backend, device)
    x, weight, bias, grad = _inputs((1, 8, 5, 4), device=device, seed=9)
    got = _run(backend, x.half(), weight, bias.bfloat16(), grad)
    # out in the promoted dtype; each gradient in its input's dtype
    assert [t.dtype for t in got] == [torch.float32, torch.float16, torch.float32, torch.bfloat16]
    expected = _run("reference", x.half().float(), weight, bias.bfloat16().float(), grad)
    _assert_all_close(got, expected, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("shape", [(2, 8, 0, 3), (0, 8, 3, 3), (2, 0, 3, 3)], ids=["H0", "B0", "C0"])
def test_empty_inputs(backend, device, shape):
    require_backend(backend, device)
    x, weight, bias, grad = _inputs(shape, device=device)
    out, grad_x, grad_weight, grad_bias = _run(backend, x, weight, bias, grad)
    assert out.shape == x.shape and grad_x.shape == x.shape
    assert grad_weight.shape == weight.shape and not grad_weight.any()
    assert grad_bias.shape == bias.shape and not grad_bias.any()


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_opcheck(backend, device, bias):
    require_backend(backend, device)
    x, weight, b, grad = _inputs((2, 8, 3, 5), device=device, seed=10, bias=bias)
    # The backward op has no autograd of its own (no double backward): its inputs need no gradient.
    for need in ((True, True, True), (False, True, False)):
        torch.library.opcheck(torch.ops.mcmri_fast.depthwise_conv3x3_backward.default, (grad, x, weight, *need, backend))
    args = (x.requires_grad_(), weight.requires_grad_(), None if b is None else b.requires_grad_(), backend)
    torch.library.opcheck(torch.ops.mcmri_fast.depthwise_conv3x3.default, args)


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    x, weight, bias, grad = _inputs((2, 8, 6, 7), seed=11)
    inputs = tuple(t.requires_grad_() for t in (x, weight, bias))

    def step(x, weight, bias):
        return depthwise_conv3x3(x, weight, bias) * 2

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend=compiler)
        out = compiled(*inputs)
        got = (out,) + torch.autograd.grad(out, inputs, grad)
    expected = _run("reference", x, weight, bias, 2 * grad)
    _assert_all_close((got[0] / 2,) + got[1:], expected, atol=1e-5)


def test_dispatch_and_forcing():
    x, weight, bias, _ = _inputs((1, 8, 4, 4))
    expected = "cpu" if backend_status("cpu", torch.device("cpu")) is None else "reference"
    from mcmri_fast.ops.depthwise_conv import _depthwise_conv3x3

    assert _depthwise_conv3x3.select(x.device) == expected
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="depthwise_conv3x3"):
        depthwise_conv3x3(x, weight, bias)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda x, w, b: (x.numpy(), w, b), TypeError, "x must be a torch.Tensor"),
        (lambda x, w, b: (x.to(torch.int32), w, b), TypeError, "x must be float32"),
        (lambda x, w, b: (x, w.to(torch.complex64), b), TypeError, "weight must be float32"),
        (lambda x, w, b: (x, w, [1.0] * 8), TypeError, "bias must be a torch.Tensor"),
        (lambda x, w, b: (x[0], w, b), ValueError, r"x must be \[B, C, H, W\]"),
        (lambda x, w, b: (x, w[:-1], b), ValueError, r"weight must be \[C, 1, 3, 3\] or \[C, 3, 3\] with C = 8"),
        (lambda x, w, b: (x, w.expand(8, 2, 3, 3), b), ValueError, r"weight must be \[C, 1, 3, 3\]"),
        (lambda x, w, b: (x, w[..., :2], b), ValueError, r"weight must be \[C, 1, 3, 3\]"),
        (lambda x, w, b: (x, w, b[:-1]), ValueError, r"bias must be \[C\] = \[8\]"),
        (lambda x, w, b: (x, w.to("meta"), b), ValueError, "weight must be on x's device"),
        (lambda x, w, b: (x, w, b.to("meta")), ValueError, "bias must be on x's device"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    x, weight, bias, _ = _inputs((1, 8, 3, 4))
    with pytest.raises(error, match=match):
        depthwise_conv3x3(*change(x, weight, bias))


def test_native_ops_check_their_arguments():
    require_backend("cpu", "cpu")
    x, weight, bias, grad = _inputs((1, 8, 3, 4))
    with pytest.raises(RuntimeError, match="weight must be"):
        torch.ops.mcmri_fast.depthwise_conv3x3_fwd(x, weight[:4], bias)
    with pytest.raises(RuntimeError, match="bias must be"):
        torch.ops.mcmri_fast.depthwise_conv3x3_fwd(x, weight, bias.double())
    with pytest.raises(RuntimeError, match="grad must match x"):
        torch.ops.mcmri_fast.depthwise_conv3x3_bwd(grad[..., :2], x, weight, True, True, True)
    with pytest.raises(RuntimeError, match="x must be"):
        torch.ops.mcmri_fast.depthwise_conv3x3_fwd(x[0], weight, bias)
    with pytest.raises(RuntimeError, match="float32, float64"):
        torch.ops.mcmri_fast.depthwise_conv3x3_fwd(x.int(), weight.int(), bias.int())


_BASELINE_CHECK = """
import torch, mcmri_fast
from mcmri_fast.ops.depthwise_conv import depthwise_conv3x3
g = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    x, w, b = torch.randn(2, 8, 7, 19, generator=g), torch.randn(8, 1, 3, 3, generator=g), torch.randn(8, generator=g)
    grad = torch.randn(2, 8, 7, 19, generator=g)
    results = []
    for backend in ("cpu", "reference"):
        leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
        with mcmri_fast.use_backend(backend):
            out = depthwise_conv3x3(*leaves)
        results.append([out.float()] + [t.float() for t in torch.autograd.grad(out, leaves, grad.to(dtype))])
    tolerance = 5e-2 if dtype == torch.bfloat16 else 1e-4
    for a, e in zip(*results):
        torch.testing.assert_close(a, e, atol=tolerance, rtol=tolerance)
"""


def test_baseline_cpu_kernels(run_on_baseline_cpu_kernels):
    """The baseline (non-AVX2) build of the CPU kernels against the reference."""
    require_backend("cpu", "cpu")
    run_on_baseline_cpu_kernels(_BASELINE_CHECK)
