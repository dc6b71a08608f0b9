"""prelu: every fused backend against the reference, autograd, registration and bad inputs."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError, backend_status
from mcmri_fast.nn import PReLU
from mcmri_fast.ops.prelu import prelu

from fused_backends import FUSED, require_backend

# [B, C, *spatial]: 4-D and 3-D, odd sizes, C in {8, 64}, rows longer than the CPU's summation chunk
# (1024 floats) and the CUDA block's (2048); the interpreter gets the small ones only.
SHAPES = [(2, 8, 7, 9), (1, 8, 33), (1, 64, 5, 3), (2, 64, 13), (1, 3, 61, 47)]
TRITON_SHAPES = [(2, 8, 7, 9), (1, 8, 33), (1, 64, 3)]
SLOPES = ["shared", "per-channel"]


def _inputs(shape, slopes="shared", dtype=torch.float32, device="cpu", seed=0):
    """x, weight, grad: x normal with every 7th element exactly 0 (the kink, where x > 0 is false as in
    ATen), slopes in [-0.25, 0.75)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    x.view(-1)[:: 7] = 0.0
    weight = torch.rand(1 if slopes == "shared" else shape[1], generator=g, dtype=torch.float64) - 0.25
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, weight, grad))


def _run(backend, x, weight, grad):
    """Output and gradients to (x, weight) of one backend."""
    x, weight = (t.detach().clone().requires_grad_() for t in (x, weight))
    with mcmri_fast.use_backend(backend):
        out = prelu(x, weight)
    return (out,) + torch.autograd.grad(out, (x, weight), grad)


