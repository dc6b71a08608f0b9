"""instance_norm_leaky_relu: every fused backend against the reference, autograd, registration and bad
inputs."""
import pytest
import torch
import torch.nn.functional as F

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError, backend_status
from mcmri_fast.nn import InstanceNormLeakyReLU
from mcmri_fast.ops.instance_norm import instance_norm_leaky_relu

from fused_backends import FUSED, require_backend

# [B, C, *spatial]: 4-D and 3-D, odd sizes, rows longer than the CPU's summation chunk (1024 floats) and
# than a GPU chunk; the interpreter gets the small ones only.
SHAPES = [(2, 8, 7, 9), (1, 3, 33), (1, 64, 5, 3), (2, 4, 61, 47), (1, 2, 2)]
TRITON_SHAPES = [(2, 8, 7, 9), (1, 3, 33), (1, 2, 2)]


def _inputs(shape, dtype=torch.float32, device="cpu", seed=0, mean=5.0):
    """x (normal, scale 3, a large mean per channel: the two-pass variance matters) and grad."""
    g = torch.Generator().manual_seed(seed)
    x = 3 * torch.randn(shape, generator=g, dtype=torch.float64) + mean * torch.rand(shape[:2] + (1,) * (len(shape) - 2), generator=g, dtype=torch.float64)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, grad))


def _run(backend, x, grad, negative_slope=0.2, eps=1e-5):
    """Output and the gradient to x of one backend."""
    x = x.detach().clone().requires_grad_()
    with mcmri_fast.use_backend(backend):
        out = instance_norm_leaky_relu(x, negative_slope, eps)
    return (out,) + torch.autograd.grad(out, x, grad)


