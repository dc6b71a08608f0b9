"""data_consistency: every fused backend against the reference, autograd, registration and bad inputs."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.data import fft2c, fft2u, ifft2c
from mcmri_fast.ops import data_consistency, dunsa_data_consistency
from mcmri_fast.ops._checks import canonical_mask

from fused_backends import FUSED, require_backend

MASK_FORMS = ["W", "HW", "BW", "B1HW"]
SHAPES = [(1, 1, 7, 16), (2, 3, 16, 33), (2, 3, 33, 7), (1, 3, 64, 64)]


def _mask(form, B, H, W, generator, device="cpu"):
    shape = {"W": (W,), "HW": (H, W), "BW": (B, W), "B1HW": (B, 1, H, W)}[form]
    mask = torch.rand(shape, generator=generator) < 0.4
    return mask.to(device)


def _inputs(shape, k0_channels, form, dtype=torch.complex64, device="cpu", seed=0):
    B, C, H, W = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=dtype, generator=g).to(device)
    k0 = torch.randn((B, k0_channels, H, W), dtype=dtype, generator=g).to(device)
    weight = torch.rand(C, dtype=x.real.dtype, generator=g).to(device)
    grad = torch.randn(shape, dtype=dtype, generator=g).to(device)
    return x, k0, _mask(form, B, H, W, g, device), weight, grad


def _run(backend, x, k0, mask, weight, grad, centered):
    """Output and gradients to (x, k0, weight) of one backend."""
    x, k0, weight = (t.detach().clone().requires_grad_() for t in (x, k0, weight))
    with mcmri_fast.use_backend(backend):
        out = data_consistency(x, k0, mask, weight, centered=centered)
    return (out,) + torch.autograd.grad(out, (x, k0, weight), grad)


def _assert_all_close(got, expected, atol, rtol=1e-4):
    for name, a, b in zip(("out", "grad_x", "grad_k0", "grad_weight"), got, expected):
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("centered", [True, False], ids=["centred", "uncentred"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("form", MASK_FORMS)
@pytest.mark.parametrize("k0_shared", [False, True], ids=["k0-per-channel", "k0-shared"])
def test_fused_matches_reference(backend, device, centered, shape, form, k0_shared):
    """float32 forward and fused backward against the reference (computed in float64)."""
    require_backend(backend, device)
    x, k0, mask, weight, grad = _inputs(shape, 1 if k0_shared else shape[1], form, device=device)
    got = _run(backend, x, k0, mask, weight, grad, centered)
    expected = _run("reference", *(t.to(torch.complex128) for t in (x, k0)), mask, weight.double(), grad.to(torch.complex128), centered)
    _assert_all_close(got, expected, atol=2e-4)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("form", ["W", "B1HW"])
def test_fused_double_precision(backend, device, form):
    require_backend(backend, device)
    inputs = _inputs((2, 3, 9, 12), 3, form, dtype=torch.complex128, device=device, seed=3)
    got = _run(backend, *inputs, centered=True)
    expected = _run("reference", *inputs, centered=True)
    _assert_all_close(got, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_gradcheck(backend, device):
    """float64 gradcheck through the fused backward kernels (x, k0 shared over channels, per-channel w)."""
    require_backend(backend, device)
    x, k0, mask, weight, _ = _inputs((1, 2, 5, 6), 1, "W", dtype=torch.complex128, device=device, seed=4)
    x, k0, weight = (t.requires_grad_() for t in (x, k0, weight))

    def f(x, k0, weight):
        with mcmri_fast.use_backend(backend):
            return data_consistency(x, k0, mask, weight)

    assert torch.autograd.gradcheck(f, (x, k0, weight))


@pytest.mark.parametrize("form", MASK_FORMS)
@pytest.mark.parametrize("centered", [True, False])
def test_reference_gradcheck(form, centered):
    x, k0, mask, weight, _ = _inputs((2, 2, 5, 4), 2, form, dtype=torch.complex128, seed=5)
    mask = canonical_mask(mask, 2, 5, 4).unsqueeze(1)
    x, k0, weight = (t.requires_grad_() for t in (x, k0, weight))
    assert torch.autograd.gradcheck(lambda *a: reference.data_consistency(*a, mask, weight, centered), (x, k0))
    assert torch.autograd.gradcheck(lambda w: reference.data_consistency(x, k0, mask, w, centered), (weight,))


def test_reference_is_the_formula():
    """Hard DC keeps the measured samples and the image's own k-space elsewhere (an independent check)."""
    x, k0, mask, _, _ = _inputs((2, 3, 12, 11), 3, "HW", dtype=torch.complex128)
    out = reference.data_consistency(x, k0, mask[None, None], torch.ones(1, dtype=torch.float64))
    k_out, k_x = fft2c(out), fft2c(x)
    torch.testing.assert_close(k_out[..., mask], k0[..., mask])
    torch.testing.assert_close(k_out[..., ~mask], k_x[..., ~mask])
    # uncentred: the same with the uncentred transform
    out_u = reference.data_consistency(x, k0, mask[None, None], torch.ones(1, dtype=torch.float64), centered=False)
    torch.testing.assert_close(fft2u(out_u)[..., mask], k0[..., mask])


