"""guided_attention: every fused backend against the reference and a float64 numpy formula (ties in both max
pools included), autograd, registration and bad inputs."""
import numpy as np
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.ops import guided_attention

from fused_backends import FUSED, assert_all_close, output_and_gradients, require_backend

NAMES = ("out", "grad_f1", "grad_f2", "grad_ca_down", "grad_ca_up", "grad_sa_weight")
# [B, C, H, W]: MANet's 64 channels, a single reduced channel (C < 16), odd sizes, N above the CPU's pixel
# block (1024) and a GPU chunk (2048), one row; the interpreter gets the small ones only.
SHAPES = [(2, 64, 17, 23), (1, 5, 3, 3), (3, 16, 37, 29), (1, 32, 48, 47), (2, 8, 1, 40)]
TRITON_SHAPES = [(1, 5, 3, 3), (2, 8, 1, 40), (2, 16, 9, 7)]


def _inputs(shape, dtype=torch.float32, device="cpu", seed=0, kernel=7, levels=None):
    """(f1, f2, ca_down, ca_up, sa_weight, grad); `levels`: f1 rounded to that many values (ties)."""
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    reduced = max(1, C // 16)
    f1 = torch.randn(shape, generator=g, dtype=torch.float64)
    if levels is not None:
        f1 = torch.randint(0, levels, shape, generator=g).double() / levels
    f2 = torch.randn(shape, generator=g, dtype=torch.float64)
    ca_down = torch.randn(reduced, C, 1, 1, generator=g, dtype=torch.float64) / C**0.5
    ca_up = torch.randn(C, reduced, 1, 1, generator=g, dtype=torch.float64) / reduced**0.5
    sa_weight = torch.randn(1, 1, kernel, kernel, generator=g, dtype=torch.float64) / kernel
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (f1, f2, ca_down, ca_up, sa_weight, grad))


def _op(f1, f2, ca_down, ca_up, sa_weight):
    return guided_attention(f1, f2, (ca_down, ca_up), sa_weight)


