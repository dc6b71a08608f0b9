"""channel_attention: every fused backend against the reference, autograd, registration and bad inputs."""
import pytest
import torch
import torch.nn.functional as F

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError
from mcmri_fast.ops.channel_attention import channel_attention

from fused_backends import FUSED, require_backend

# (B, Cq, Ck, heads, spatial): self-attention sizes (Cq = Ck), cross-attention with Cq != Ck (IMA's
# concatenated queries), odd pixel counts, 1-D to 3-D spatial shapes, heads with 16+ channels (tl.dot).
CASES = [
    (2, 8, 8, 1, (5, 7)),
    (2, 8, 8, 8, (9, 11)),
    (1, 64, 64, 8, (7, 9)),
    (2, 16, 24, 8, (13,)),
    (1, 32, 16, 1, (3, 5, 7)),
    (1, 64, 64, 1, (5, 9)),
]


def _inputs(case, dtype=torch.float32, device="cpu", seed=0):
    B, Cq, Ck, heads, spatial = case
    g = torch.Generator().manual_seed(seed)
    q = torch.randn((B, Cq, *spatial), dtype=dtype, generator=g)
    k = torch.randn((B, Ck, *spatial), dtype=dtype, generator=g)
    v = torch.randn((B, Ck, *spatial), dtype=dtype, generator=g)
    # temperatures around Restormer's initial 1, positive and negative
    temperature = (0.5 + torch.randn(heads, dtype=dtype, generator=g)).to(dtype)
    grad = torch.randn((B, Cq, *spatial), dtype=dtype, generator=g)
    return tuple(t.to(device) for t in (q, k, v, temperature, grad))


def _run(backend, q, k, v, temperature, grad, heads, normalize=True):
    """Output and gradients to (q, k, v, temperature) of one backend."""
    q, k, v, temperature = (t.detach().clone().requires_grad_() for t in (q, k, v, temperature))
    with mcmri_fast.use_backend(backend):
        out = channel_attention(q, k, v, temperature, heads, normalize=normalize)
    return (out,) + torch.autograd.grad(out, (q, k, v, temperature), grad)


def _assert_all_close(got, expected, atol, rtol=1e-4):
    for name, a, b in zip(("out", "grad_q", "grad_k", "grad_v", "grad_temperature"), got, expected):
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def _float64(*tensors):
    return tuple(t.double() for t in tensors)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "raw"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-{c[2]}h{c[3]}-{'x'.join(map(str, c[4]))}")