def _assert_all_close(got, expected, atol, rtol=1e-4):
    for name, x, y in zip(("out", "grad_x", "grad_weight"), got, expected):
        # the slope's gradient sums a whole channel: its tolerance scales with the number of terms
        scale = got[0].numel() ** 0.5 if name == "grad_weight" else 1.0
        torch.testing.assert_close(x, y.to(x.dtype), atol=atol * scale, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("slopes", SLOPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, slopes, shape):
    """float32 forward and fused backward against the reference computed in float64."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape not in TRITON_SHAPES:
        pytest.skip("the Triton interpreter gets the small shapes")
    inputs = _inputs(shape, slopes, device=device)
    got = _run(backend, *inputs)
    _assert_all_close(got, _run("reference", *(t.double() for t in inputs)), atol=1e-5)
    # the backward of a float32 input against the reference's float32 backward too
    _assert_all_close(got, _run("reference", *inputs), atol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    inputs = _inputs((2, 8, 5, 3), "per-channel", dtype=torch.float64, device=device, seed=1)
    _assert_all_close(_run(backend, *inputs), _run("reference", *inputs), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(backend, device, dtype):
    """Half inputs give half outputs and gradients close to the float32 reference on the same values."""
    require_backend(backend, device)
    inputs = _inputs((2, 8, 7, 5), dtype=dtype, device=device, seed=2)
    got = _run(backend, *inputs)
    assert all(t.dtype == dtype for t in got)
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    _assert_all_close(got, _run("reference", *(t.float() for t in inputs)), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("slopes", SLOPES)
def test_fused_gradcheck(backend, device, slopes):
    """float64 gradcheck through the fused backward kernels (x away from the kink at 0)."""
    require_backend(backend, device)
    interpreted = backend == "triton" and device == "cpu"
    x, weight, _ = _inputs((1, 8, 3) if interpreted else (2, 8, 3, 5), slopes, dtype=torch.float64, device=device, seed=3)
    x = torch.where(x.abs() < 0.1, 0.5, x)

    def f(x, weight):
        with mcmri_fast.use_backend(backend):
            return prelu(x, weight)

    assert torch.autograd.gradcheck(f, (x.requires_grad_(), weight.requires_grad_()), fast_mode=interpreted)


def test_reference_gradcheck():
    x, weight, _ = _inputs((2, 8, 3, 2), "per-channel", dtype=torch.float64, seed=4)
    x = torch.where(x.abs() < 0.1, 0.5, x)
    assert torch.autograd.gradcheck(reference.prelu, (x.requires_grad_(), weight.requires_grad_()))


def test_reference_is_the_formula():
    x, weight, _ = _inputs((2, 3, 4), "per-channel", dtype=torch.float64, seed=5)
    torch.testing.assert_close(reference.prelu(x, weight), torch.where(x > 0, x, weight[:, None] * x))


@pytest.mark.parametrize("backend,device", FUSED)
def test_nan_and_inf_as_aten(backend, device):
    """nan stays nan (x > 0 is false: w·nan), ±inf go through the branches; the slope's gradient takes
    x·grad where x ≤ 0, nan included, as ATen's does."""
    require_backend(backend, device)
    x = torch.tensor([[[1.0, float("nan"), float("inf"), -float("inf"), -2.0, 0.0]]], device=device)
    weight, grad = torch.tensor([0.5], device=device), torch.ones_like(x)
    got, expected = _run(backend, x, weight, grad), _run("reference", x, weight, grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, equal_nan=True)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs_and_stride0_gradient(backend, device):
    require_backend(backend, device)
    x, weight, _ = _inputs((2, 8, 6, 5), "per-channel", device=device, seed=6)
    grad = torch.full((1, 1, 1, 1), 0.75, device=device).expand_as(x)  # what out.sum().backward() gives
    expected = _run("reference", x, weight, grad.contiguous())
    x_nc = x.contiguous(memory_format=torch.channels_last)
    weight_nc = torch.stack([weight, weight], dim=-1)[:, 0]
    assert not x_nc.is_contiguous() and not weight_nc.is_contiguous() and grad.stride() == (0, 0, 0, 0)
    _assert_all_close(_run(backend, x_nc, weight_nc, grad), expected, atol=1e-6)


@pytest.mark.parametrize("backend,device", FUSED)
def test_only_the_gradients_asked_for(backend, device):
    require_backend(backend, device)
    x, weight, grad = _inputs((1, 8, 5, 4), device=device, seed=7)
    expected = _run("reference", x, weight, grad)
    with mcmri_fast.use_backend(backend):
        w = weight.clone().requires_grad_()
        (grad_weight,) = torch.autograd.grad(prelu(x, w), w, grad)
        xs = x.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(prelu(xs, weight), xs, grad)
    torch.testing.assert_close(grad_weight, expected[2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grad_x, expected[1])


@pytest.mark.parametrize("backend,device", FUSED)
def test_empty_inputs(backend, device):
    require_backend(backend, device)
    x, weight, grad = _inputs((2, 8, 0, 3), "per-channel", device=device)
    out, grad_x, grad_weight = _run(backend, x, weight, grad)
    assert out.shape == x.shape and grad_x.shape == x.shape
    assert grad_weight.tolist() == [0.0] * 8


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("slopes", SLOPES)
def test_opcheck(backend, device, slopes):
    require_backend(backend, device)
    x, weight, grad = _inputs((2, 8, 3, 5), slopes, device=device, seed=8)
    # The backward op has no autograd of its own (no double backward): its inputs need no gradient.
    for need_x, need_weight in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(torch.ops.mcmri_fast.prelu_backward.default, (grad, x, weight, need_x, need_weight, backend))
    torch.library.opcheck(torch.ops.mcmri_fast.prelu.default, (x.requires_grad_(), weight.requires_grad_(), backend))


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    x, weight, grad = _inputs((2, 8, 6, 7), seed=9)
    inputs = (x.requires_grad_(), weight.requires_grad_())

    def step(x, weight):
        return prelu(x, weight) * 2

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend=compiler)
        out = compiled(*inputs)
        got = (out,) + torch.autograd.grad(out, inputs, grad)
    _assert_all_close((got[0] / 2,) + got[1:], _run("reference", x, weight, 2 * grad), atol=1e-5)


def test_module_is_nn_prelu_on_the_op():
    """mcmri_fast.nn.PReLU: nn.PReLU's parameter, initialisation and state dict, the op's values."""
    module, plain = PReLU(), torch.nn.PReLU()
    assert module.state_dict().keys() == plain.state_dict().keys()
    torch.testing.assert_close(module.weight, plain.weight)
    x, _, grad = _inputs((2, 8, 5, 4), seed=10)
    module.load_state_dict(plain.state_dict())
    torch.testing.assert_close(module(x), plain(x))


def test_dispatch_and_forcing():
    x, weight, _ = _inputs((1, 8, 4))
    expected = "cpu" if backend_status("cpu", torch.device("cpu")) is None else "reference"
    from mcmri_fast.ops.prelu import _prelu

    assert _prelu.select(x.device) == expected
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="prelu"):
        prelu(x, weight)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda x, w: (x.numpy(), w), TypeError, "x must be a torch.Tensor"),
        (lambda x, w: (x.to(torch.int32), w), TypeError, "x must be float32"),
        (lambda x, w: (x, w.to(torch.complex64)), TypeError, "weight must be float32"),
        (lambda x, w: (x[0, 0, 0], w), ValueError, r"x must be \[B, C, \*spatial\]"),
        (lambda x, w: (x, torch.ones(3)), ValueError, r"weight must be \[1\] or \[C\]"),
        (lambda x, w: (x, torch.ones(1, 1)), ValueError, r"weight must be \[1\] or \[C\]"),
        (lambda x, w: (x, w.to("meta")), ValueError, "weight must be on x's device"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    x, weight, _ = _inputs((1, 8, 3, 4))
    with pytest.raises(error, match=match):
        prelu(*change(x, weight))


def test_native_ops_check_their_arguments():
    require_backend("cpu", "cpu")
    x, weight, grad = _inputs((1, 8, 3))
    with pytest.raises(RuntimeError, match="weight must be"):
        torch.ops.mcmri_fast.prelu_fwd(x, torch.ones(3))
    with pytest.raises(RuntimeError, match="weight must be"):
        torch.ops.mcmri_fast.prelu_fwd(x, weight.double())
    with pytest.raises(RuntimeError, match="grad must match x"):
        torch.ops.mcmri_fast.prelu_bwd(grad[..., :2], x, weight, True, True)
    with pytest.raises(RuntimeError, match="float32, float64"):
        torch.ops.mcmri_fast.prelu_fwd(x.int(), weight.int())