def _run(backend, inputs):
    return output_and_gradients(_op, backend, inputs[:5], inputs[5])


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("shape", SHAPES + [(2, 16, 9, 7)], ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, shape):
    """float32 forward and fused backward against the reference in float64 and in float32."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape not in TRITON_SHAPES:
        pytest.skip("the Triton interpreter gets the small shapes")
    inputs = _inputs(shape, device=device)
    got = _run(backend, inputs)
    # the weights' gradients are sums over every pixel: float32 rounding of up to 150k terms
    assert_all_close(NAMES, got, _run("reference", [t.double() for t in inputs]), atol=1e-4, rtol=1e-4)
    assert_all_close(NAMES, got, _run("reference", inputs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    inputs = _inputs((2, 32, 9, 13), dtype=torch.float64, device=device, seed=1, kernel=3)
    assert_all_close(NAMES, _run(backend, inputs), _run("reference", inputs), atol=1e-12, rtol=1e-10)


def _numpy_guided_attention(f1, f2, down, up, w, grad):
    """The op and its gradients in float64 numpy, written from the formula: the max pools' gradients go to
    the first maximum (np.argmax's), the k×k convolution is the cross-correlation with zero padding."""
    B, C, H, W = f1.shape
    k = w.shape[0]
    r = k // 2
    flat = f1.reshape(B, C, H * W)
    m = flat.max(axis=2)
    m_index = flat.argmax(axis=2)
    hidden = m @ down.T
    ca = 1 / (1 + np.exp(-(np.maximum(hidden, 0) @ up.T)))
    a = f1 * ca[:, :, None, None]
    s = a.max(axis=1)
    s_index = a.argmax(axis=1)
    s_pad = np.pad(s, ((0, 0), (r, r), (r, r)))
    t = sum(w[i, j] * s_pad[:, i:i + H, j:j + W] for i in range(k) for j in range(k))
    sa = 1 / (1 + np.exp(-t))
    out = f2 * a * sa[:, None] + f2
    # backward
    grad_f2 = grad * (a * sa[:, None] + 1)
    grad_a2 = grad * f2
    grad_a = grad_a2 * sa[:, None]
    z = (grad_a2 * a).sum(axis=1) * sa * (1 - sa)
    grad_w = np.array([[(z * s_pad[:, i:i + H, j:j + W]).sum() for j in range(k)] for i in range(k)])
    z_pad = np.pad(z, ((0, 0), (r, r), (r, r)))
    grad_s = sum(w[i, j] * z_pad[:, k - 1 - i:k - 1 - i + H, k - 1 - j:k - 1 - j + W] for i in range(k) for j in range(k))
    bb, yy, xx = np.meshgrid(np.arange(B), np.arange(H), np.arange(W), indexing="ij")
    grad_a[bb, s_index, yy, xx] += grad_s
    grad_f1 = grad_a * ca[:, :, None, None]
    grad_ca = (grad_a * f1).sum(axis=(2, 3))
    grad_u = grad_ca * ca * (1 - ca)
    grad_up = grad_u.T @ np.maximum(hidden, 0)
    grad_hidden = (grad_u @ up) * (hidden > 0)
    grad_down = grad_hidden.T @ m
    grad_m = grad_hidden @ down
    grad_flat = grad_f1.reshape(B, C, H * W)
    for b in range(B):
        grad_flat[b, np.arange(C), m_index[b]] += grad_m[b]
    return out, grad_flat.reshape(f1.shape), grad_f2, grad_down, grad_up, grad_w


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("ties", ["channel_and_spatial", "spatial"])
def test_matches_the_numpy_formula_with_ties(backend, ties):
    """f1 on 4 levels: every channel's global maximum is repeated (ties in the max pool); with W_down = 0 every
    ca is 1/2, so f1 · ca ties across channels too. Gradients go to the first maximum of each, as numpy's
    argmax picks it."""
    require_backend(backend, "cpu")
    shape = (2, 16, 6, 7) if backend == "triton" else (2, 32, 13, 11)
    f1, f2, down, up, w, grad = _inputs(shape, dtype=torch.float64, seed=2, kernel=5, levels=4)
    if ties == "channel_and_spatial":
        down = torch.zeros_like(down)
    flat = f1.flatten(2)
    assert ((flat == flat.amax(2, keepdim=True)).sum(2) > 1).all()  # every channel's maximum is tied
    a = f1 * (0.5 if ties == "channel_and_spatial" else 1.0)
    if ties == "channel_and_spatial":
        assert ((a == a.amax(1, keepdim=True)).sum(1) > 1).float().mean() > 0.3
    got = _run(backend, (f1, f2, down, up, w, grad))
    expected = _numpy_guided_attention(*(t.numpy() for t in (f1, f2, down.flatten(1), up.flatten(1), w[0, 0], grad)))
    expected = [torch.from_numpy(np.asarray(e)).reshape(g.shape) for e, g in zip(expected, got)]
    assert_all_close(NAMES, got, expected, atol=1e-12, rtol=1e-10)


def test_reference_gradcheck():
    inputs = [t.requires_grad_() for t in _inputs((2, 16, 5, 6), dtype=torch.float64, seed=3, kernel=3)[:5]]
    assert torch.autograd.gradcheck(reference.guided_attention, inputs)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_gradcheck(backend, device):
    """float64 gradcheck through the fused backward (continuous inputs: no maximum within reach of another)."""
    require_backend(backend, device)
    interpreted = backend == "triton" and device == "cpu"
    shape = (1, 16, 3, 4) if interpreted else (2, 16, 5, 6)
    inputs = [t.requires_grad_() for t in _inputs(shape, dtype=torch.float64, device=device, seed=4, kernel=3)[:5]]

    def f(*args):
        with mcmri_fast.use_backend(backend):
            return _op(*args)

    assert torch.autograd.gradcheck(f, inputs, fast_mode=interpreted)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(backend, device, dtype):
    """Half maps give half outputs and gradients close to the float32 reference on the same values (the
    fused backends compute in float32; the weights stay float32, as under autocast)."""
    require_backend(backend, device)
    f1, f2, down, up, w, grad = _inputs((2, 16, 7, 5), device=device, seed=5)
    f1, f2, grad = (t.to(dtype) for t in (f1, f2, grad))
    got = _run(backend, (f1, f2, down, up, w, grad))
    assert got[0].dtype == dtype and got[1].dtype == dtype and got[2].dtype == dtype
    expected = _run("reference", [t.float() for t in (f1, f2, down, up, w, grad)])
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    assert_all_close(NAMES, got, expected, atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs_and_stride0_gradient(backend, device):
    require_backend(backend, device)
    f1, f2, down, up, w, _ = _inputs((2, 16, 6, 5), device=device, seed=6)
    grad = torch.full((1, 1, 1, 1), 0.75, device=device).expand_as(f1)  # what out.sum().backward() gives
    expected = _run("reference", (f1, f2, down, up, w, grad.contiguous()))
    f1_nc, f2_nc = (t.contiguous(memory_format=torch.channels_last) for t in (f1, f2))
    w_nc = w.transpose(2, 3).contiguous().transpose(2, 3)  # the same values, transposed strides
    assert not f1_nc.is_contiguous() and grad.stride() == (0, 0, 0, 0) and not w_nc.is_contiguous()
    assert_all_close(NAMES, _run(backend, (f1_nc, f2_nc, down, up, w_nc, grad)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_weight_layouts(backend, device):
    """The 1×1 weights as [Cr, C] / [C, Cr] and the k×k one as [k, k]: the values and gradients of the 4-D ones."""
    require_backend(backend, device)
    f1, f2, down, up, w, grad = _inputs((1, 16, 5, 6), device=device, seed=7)
    expected = _run(backend, (f1, f2, down, up, w, grad))
    got = _run(backend, (f1, f2, down.flatten(1), up.flatten(1), w[0, 0], grad))
    assert_all_close(NAMES, got, [e if e.dim() != 4 or i == 0 else e.reshape(g.shape)
                                  for i, (e, g) in enumerate(zip(expected, got))], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend,device", FUSED)
def test_deterministic(backend, device):
    """Two runs give bitwise the same output and gradients (the reductions run in a fixed order)."""
    require_backend(backend, device)
    shape = (2, 8, 9, 7) if device == "cpu" and backend == "triton" else (2, 64, 40, 44)
    inputs = _inputs(shape, device=device, seed=8)
    for x, y in zip(_run(backend, inputs), _run(backend, inputs)):
        assert torch.equal(x, y)


@pytest.mark.parametrize("backend,device", FUSED)
def test_saves_no_map_of_its_own(backend, device):
    """Beyond f1 and f2 (which the convolutions around the attention keep anyway), the op keeps only [B, C]
    and [B, N] tensors for the backward: eager PyTorch keeps a = f1·ca and a·sa as whole maps."""
    require_backend(backend, device)
    B, C, H, W = 2, 16, 8, 8
    f1, f2, down, up, w, _ = (t.requires_grad_() for t in _inputs((B, C, H, W), device=device, seed=9))
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t), mcmri_fast.use_backend(backend):
        _op(f1, f2, down, up, w)
    pointers = {t.data_ptr() for t in saved}
    assert f1.data_ptr() in pointers and f2.data_ptr() in pointers
    rest = [t for t in saved if t.data_ptr() not in (f1.data_ptr(), f2.data_ptr())]
    assert all(t.numel() <= max(B * H * W, down.numel(), up.numel()) for t in rest)


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    require_backend(backend, device)
    f1, f2, down, up, w, grad = _inputs((2, 16, 3, 5), device=device, seed=10)
    args = (f1, f2, down.flatten(1), up.flatten(1), w)
    forward = torch.ops.mcmri_fast.guided_attention.default(*args, backend)
    # The backward op has no autograd of its own (no double backward): its inputs need no gradient.
    torch.library.opcheck(torch.ops.mcmri_fast.guided_attention_backward.default, (grad, *args, *forward[1:], backend))
    torch.library.opcheck(torch.ops.mcmri_fast.guided_attention.default,
                          tuple(t.requires_grad_() for t in args) + (backend,))


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    inputs = _inputs((2, 16, 6, 7), seed=11)

    def step(f1, f2, down, up, w):
        return _op(f1, f2, down, up, w) * 2

    leaves = [t.clone().requires_grad_() for t in inputs[:5]]
    with mcmri_fast.use_backend(backend):
        out = torch.compile(step, fullgraph=True, backend=compiler)(*leaves)
        got = (out / 2,) + torch.autograd.grad(out, leaves, inputs[5])
    assert_all_close(NAMES, got, _run("reference", inputs[:5] + (2 * inputs[5],)), atol=2e-5, rtol=2e-5)


def test_bad_inputs_name_the_argument():
    f1, f2, down, up, w, _ = _inputs((1, 16, 4, 4))
    with pytest.raises(TypeError, match="f1 must be a torch.Tensor"):
        guided_attention(f1.numpy(), f2, (down, up), w)
    with pytest.raises(TypeError, match="ca_weights must be a pair"):
        guided_attention(f1, f2, down, w)
    with pytest.raises(TypeError, match="f2 must have f1's dtype"):
        guided_attention(f1, f2.double(), (down, up), w)
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        guided_attention(f1.int(), f2.int(), (down, up), w)
    with pytest.raises(ValueError, match=r"f1 must be \[B, C, H, W\]"):
        guided_attention(f1[0], f2[0], (down, up), w)
    with pytest.raises(ValueError, match="f2 must have f1's shape"):
        guided_attention(f1, f2[:, :8], (down, up), w)
    with pytest.raises(ValueError, match=r"ca_weights\[0\]"):
        guided_attention(f1, f2, (down[:, :8], up), w)
    with pytest.raises(ValueError, match=r"ca_weights\[1\]"):
        guided_attention(f1, f2, (down, up[:8]), w)
    with pytest.raises(ValueError, match="k odd"):
        guided_attention(f1, f2, (down, up), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="k odd"):
        guided_attention(f1, f2, (down, up), torch.zeros(1, 2, 3, 3))
    with pytest.raises(ValueError, match="at least one channel and one pixel"):
        guided_attention(f1[:, :, :0], f2[:, :, :0], (down, up), w)


def test_cpu_kernels_refuse_bad_arguments():
    """The C++ ops check what they are given whatever calls them: no read or write out of bounds."""
    require_backend("cpu", "cpu")
    ops = torch.ops.mcmri_fast
    f1 = torch.randn(1, 4, 3, 3)
    ca = torch.rand(1, 4)
    with pytest.raises(RuntimeError, match="ca must be"):
        ops.guided_attention_channel_max(f1, ca[:, :3])
    with pytest.raises(RuntimeError, match="sa must be"):
        ops.guided_attention_apply(f1, f1, ca, torch.rand(1, 8))
    with pytest.raises(RuntimeError, match="index must hold channels"):
        ops.guided_attention_channel_max_backward(torch.zeros_like(f1), f1, ca, torch.full((1, 9), 4), torch.rand(1, 9))
    with pytest.raises(RuntimeError, match="weight must be"):
        ops.guided_attention_spatial_conv(torch.rand(1, 3, 3), torch.rand(2, 2))