def test_fused_matches_reference(backend, device, normalize, case):
    """float32 forward and fused backward against the reference computed in float64."""
    require_backend(backend, device)
    q, k, v, t, grad = _inputs(case, device=device)
    if not normalize:  # raw Gram entries grow with N: keep the softmax out of saturation
        q, k = q / 4, k / 4
    heads = case[3]
    got = _run(backend, q, k, v, t, grad, heads, normalize)
    expected = _run("reference", *_float64(q, k, v, t, grad), heads, normalize)
    _assert_all_close(got, expected, atol=2e-4)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    case = (2, 16, 8, 2, (5, 9))
    inputs = _inputs(case, dtype=torch.float64, device=device, seed=1)
    _assert_all_close(_run(backend, *inputs, 2), _run("reference", *inputs, 2), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("normalize", [True, False], ids=["normalized", "raw"])
def test_fused_gradcheck(backend, device, normalize):
    """float64 gradcheck through the fused backward (cross-attention, Cq != Ck, two heads)."""
    require_backend(backend, device)
    q, k, v, t, _ = _inputs((2, 4, 6, 2, (3, 5)), dtype=torch.float64, device=device, seed=2)
    q, k, v, t = (x.requires_grad_() for x in (q, k, v, t))

    def f(q, k, v, t):
        with mcmri_fast.use_backend(backend):
            return channel_attention(q, k, v, t, 2, normalize=normalize)

    # The interpreter runs a call in ~0.1 s: the fast mode's random projections instead of every column.
    assert torch.autograd.gradcheck(f, (q, k, v, t), fast_mode=backend == "triton" and device == "cpu")


@pytest.mark.parametrize("normalize", [True, False])
def test_reference_gradcheck(normalize):
    q, k, v, t, _ = _inputs((1, 4, 6, 2, (3, 4)), dtype=torch.float64, seed=3)
    q, k, v, t = (x.requires_grad_() for x in (q, k, v, t))
    assert torch.autograd.gradcheck(lambda *a: reference.channel_attention(*a, 2, normalize), (q, k, v, t))


def test_reference_is_the_formula():
    """Per head, softmax(normalize(Q) normalize(K)ᵀ · t) V written out with loops (an independent check)."""
    q, k, v, t, _ = _inputs((2, 6, 4, 2, (3, 5)), dtype=torch.float64, seed=4)
    out = reference.channel_attention(q, k, v, t, 2)
    for b in range(2):
        for h in range(2):
            qh = F.normalize(q[b, 3 * h : 3 * h + 3].flatten(1), dim=1)
            kh = F.normalize(k[b, 2 * h : 2 * h + 2].flatten(1), dim=1)
            attn = torch.softmax(qh @ kh.T * t[h], dim=1)
            torch.testing.assert_close(out[b, 3 * h : 3 * h + 3].flatten(1), attn @ v[b, 2 * h : 2 * h + 2].flatten(1))


@pytest.mark.parametrize("backend,device", FUSED)
def test_rows_below_eps(backend, device):
    """All-zero rows of Q and K (norm below eps): F.normalize divides them by eps, a constant, so their
    gradient has no projection term; the fused backward must agree with the reference there."""
    require_backend(backend, device)
    q, k, v, t, grad = _inputs((2, 8, 8, 2, (4, 5)), device=device, seed=5)
    q[0, 1] = 0
    q[1, 5] = 0
    k[0, 2] = 0
    k[1, 7] = 1e-14  # nonzero, but its norm is below eps
    got = _run(backend, q, k, v, t, grad, 2)
    expected = _run("reference", *_float64(q, k, v, t, grad), 2)
    _assert_all_close(got, expected, atol=2e-4)
    assert all(torch.isfinite(x).all() for x in got)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs(backend, device, dtype):
    """float16 / bfloat16 inputs: output in the input dtype, close to a float32 reference."""
    require_backend(backend, device)
    q, k, v, t, grad = _inputs((2, 16, 16, 2, (6, 7)), device=device, seed=6)
    half = tuple(x.to(dtype) for x in (q, k, v, grad))
    got = _run(backend, half[0], half[1], half[2], t, half[3], 2)
    expected = _run("reference", *(x.float() for x in half[:3]), t, half[3].float(), 2)
    assert got[0].dtype == dtype and got[4].dtype == t.dtype
    for a, b in zip(got, expected):
        torch.testing.assert_close(a.float(), b, atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs(backend, device):
    require_backend(backend, device)
    q, k, v, t, grad = _inputs((2, 8, 8, 4, (6, 5)), device=device, seed=7)
    expected = _run("reference", q, k, v, t, grad, 4)
    q_nc = q.transpose(-1, -2).contiguous().transpose(-1, -2)
    k_nc = torch.stack([k, torch.zeros_like(k)], dim=-1)[..., 0]
    v_nc = v.transpose(0, 1).contiguous().transpose(0, 1)
    t_nc = torch.stack([t, t], dim=-1)[:, 0]
    grad_nc = grad.expand(2, *grad.shape)[1]
    assert not any(x.is_contiguous() for x in (q_nc, k_nc, v_nc, t_nc))
    _assert_all_close(_run(backend, q_nc, k_nc, v_nc, t_nc, grad_nc, 4), expected, atol=2e-4)


@pytest.mark.parametrize("backend,device", FUSED)
def test_stride0_gradient_and_scalar_temperature_shape(backend, device):
    """`out.sum().backward()` gives a stride-0 gradient; a [1, heads, 1, 1] temperature (Restormer's
    parameter shape) gets a gradient of its own shape."""
    require_backend(backend, device)
    q, k, v, t, _ = _inputs((1, 8, 8, 2, (5, 5)), device=device, seed=8)
    t4 = t.reshape(1, 2, 1, 1)
    grad = torch.full((1,), 0.5, device=device).expand(q.shape)
    got = _run(backend, q, k, v, t4, grad, 2)
    expected = _run("reference", q, k, v, t4, grad.contiguous(), 2)
    assert got[4].shape == (1, 2, 1, 1)
    _assert_all_close(got, expected, atol=2e-4)


def _op_args(device):
    q, k, v, t, grad = _inputs((2, 8, 6, 2, (3, 5)), device=device, seed=9)
    flat = [x.reshape(2, x.shape[1], -1) for x in (q, k, v)]
    return flat, t, grad.reshape(2, 8, -1)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("normalize", [True, False])
def test_opcheck(backend, device, normalize):
    require_backend(backend, device)
    (q, k, v), t, _ = _op_args(device)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), t.requires_grad_(), 2, normalize, backend)
    torch.library.opcheck(torch.ops.mcmri_fast.channel_attention.default, args)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("normalize", [True, False])