def _assert_all_close(got, expected, atol, rtol=1e-4):
    for name, x, y in zip(("out", "grad_x"), got, expected):
        torch.testing.assert_close(x, y.to(x.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("negative_slope", [0.2, 0.01, 1.5])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, negative_slope, shape):
    """float32 forward and fused backward against the reference in float64 and in float32."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape not in TRITON_SHAPES:
        pytest.skip("the Triton interpreter gets the small shapes")
    x, grad = _inputs(shape, device=device)
    got = _run(backend, x, grad, negative_slope)
    # x̂ is O(1) and grad_x O(rstd) = O(1/3): float32 rounding of sums over up to 3k elements
    _assert_all_close(got, _run("reference", x.double(), grad.double(), negative_slope), atol=2e-5)
    _assert_all_close(got, _run("reference", x, grad, negative_slope), atol=2e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    x, grad = _inputs((2, 8, 5, 3), dtype=torch.float64, device=device, seed=1, mean=1e4)
    _assert_all_close(_run(backend, x, grad, 0.3, 1e-3), _run("reference", x, grad, 0.3, 1e-3), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("backend,device", FUSED)
def test_a_large_mean_does_not_cancel(backend, device):
    """Rows with |μ| ≫ σ (float32 x = 1000 + N(0, 1)): the two-pass variance keeps the statistics exact to
    float32 rounding of x itself, where E[x²] − μ² would lose every digit."""
    require_backend(backend, device)
    x, grad = _inputs((1, 4, 9, 11), device=device, seed=2, mean=0.0)
    x = (x / 3 + 1000).float()
    got = _run(backend, x, grad)
    _assert_all_close(got, _run("reference", x.double(), grad.double()), atol=2e-4, rtol=1e-3)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(backend, device, dtype):
    """Half inputs give half outputs and gradients close to the float32 reference on the same values."""
    require_backend(backend, device)
    x, grad = _inputs((2, 8, 7, 5), dtype=dtype, device=device, seed=3, mean=1.0)
    got = _run(backend, x, grad)
    assert all(t.dtype == dtype for t in got)
    tolerance = {torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    _assert_all_close(got, _run("reference", x.float(), grad.float()), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_gradcheck(backend, device):
    """float64 gradcheck through the fused backward kernel (x̂ away from the kink at 0)."""
    require_backend(backend, device)
    interpreted = backend == "triton" and device == "cpu"
    x, _ = _inputs((1, 2, 5) if interpreted else (2, 3, 4, 5), dtype=torch.float64, device=device, seed=4)
    assert F.instance_norm(x, eps=1e-5).abs().min() > 1e-3  # no x̂ within the finite differences' reach of 0

    def f(x):
        with mcmri_fast.use_backend(backend):
            return instance_norm_leaky_relu(x, 0.2, 1e-5)

    assert torch.autograd.gradcheck(f, (x.requires_grad_(),), fast_mode=interpreted)


def test_reference_gradcheck():
    x, _ = _inputs((2, 3, 4, 3), dtype=torch.float64, seed=5)
    assert torch.autograd.gradcheck(lambda x: reference.instance_norm_leaky_relu(x, 0.2, 1e-5), (x.requires_grad_(),))


def test_reference_is_the_formula():
    x, _ = _inputs((2, 3, 4, 5), dtype=torch.float64, seed=6)
    rows = x.flatten(2)
    normalised = (rows - rows.mean(-1, keepdim=True)) / (rows.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
    expected = torch.where(normalised > 0, normalised, 0.2 * normalised).view_as(x)
    torch.testing.assert_close(reference.instance_norm_leaky_relu(x), expected)
    # the module pair it stands for
    modules = torch.nn.Sequential(torch.nn.InstanceNorm2d(3), torch.nn.LeakyReLU(0.2))
    torch.testing.assert_close(modules(x), expected)


@pytest.mark.parametrize("backend,device", FUSED)
def test_kink_and_constant_rows(backend, device):
    """x̂ = 0 exactly (y = 0: the slope's branch, as ATen's leaky_relu backward at 0) and a constant row
    (σ² = 0: y = 0 and rstd = 1/sqrt(eps))."""
    require_backend(backend, device)
    x = torch.tensor([[[-1.0, 0.0, 1.0, 2.0, -2.0], [3.0, 3.0, 3.0, 3.0, 3.0]]], device=device)
    grad = torch.tensor([[[0.5, -1.0, 2.0, 0.25, 1.0], [1.0, -2.0, 0.5, 0.0, 3.0]]], device=device)
    # against float64: ATen's float32 mean of the constant row is off by a rounding, which rstd = 316 scales
    _assert_all_close(_run(backend, x, grad), _run("reference", x.double(), grad.double()), atol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs_and_stride0_gradient(backend, device):
    require_backend(backend, device)
    x, _ = _inputs((2, 8, 6, 5), device=device, seed=7)
    grad = torch.full((1, 1, 1, 1), 0.75, device=device).expand_as(x)  # what out.sum().backward() gives
    expected = _run("reference", x, grad.contiguous())
    x_nc = x.contiguous(memory_format=torch.channels_last)
    assert not x_nc.is_contiguous() and grad.stride() == (0, 0, 0, 0)
    _assert_all_close(_run(backend, x_nc, grad), expected, atol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_empty_inputs(backend, device):
    require_backend(backend, device)
    x, grad = _inputs((0, 8, 3, 3), device=device)
    out, grad_x = _run(backend, x, grad)
    assert out.shape == x.shape and grad_x.shape == x.shape


@pytest.mark.parametrize("backend,device", FUSED)
def test_saves_the_output_not_the_input(backend, device):
    """The op keeps y (which the next convolution keeps anyway) and rstd [B, C], not x: what autograd holds
    for the backward beyond the output is B·C numbers."""
    require_backend(backend, device)
    x = _inputs((2, 4, 8, 8), device=device)[0].requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t), mcmri_fast.use_backend(backend):
        y = instance_norm_leaky_relu(x)
    pointers = {t.data_ptr() for t in saved}
    assert y.data_ptr() in pointers and x.data_ptr() not in pointers
    assert sum(t.numel() for t in saved) == y.numel() + 2 * 4


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    require_backend(backend, device)
    x, grad = _inputs((2, 8, 3, 5), device=device, seed=8)
    y, rstd = torch.ops.mcmri_fast.instance_norm_leaky_relu.default(x, 0.2, 1e-5, backend)
    # The backward op has no autograd of its own (no double backward): its inputs need no gradient.
    torch.library.opcheck(torch.ops.mcmri_fast.instance_norm_leaky_relu_backward.default, (grad, y, rstd, 0.2, backend))
    torch.library.opcheck(torch.ops.mcmri_fast.instance_norm_leaky_relu.default, (x.requires_grad_(), 0.2, 1e-5, backend))


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    x, grad = _inputs((2, 8, 6, 7), seed=9)
    x = x.requires_grad_()

    def step(x):
        return instance_norm_leaky_relu(x) * 2

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend=compiler)
        out = compiled(x)
        got = (out / 2,) + torch.autograd.grad(out, x, grad)
    _assert_all_close(got, _run("reference", x, 2 * grad), atol=2e-5)


def test_module_is_instance_norm_then_leaky_relu():
    """mcmri_fast.nn.InstanceNormLeakyReLU: the values and gradients of nn.InstanceNorm2d(C) then
    nn.LeakyReLU(slope, inplace=True) (fastMRI's block), and no parameters or buffers."""
    module, plain = InstanceNormLeakyReLU(0.1, eps=1e-4), torch.nn.Sequential(torch.nn.InstanceNorm2d(8, eps=1e-4), torch.nn.LeakyReLU(0.1, inplace=True))
    assert not module.state_dict() and "negative_slope=0.1" in repr(module)
    x, grad = _inputs((2, 8, 5, 4), seed=10)
    for backend in ("cpu", "reference"):
        if backend_status(backend, torch.device("cpu")) is not None:
            continue
        got, expected = (x.clone().requires_grad_() for _ in range(2))
        with mcmri_fast.use_backend(backend):
            out = module(got)
        out.backward(grad)
        plain(expected).backward(grad)
        torch.testing.assert_close(out, plain(x), atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(got.grad, expected.grad, atol=2e-5, rtol=1e-4)


def test_dispatch_and_forcing():
    x, _ = _inputs((1, 8, 4))
    expected = "cpu" if backend_status("cpu", torch.device("cpu")) is None else "reference"
    from mcmri_fast.ops.instance_norm import _instance_norm

    assert _instance_norm.select(x.device) == expected
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="instance_norm_leaky_relu"):
        instance_norm_leaky_relu(x)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda x: instance_norm_leaky_relu(x.numpy()), TypeError, "x must be a torch.Tensor"),
        (lambda x: instance_norm_leaky_relu(x.to(torch.int32)), TypeError, "x must be float32"),
        (lambda x: instance_norm_leaky_relu(x[0, 0]), ValueError, r"x must be \[B, C, \*spatial\]"),
        (lambda x: instance_norm_leaky_relu(x[..., :1, :1]), ValueError, "more than one spatial element"),
        (lambda x: instance_norm_leaky_relu(x, 0.0), ValueError, "negative_slope must be finite and > 0"),
        (lambda x: instance_norm_leaky_relu(x, float("inf")), ValueError, "negative_slope must be finite"),
        (lambda x: instance_norm_leaky_relu(x, "0.2"), TypeError, "negative_slope must be a real number"),
        (lambda x: instance_norm_leaky_relu(x, 0.2, -1e-5), ValueError, "eps must be finite and >= 0"),
    ],
)
def test_bad_inputs_raise(call, error, match):
    x, _ = _inputs((1, 8, 3, 4))
    with pytest.raises(error, match=match):
        call(x)