@pytest.mark.parametrize("backend,device", FUSED)
def test_column_path_equals_2d_path(backend, device):
    """A 1-D mask [W] and the same mask broadcast to [H, W] take different paths to the same result."""
    require_backend(backend, device)
    x, k0, mask, weight, grad = _inputs((2, 3, 10, 13), 1, "W", device=device, seed=6)
    column = _run(backend, x, k0, mask, weight, grad, True)
    full = _run(backend, x, k0, mask.expand(10, 13).contiguous(), weight, grad, True)
    _assert_all_close(column, full, atol=1e-4)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs(backend, device):
    require_backend(backend, device)
    x, k0, mask, weight, grad = _inputs((2, 3, 8, 12), 3, "BW", device=device, seed=7)
    expected = _run("reference", x, k0, mask, weight, grad, True)
    x_nc = x.transpose(-1, -2).contiguous().transpose(-1, -2)  # column-major strides
    # strided views holding the same values: every other element of a stacked pair
    k0_nc = torch.stack([k0, torch.zeros_like(k0)], dim=-1)[..., 0]
    mask_nc = torch.stack([mask, ~mask], dim=-1)[..., 0]
    weight_nc = torch.stack([weight, weight], dim=-1)[:, 0]
    grad_nc = grad.transpose(0, 1).contiguous().transpose(0, 1)
    assert not any(t.is_contiguous() for t in (x_nc, k0_nc, mask_nc, weight_nc, grad_nc))
    _assert_all_close(_run(backend, x_nc, k0_nc, mask_nc, weight_nc, grad_nc, True), expected, atol=2e-4)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_stride0_gradient(backend, device):
    """A gradient that is an expanded scalar (stride 0 everywhere), as `out.sum().backward()` gives."""
    require_backend(backend, device)
    x, k0, mask, weight, _ = _inputs((2, 2, 9, 8), 1, "W", device=device, seed=8)
    grad = torch.full((1, 1, 1, 1), 0.5 - 0.25j, dtype=x.dtype, device=device).expand_as(x)
    assert grad.stride() == (0, 0, 0, 0)
    got = _run(backend, x, k0, mask, weight, grad, True)
    expected = _run("reference", x, k0, mask, weight, grad.contiguous(), True)
    _assert_all_close(got, expected, atol=2e-4)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("form", ["W", "HW"])
@pytest.mark.parametrize("keep_spectrum", [True, False])
def test_opcheck(backend, device, form, keep_spectrum):
    require_backend(backend, device)
    x, k0, mask, weight, _ = _inputs((2, 3, 6, 7), 1, form, device=device, seed=9)
    mask = canonical_mask(mask, 2, 6, 7)
    args = (x.requires_grad_(), k0.requires_grad_(), mask, weight.requires_grad_(keep_spectrum), True, keep_spectrum, backend)
    torch.library.opcheck(torch.ops.mcmri_fast.data_consistency.default, args)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("form", ["W", "HW"])
@pytest.mark.parametrize("need_k0_grad,need_weight_grad", [(True, True), (False, True), (True, False)])
def test_opcheck_backward(backend, device, form, need_k0_grad, need_weight_grad):
    require_backend(backend, device)
    x, k0, mask, weight, grad = _inputs((2, 3, 6, 7), 1, form, device=device, seed=9)
    mask = canonical_mask(mask, 2, 6, 7)
    # What the forward saves for the backward, in the backend's own layout.
    _, hybrid, spectrum = torch.ops.mcmri_fast.data_consistency(x, k0, mask, weight, True, need_weight_grad, backend)
    src = hybrid if form == "W" else k0
    args = (grad, src, spectrum, mask, weight, True, need_k0_grad, need_weight_grad, backend)
    torch.library.opcheck(torch.ops.mcmri_fast.data_consistency_backward.default, args)