def test_opcheck_backward(backend, device, normalize):
    require_backend(backend, device)
    (q, k, v), t, grad = _op_args(device)
    _, attn, gram_hat, q_norm, k_norm = torch.ops.mcmri_fast.channel_attention(q, k, v, t, 2, normalize, backend)
    args = (grad, q, k, v, t, attn, gram_hat, q_norm, k_norm, 2, normalize, backend)
    torch.library.opcheck(torch.ops.mcmri_fast.channel_attention_backward.default, args)


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    q, k, v, t, grad = _inputs((2, 8, 8, 2, (6, 7)), seed=10)
    q, k, v, t = (x.requires_grad_() for x in (q, k, v, t))

    def block(q, k, v, t):  # with surrounding work, as in FS-fusion
        return channel_attention(q * 2, k, v, t, 2) + q

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(block, fullgraph=True, backend=compiler)
        out = compiled(q, k, v, t)
        got = (out,) + torch.autograd.grad(out, (q, k, v, t), grad)
    expected_out = reference.channel_attention(q * 2, k, v, t, 2) + q
    expected = (expected_out,) + torch.autograd.grad(expected_out, (q, k, v, t), grad)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_only_needed_gradients():
    """Inputs that need no gradient get none; the others still match the reference."""
    q, k, v, t, grad = _inputs((1, 8, 8, 2, (4, 4)), seed=11)
    for backend in mcmri_fast.available_backends("cpu"):
        k_ = k.clone().requires_grad_()
        with mcmri_fast.use_backend(backend):
            out = channel_attention(q, k_, v, t, 2)
        (g,) = torch.autograd.grad(out, k_, grad)
        k_ref = k.clone().requires_grad_()
        (g_ref,) = torch.autograd.grad(reference.channel_attention(q, k_ref, v, t, 2), k_ref, grad)
        torch.testing.assert_close(g, g_ref, atol=2e-4, rtol=1e-4)


