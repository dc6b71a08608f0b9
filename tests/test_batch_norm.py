"""batch_norm_relu: every fused backend against the reference (the add, F.batch_norm, F.relu), the running
statistics, autograd, registration and bad inputs."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.ops import batch_norm_relu

from fused_backends import FUSED, assert_all_close, require_backend

NAMES = ("out", "grad_x", "grad_residual", "grad_weight", "grad_bias")
# [B, C, *spatial]: 4-D and 3-D, odd sizes, channels of more elements than a GPU chunk (2048) and of one
# pixel per sample; the interpreter gets the small ones only.
SHAPES = [(2, 8, 7, 9), (3, 5, 11), (1, 64, 48, 47), (4, 3, 1, 1), (2, 16, 33, 35)]
TRITON_SHAPES = [(2, 8, 7, 9), (3, 5, 11), (4, 3, 1, 1)]


def _inputs(shape, dtype=torch.float32, device="cpu", seed=0, mean=3.0):
    """(x, residual, weight, bias, grad): x with a mean per channel (the two-pass variance matters), γ of both
    signs away from 0."""
    g = torch.Generator().manual_seed(seed)
    C = shape[1]
    per_channel = (1, C) + (1,) * (len(shape) - 2)
    x = 2 * torch.randn(shape, generator=g, dtype=torch.float64) + mean * torch.rand(per_channel, generator=g, dtype=torch.float64)
    residual = torch.randn(shape, generator=g, dtype=torch.float64)
    weight = (torch.rand(C, generator=g, dtype=torch.float64) + 0.5) * torch.where(torch.arange(C) % 3 == 2, -1.0, 1.0)
    bias = torch.randn(C, generator=g, dtype=torch.float64)
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (x, residual, weight, bias, grad))


def _run(backend, x, residual, weight, bias, grad, running=None, eps=1e-5, momentum=0.1):
    """(out, grads of x, residual, weight, bias) of one backend, and the running statistics it left."""
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in (x, residual, weight, bias)]
    C = x.shape[1]
    stats = running or (torch.zeros(C, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device),
                        torch.ones(C, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32, device=x.device))
    stats = tuple(s.clone() for s in stats)
    with mcmri_fast.use_backend(backend):
        out = batch_norm_relu(leaves[0], leaves[2], leaves[3], *stats, momentum=momentum, eps=eps, residual=leaves[1])
    wanted = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(out, wanted, grad))
    return (out,) + tuple(None if t is None else next(grads) for t in leaves), stats


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "no-residual"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, with_residual, shape):
    """float32 forward, fused backward and running statistics against the reference in float64 and float32."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape not in TRITON_SHAPES:
        pytest.skip("the Triton interpreter gets the small shapes")
    x, residual, weight, bias, grad = _inputs(shape, device=device)
    residual = residual if with_residual else None
    got, got_stats = _run(backend, x, residual, weight, bias, grad)
    for dtype in (torch.float64, torch.float32):
        args = [None if t is None else t.to(dtype) for t in (x, residual, weight, bias, grad)]
        expected, expected_stats = _run("reference", *args)
        # the weight's gradient sums up to 150k terms of O(1) in float32
        assert_all_close(NAMES, got, expected, atol=2e-4, rtol=1e-4)
        assert_all_close(("running_mean", "running_var"), got_stats, expected_stats, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    x, residual, weight, bias, grad = _inputs((2, 8, 5, 3), dtype=torch.float64, device=device, seed=1, mean=1e4)
    got, got_stats = _run(backend, x, residual, weight, bias, grad, eps=1e-3, momentum=0.3)
    expected, expected_stats = _run("reference", x, residual, weight, bias, grad, eps=1e-3, momentum=0.3)
    assert_all_close(NAMES, got, expected, atol=1e-10, rtol=1e-10)
    assert_all_close(("running_mean", "running_var"), got_stats, expected_stats, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend,device", FUSED)
def test_a_large_mean_does_not_cancel(backend, device):
    """Channels with |μ| ≫ σ (float32 t = 1000 + N(0, 1)): centred before scaling, the output keeps float32's
    precision of t itself."""
    require_backend(backend, device)
    x, residual, weight, bias, grad = _inputs((2, 4, 9, 11), device=device, seed=2, mean=0.0)
    x = (x / 2 + 1000).float()
    got, _ = _run(backend, x, None, weight, bias, grad)
    expected, _ = _run("reference", x.double(), None, weight.double(), bias.double(), grad.double())
    assert_all_close(NAMES, got, expected, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(backend, device, dtype):
    """Half maps give half outputs and gradients close to the float32 reference on the same values (the
    weights float32, as BatchNorm2d's under autocast)."""
    require_backend(backend, device)
    x, residual, weight, bias, grad = _inputs((2, 8, 7, 5), device=device, seed=3, mean=1.0)
    x, residual, grad = (t.to(dtype) for t in (x, residual, grad))
    got, _ = _run(backend, x, residual, weight, bias, grad)
    assert got[0].dtype == dtype and got[1].dtype == dtype
    expected, _ = _run("reference", x.float(), residual.float(), weight, bias, grad.float())
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    assert_all_close(NAMES, got, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_gradcheck(backend, device):
    """float64 gradcheck through the fused backward (no element within the finite differences' reach of
    the ReLU's kink)."""
    require_backend(backend, device)
    interpreted = backend == "triton" and device == "cpu"
    x, residual, weight, bias, _ = _inputs((2, 3, 5) if interpreted else (2, 3, 4, 5), dtype=torch.float64, device=device, seed=4)
    t = x + residual
    dims = (0,) + tuple(range(2, t.dim()))
    pre = (t - t.mean(dims, keepdim=True)) / (t.var(dims, unbiased=False, keepdim=True) + 1e-5).sqrt()
    shape = (1, -1) + (1,) * (t.dim() - 2)
    assert (pre * weight.view(shape) + bias.view(shape)).abs().min() > 1e-3

    def f(x, residual, weight, bias):
        with mcmri_fast.use_backend(backend):
            return batch_norm_relu(x, weight, bias, residual=residual)

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (x, residual, weight, bias)), fast_mode=interpreted)


def test_reference_gradcheck():
    x, residual, weight, bias, _ = _inputs((2, 3, 4, 3), dtype=torch.float64, seed=5)
    assert torch.autograd.gradcheck(lambda *a: reference.batch_norm_relu(a[0], a[2], a[3], residual=a[1]),
                                    tuple(t.requires_grad_() for t in (x, residual, weight, bias)))


def test_reference_is_the_module_sequence():
    """The reference is x + residual → nn.BatchNorm2d (training, running statistics updated) → ReLU."""
    x, residual, weight, bias, _ = _inputs((2, 3, 4, 5), dtype=torch.float64, seed=6)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.copy_(weight)
        bn.bias.copy_(bias)
    expected = torch.relu(bn(x + residual))
    mean, var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    torch.testing.assert_close(reference.batch_norm_relu(x, weight, bias, mean, var, residual=residual), expected)
    torch.testing.assert_close((mean, var), (bn.running_mean, bn.running_var))


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_eval_mode_uses_the_running_statistics(backend, device):
    require_backend(backend, device)
    x, residual, weight, bias, _ = _inputs((2, 4, 3, 5), device=device, seed=7)
    mean, var = torch.randn(4, device=device), torch.rand(4, device=device) + 0.5
    with mcmri_fast.use_backend(backend):
        got = batch_norm_relu(x, weight, bias, mean, var, training=False, residual=residual)
    shape = (1, 4, 1, 1)
    expected = torch.relu((x + residual - mean.view(shape)) / (var.view(shape) + 1e-5).sqrt() * weight.view(shape) + bias.view(shape))
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend,device", FUSED)
def test_without_affine_parameters_or_running_statistics(backend, device):
    """weight and bias None (affine=False) and no running statistics: batch statistics, γ = 1, β = 0."""
    require_backend(backend, device)
    x, _, _, _, grad = _inputs((2, 4, 3, 5), device=device, seed=8)
    leaf = x.clone().requires_grad_()
    with mcmri_fast.use_backend(backend):
        out = batch_norm_relu(leaf, None, None)
    expected = torch.relu(torch.nn.functional.batch_norm(x, None, None, training=True))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out.backward(grad)
    ref = x.clone().requires_grad_()
    torch.relu(torch.nn.functional.batch_norm(ref, None, None, training=True)).backward(grad)
    torch.testing.assert_close(leaf.grad, ref.grad, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs_and_stride0_gradient(backend, device):
    require_backend(backend, device)
    x, residual, weight, bias, _ = _inputs((2, 8, 6, 5), device=device, seed=9)
    grad = torch.full((1, 1, 1, 1), 0.75, device=device).expand_as(x)  # what out.sum().backward() gives
    expected, _ = _run("reference", x, residual, weight, bias, grad.contiguous())
    x_nc, r_nc = (t.contiguous(memory_format=torch.channels_last) for t in (x, residual))
    assert not x_nc.is_contiguous() and grad.stride() == (0, 0, 0, 0)
    got, _ = _run(backend, x_nc, r_nc, weight, bias, grad)
    assert_all_close(NAMES, got, expected, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_saves_no_more_than_the_sum(backend, device):
    """The op keeps t = x + residual (x itself without one: what ATen's batch norm keeps too) and [C]
    statistics; ATen's sequence keeps the ReLU's output besides."""
    require_backend(backend, device)
    x, residual, weight, bias, _ = _inputs((2, 4, 8, 8), device=device, seed=10)
    for r in (residual, None):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t), mcmri_fast.use_backend(backend):
            batch_norm_relu(leaves[0], leaves[1], leaves[2], residual=r)
        big = [t for t in saved if t.numel() == x.numel()]
        assert len(big) == 1 and sum(t.numel() for t in saved) == x.numel() + 4 * 4
        if r is None:
            assert big[0].data_ptr() == leaves[0].data_ptr()


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    require_backend(backend, device)
    x, residual, weight, bias, grad = _inputs((2, 8, 3, 5), device=device, seed=11)
    for r in (residual, None):
        y, t, mean, rstd = torch.ops.mcmri_fast.batch_norm_relu.default(x, r, weight, bias, 1e-5, backend)
        saved = x if r is None else t
        torch.library.opcheck(torch.ops.mcmri_fast.batch_norm_relu_backward.default,
                              (grad, saved, mean, rstd, weight, bias, backend))
        args = (x.clone().requires_grad_(), None if r is None else r.clone().requires_grad_(),
                weight.clone().requires_grad_(), bias.clone().requires_grad_(), 1e-5, backend)
        torch.library.opcheck(torch.ops.mcmri_fast.batch_norm_relu.default, args)


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler):
    """The op and its running-statistics update compile into one graph."""
    require_backend(backend, "cpu")
    x, residual, weight, bias, grad = _inputs((2, 8, 6, 7), seed=12)
    mean, var = torch.zeros(8), torch.ones(8)
    leaves = [t.clone().requires_grad_() for t in (x, residual, weight, bias)]

    def step(x, residual, weight, bias):
        return batch_norm_relu(x, weight, bias, mean, var, residual=residual) * 2

    with mcmri_fast.use_backend(backend):
        out = torch.compile(step, fullgraph=True, backend=compiler)(*leaves)
        got = (out / 2,) + torch.autograd.grad(out, leaves, grad)
    expected, expected_stats = _run("reference", x, residual, weight, bias, 2 * grad)
    assert_all_close(NAMES, got, expected, atol=2e-5, rtol=2e-5)
    assert_all_close(("running_mean", "running_var"), (mean, var), expected_stats, atol=1e-6, rtol=1e-6)


def test_bad_inputs_name_the_argument():
    x, residual, weight, bias, _ = _inputs((2, 4, 3, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        batch_norm_relu(x.numpy(), weight, bias)
    with pytest.raises(ValueError, match=r"weight must be \[C\]"):
        batch_norm_relu(x, weight[:3], bias)
    with pytest.raises(ValueError, match="residual must have x's shape"):
        batch_norm_relu(x, weight, bias, residual=residual[:, :2])
    with pytest.raises(ValueError, match="given together"):
        batch_norm_relu(x, weight, bias, torch.zeros(4))
    with pytest.raises(ValueError, match="eval mode"):
        batch_norm_relu(x, weight, bias, training=False)
    with pytest.raises(ValueError, match="momentum must be in"):
        batch_norm_relu(x, weight, bias, momentum=2.0)
    with pytest.raises(ValueError, match="eps must be"):
        batch_norm_relu(x, weight, bias, eps=-1.0)
    with pytest.raises(ValueError, match="more than one value per channel"):
        batch_norm_relu(x[:1, :, :1, :1], weight, bias)
    with pytest.raises(TypeError, match="training must be a bool"):
        batch_norm_relu(x, weight, bias, training=1)