@pytest.mark.parametrize(
    "backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")]
)
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    x, k0, mask, weight, grad = _inputs((2, 3, 8, 10), 1, "W", seed=10)
    x.requires_grad_()
    weight.requires_grad_()

    def step(x, k0, mask, weight):
        return data_consistency(x, k0, mask, weight)

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend=compiler)
        out = compiled(x, k0, mask, weight)
        got = (out,) + torch.autograd.grad(out, (x, weight), grad)
    expected = _run("reference", x, k0, mask, weight, grad, True)
    for a, b in zip(got, expected[:2] + expected[3:]):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("weight", [1.0, 0.7, "tensor0d", "tensor1"])
def test_weight_forms(weight):
    x, k0, mask, _, _ = _inputs((1, 2, 6, 8), 2, "W", dtype=torch.complex128, seed=11)
    value = {1.0: 1.0, 0.7: 0.7, "tensor0d": 0.3, "tensor1": 0.6}[weight]
    w = {"tensor0d": torch.tensor(0.3, dtype=torch.float64), "tensor1": torch.tensor([0.6], dtype=torch.float64)}.get(weight, weight)
    for backend in mcmri_fast.available_backends("cpu"):
        with mcmri_fast.use_backend(backend):
            out = data_consistency(x, k0, mask, w)
        k = fft2c(x)
        expected = ifft2c(torch.where(mask, (1 - value) * k + value * k0, k))
        torch.testing.assert_close(out, expected)


def test_scalar_weight_gradient_sums_channels():
    x, k0, mask, _, grad = _inputs((2, 3, 6, 8), 1, "HW", seed=12)
    per_channel = torch.full((3,), 0.4, requires_grad=True)
    scalar = torch.tensor(0.4, requires_grad=True)
    for backend in mcmri_fast.available_backends("cpu"):
        with mcmri_fast.use_backend(backend):
            (g_scalar,) = torch.autograd.grad(data_consistency(x, k0, mask, scalar), scalar, grad)
            (g_channels,) = torch.autograd.grad(data_consistency(x, k0, mask, per_channel), per_channel, grad)
        assert g_scalar.shape == ()
        torch.testing.assert_close(g_scalar, g_channels.sum())


def test_real_and_half_inputs_are_promoted():
    x = torch.randn(1, 2, 8, 8, dtype=torch.float16)
    k0 = torch.randn(1, 2, 8, 8, dtype=torch.complex64)
    mask = torch.zeros(8, dtype=torch.bool)
    mask[2:5] = True
    for backend in mcmri_fast.available_backends("cpu"):
        with mcmri_fast.use_backend(backend):
            out = data_consistency(x, k0, mask)
        assert out.dtype == torch.complex64
        torch.testing.assert_close(out, reference.data_consistency(x.to(torch.complex64), k0, mask.reshape(1, 1, 1, 8), torch.ones(1)), atol=1e-5, rtol=1e-4)
    assert data_consistency(x.double(), k0, mask).dtype == torch.complex128


def test_dunsa_closed_form():
    """Fᴴ[(M k0 + β F u)/(M + β)] written out directly, with a learnable β."""
    u, k0, mask, _, _ = _inputs((2, 1, 9, 10), 1, "W", dtype=torch.complex128, seed=13)
    beta = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    m = mask.to(torch.float64)
    expected = ifft2c((m * k0 + beta * fft2c(u)) / (m + beta))
    (g_expected,) = torch.autograd.grad(expected.abs().sum(), beta)
    for backend in mcmri_fast.available_backends("cpu"):
        with mcmri_fast.use_backend(backend):
            got = dunsa_data_consistency(u, k0, mask, beta)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(torch.autograd.grad(got.abs().sum(), beta)[0], g_expected)
        with mcmri_fast.use_backend(backend):
            torch.testing.assert_close(dunsa_data_consistency(u, k0, mask, 0.35), expected.detach())
    with pytest.raises(ValueError, match="beta must be positive"):
        dunsa_data_consistency(u, k0, mask, 0.0)