def test_forcing_unavailable_backend_raises():
    q, k, v, t, _ = _inputs((1, 8, 8, 2, (4, 4)), seed=12)
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="channel_attention"):
        channel_attention(q, k, v, t, 2)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(heads=3), ValueError, "heads must be a positive divisor"),
        (dict(heads=0), ValueError, "heads must be a positive divisor"),
        (dict(heads=2.0), TypeError, "heads must be an int"),
        (dict(k=torch.randn(2, 8, 6, 6), v=torch.randn(2, 8, 6, 6)), ValueError, "pixel count"),
        (dict(k=torch.randn(2, 5, 5, 4), v=torch.randn(2, 5, 5, 4)), ValueError, "heads must be a positive divisor"),
        (dict(v=torch.randn(2, 8, 4, 5)), ValueError, "v must have k's shape"),
        (dict(k=torch.randn(3, 8, 5, 4), v=torch.randn(3, 8, 5, 4)), ValueError, r"k must be \[B, Ck"),
        (dict(temperature=torch.ones(3)), ValueError, "temperature must hold heads"),
        (dict(temperature=torch.ones(2, dtype=torch.int64)), TypeError, "temperature must be a floating"),
        (dict(temperature=[1.0, 1.0]), TypeError, "temperature must be a torch.Tensor"),
        (dict(q=torch.randn(2, 8)), ValueError, r"q must be \[B, Cq, \*spatial\]"),
        (dict(q=torch.ones(2, 8, 5, 4, dtype=torch.int32)), TypeError, "q must be float16"),
        (dict(k=torch.randn(2, 8, 5, 4, dtype=torch.float64)), TypeError, "k must have q's dtype"),
        (dict(q=torch.randn(2, 0, 5, 4)), ValueError, "at least one channel"),
        (dict(normalize=1), TypeError, "normalize must be a bool"),
        (dict(v=torch.randn(2, 8, 5, 4, device="meta")), ValueError, "v must be on q's device"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    args = dict(
        q=torch.randn(2, 8, 5, 4),
        k=torch.randn(2, 8, 5, 4),
        v=torch.randn(2, 8, 5, 4),
        temperature=torch.ones(2),
        heads=2,
        normalize=True,
    )
    args.update(change)
    with pytest.raises(error, match=match):
        channel_attention(args["q"], args["k"], args["v"], args["temperature"], args["heads"], normalize=args["normalize"])


@pytest.mark.parametrize("backend,device", [p for p in FUSED if p.id in ("cpu", "cuda")])
def test_passes_check_their_arguments(backend, device):
    """The C++ passes (public as torch.ops.mcmri_fast.channel_attention_*) refuse malformed calls instead of
    reading out of bounds. Their Triton twins do not check: only the op calls them, with the arguments
    it has checked and laid out."""
    require_backend(backend, device)
    from mcmri_fast.ops.channel_attention import _channel_attention

    k = _channel_attention.kernels(backend)
    gram, apply, backward_pass = k.channel_attention_gram, k.channel_attention_apply, k.channel_attention_backward_pass
    a = torch.randn(2, 4, 10, device=device)
    with pytest.raises(RuntimeError, match="must be a contiguous"):
        gram(a.transpose(1, 2), a.transpose(1, 2), True)
    with pytest.raises(RuntimeError, match="must agree"):
        gram(a, torch.randn(2, 4, 11, device=device), True)
    with pytest.raises(RuntimeError, match="attn must be a contiguous"):
        apply(torch.rand(2, 4, 3, device=device), a)
    with pytest.raises(RuntimeError, match="attn must be a contiguous"):
        apply(torch.rand(2, 4, 4, dtype=torch.float64, device=device), a)
    tiny, coef = torch.rand(2, 4, 4, device=device), torch.rand(2, 4, device=device)
    with pytest.raises(RuntimeError, match="dk must be a contiguous"):
        backward_pass(a, a, a, tiny, tiny, coef, torch.rand(2, 5, device=device))
    with pytest.raises(RuntimeError, match="grad_out"):
        backward_pass(a, a, torch.randn(2, 4, 9, device=device), tiny, tiny, coef, coef)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("N", [1, 9001])
def test_gram_pass_split_over_pixels(backend, device, N):
    """The Gram pass against a plain matmul, with N large enough that the reduction is split over
    several programs of several tiles each, the last one running past the end (9001 = 70 tiles + 41)."""
    require_backend(backend, device)
    from mcmri_fast.ops.channel_attention import _channel_attention

    gram = _channel_attention.kernels(backend).channel_attention_gram
    g = torch.Generator().manual_seed(13)
    a = torch.randn(2, 8, N, dtype=torch.float64, generator=g).to(device)
    b = torch.randn(2, 6, N, dtype=torch.float64, generator=g).to(device)
    got, a_norm, b_norm = gram(a, b, True)
    torch.testing.assert_close(got, a @ b.transpose(1, 2))
    torch.testing.assert_close(a_norm, a.norm(dim=-1))
    torch.testing.assert_close(b_norm, b.norm(dim=-1))
    got, a_norm, _ = gram(a.float(), b.float(), False)
    assert a_norm.numel() == 0
    torch.testing.assert_close(got, (a @ b.transpose(1, 2)).float(), atol=1e-3, rtol=1e-4)