def test_native_ops_check_their_arguments():
    require_backend("cpu", "cpu")
    x, grad = _inputs((1, 8, 3))
    y, rstd = torch.ops.mcmri_fast.instance_norm_leaky_relu_fwd(x, 0.2, 1e-5)
    with pytest.raises(RuntimeError, match="negative_slope must be positive"):
        torch.ops.mcmri_fast.instance_norm_leaky_relu_fwd(x, 0.0, 1e-5)
    with pytest.raises(RuntimeError, match="rstd must be"):
        torch.ops.mcmri_fast.instance_norm_leaky_relu_bwd(grad, y, rstd.double(), 0.2)
    with pytest.raises(RuntimeError, match="rstd must be"):
        torch.ops.mcmri_fast.instance_norm_leaky_relu_bwd(grad, y, rstd[:, :4], 0.2)
    with pytest.raises(RuntimeError, match="grad must match y"):
        torch.ops.mcmri_fast.instance_norm_leaky_relu_bwd(grad[..., :2], y, rstd, 0.2)
    with pytest.raises(RuntimeError, match="x must be"):
        torch.ops.mcmri_fast.instance_norm_leaky_relu_fwd(x[0, 0], 0.2, 1e-5)
    with pytest.raises(RuntimeError, match="float32, float64"):
        torch.ops.mcmri_fast.instance_norm_leaky_relu_fwd(x.int(), 0.2, 1e-5)