def test_dunsa_two_priors_closed_form():
    """Fᴴ[(M k0 + β₁ F z + β₂ F s)/(M + β₁ + β₂)] (the paper's eq. 11) written out, learnable β₁, β₂ per
    channel: values and the gradients to z, s and both weights."""
    z, k0, mask, _, _ = _inputs((2, 3, 9, 10), 3, "W", dtype=torch.complex128, seed=14)
    s = torch.randn(z.shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(15))
    m = mask.to(torch.float64)
    for shape in ((3,), (1,)):
        leaves = [z.clone().requires_grad_(), s.clone().requires_grad_(),
                  (0.2 + torch.rand(shape, dtype=torch.float64)).requires_grad_(),
                  (0.2 + torch.rand(shape, dtype=torch.float64)).requires_grad_()]
        zz, ss, b1, b2 = leaves
        w1, w2 = b1.reshape(-1, 1, 1), b2.reshape(-1, 1, 1)
        expected = ifft2c((m * k0 + w1 * fft2c(zz) + w2 * fft2c(ss)) / (m + w1 + w2))
        expected_grads = torch.autograd.grad(expected.abs().sum(), leaves)
        for backend in mcmri_fast.available_backends("cpu"):
            with mcmri_fast.use_backend(backend):
                got = dunsa_data_consistency(zz, k0, mask, b1, s=ss, beta_s=b2)
            torch.testing.assert_close(got, expected)
            for name, a, b in zip(("z", "s", "beta", "beta_s"), torch.autograd.grad(got.abs().sum(), leaves),
                                  expected_grads):
                torch.testing.assert_close(a, b, msg=lambda msg: f"{backend} grad {name}: {msg}")
    with pytest.raises(ValueError, match="beta_s must be positive"):
        dunsa_data_consistency(z, k0, mask, 0.5, s=s, beta_s=-1.0)
    with pytest.raises(ValueError, match="needs its weight beta_s"):
        dunsa_data_consistency(z, k0, mask, 0.5, s=s)
    with pytest.raises(ValueError, match="pass s with it"):
        dunsa_data_consistency(z, k0, mask, 0.5, beta_s=0.5)
    with pytest.raises(ValueError, match="s must have z's shape"):
        dunsa_data_consistency(z, k0, mask, 0.5, s=s[:, :1], beta_s=0.5)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(x=torch.randn(2, 8, 8, dtype=torch.complex64)), ValueError, r"x must be \[B, C, H, W\]"),
        (dict(x=torch.ones(2, 3, 8, 8, dtype=torch.int32)), TypeError, "x must be a complex or real floating"),
        (dict(x=[[1.0]]), TypeError, "x must be a torch.Tensor"),
        (dict(k0=torch.randn(2, 2, 8, 8, dtype=torch.complex64)), ValueError, "k0 must be"),
        (dict(k0=torch.randn(2, 3, 8, 7, dtype=torch.complex64)), ValueError, "k0 must be"),
        (dict(k0=torch.ones(2, 3, 8, 8, dtype=torch.int64)), TypeError, "k0 must be a complex"),
        (dict(k0=torch.randn(2, 3, 8, 8, dtype=torch.complex64, device="meta")), ValueError, "k0 must be on x's device"),
        (dict(mask=torch.ones(7)), ValueError, "mask must be"),
        (dict(mask=torch.ones(8, 7)), ValueError, "mask must be"),
        (dict(mask=torch.full((8,), 0.5)), ValueError, "mask must be binary"),
        (dict(mask=torch.full((8,), 2)), ValueError, "mask must be binary"),
        (dict(mask=torch.ones(8, dtype=torch.complex64)), TypeError, "mask must be a bool or real"),
        (dict(weight=torch.ones(2)), ValueError, "weight must hold 1 or C"),
        (dict(weight=torch.ones(3, 3)), ValueError, "weight must hold 1 or C"),
        (dict(weight=torch.ones(3, dtype=torch.int64)), TypeError, "weight must be a real floating"),
        (dict(weight="1"), TypeError, "weight must be a number"),
        (dict(centered=1), TypeError, "centered must be a bool"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    args = dict(
        x=torch.randn(2, 3, 8, 8, dtype=torch.complex64),
        k0=torch.randn(2, 3, 8, 8, dtype=torch.complex64),
        mask=torch.ones(8, dtype=torch.bool),
        weight=1.0,
        centered=True,
    )
    args.update(change)
    with pytest.raises(error, match=match):
        data_consistency(args["x"], args["k0"], args["mask"], args["weight"], centered=args["centered"])


def test_native_op_checks_its_arguments():
    """The C++ op refuses malformed calls instead of reading out of bounds."""
    require_backend("cpu", "cpu")
    spec = torch.zeros(1, 1, 4, 4, dtype=torch.complex64)
    phase = torch.ones(4, dtype=torch.complex64)
    mask = torch.ones(1, 4, 4, dtype=torch.uint8)
    blend = torch.ops.mcmri_fast.dc_blend_
    with pytest.raises(RuntimeError, match="mask must be uint8"):
        blend(spec, spec.clone(), torch.ones(1, 4, 5, dtype=torch.uint8), torch.ones(1), phase, phase, 0, 0)
    with pytest.raises(RuntimeError, match="src must be"):
        blend(spec, torch.zeros(1, 1, 4, 5, dtype=torch.complex64), mask, torch.ones(1), phase, phase, 0, 0)
    with pytest.raises(RuntimeError, match="shifts must lie"):
        blend(spec, spec.clone(), mask, torch.ones(1), phase, phase, 4, 0)
    with pytest.raises(RuntimeError, match="spec must be a contiguous"):
        blend(spec.transpose(-1, -2), spec.clone(), mask, torch.ones(1), phase, phase, 0, 0)
    with pytest.raises(RuntimeError, match="grad_src must be a dense"):
        torch.ops.mcmri_fast.dc_blend_backward_(
            spec, spec.clone(), mask, torch.ones(1), phase, phase, 0, 0, None, torch.zeros(1, 1, 4, 4, 2, dtype=torch.complex64)[..., 0]
        )


def test_column_ops_check_their_arguments():
    """The CPU column ops refuse malformed calls: the columns index spec's rows, so they are checked."""
    require_backend("cpu", "cpu")
    spec = torch.zeros(1, 1, 4, 6, dtype=torch.complex64)
    phase_h, phase_w = torch.ones(4, dtype=torch.complex64), torch.ones(6, dtype=torch.complex64)
    mask = torch.ones(1, 6, dtype=torch.uint8)
    src = torch.zeros(1, 1, 4, 2, dtype=torch.complex64)
    blend = torch.ops.mcmri_fast.dc_blend_columns_

    def call(columns=torch.tensor([1, 3]), src=src, mask=mask, kept=None):
        blend(spec, src, columns, mask, torch.ones(1), phase_h, phase_w, 0, 0, kept)

    call()  # well formed
    with pytest.raises(RuntimeError, match="columns must be increasing indices"):
        call(torch.tensor([1, 6]))
    with pytest.raises(RuntimeError, match="columns must be increasing indices"):
        call(torch.tensor([3, 1]))
    with pytest.raises(RuntimeError, match="columns must be increasing indices"):
        call(torch.tensor([-1, 3]))
    with pytest.raises(RuntimeError, match="columns must be a contiguous int64"):
        call(torch.tensor([1, 3], dtype=torch.int32))
    with pytest.raises(RuntimeError, match="src must be"):
        call(src=torch.zeros(1, 1, 4, 3, dtype=torch.complex64))
    with pytest.raises(RuntimeError, match="mask must be uint8"):
        call(mask=torch.ones(1, 5, dtype=torch.uint8))
    with pytest.raises(RuntimeError, match="kept must be"):
        call(kept=torch.zeros(1, 1, 4, 3, dtype=torch.complex64))
    with pytest.raises(RuntimeError, match="grad_src must be a dense"):
        torch.ops.mcmri_fast.dc_blend_columns_backward_(
            spec, src, torch.tensor([1, 3]), mask, torch.ones(1), phase_h, phase_w, 0, 0, None,
            torch.zeros(1, 1, 4, 2, 2, dtype=torch.complex64)[..., 0],
        )


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("sampled", ["none", "one-sample-empty"])
def test_column_masks_with_empty_samples(backend, device, sampled):
    """Column masks that sample nothing, for all samples or for one of them (the column kernels then
    visit no column, or columns that one sample leaves out)."""
    require_backend(backend, device)
    x, k0, _, weight, grad = _inputs((2, 2, 6, 9), 1, "BW", device=device, seed=11)
    mask = torch.zeros(2, 9, dtype=torch.bool, device=device)
    if sampled == "one-sample-empty":
        mask[1, ::2] = True
    got = _run(backend, x, k0, mask, weight, grad, True)
    expected = _run("reference", *(t.to(torch.complex128) for t in (x, k0)), mask, weight.double(), grad.to(torch.complex128), True)
    _assert_all_close(got, expected, atol=2e-4)
