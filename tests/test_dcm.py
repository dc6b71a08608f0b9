"""IMA's DCM: the mask schedule on hand-made masks (and a numpy formula of eqs. 16–17), its cache; the
data-consistency step on every fused backend against the reference (eqs. 15, 18, 19 as written), the
reference against a float64 numpy formula, autograd, opcheck, torch.compile and bad inputs."""
import numpy as np
import pytest
import torch

import mcmri_fast
from mcmri_fast import ops, reference
from mcmri_fast.data.masks import RadialMaskFunc, RandomMaskFunc
from mcmri_fast.ops import dcm as dcm_module
from mcmri_fast.ops.dcm import dcm_data_consistency, dcm_schedule

from fused_backends import FUSED, require_backend


def _columns(W, sampled):
    mask = torch.zeros(W, dtype=torch.bool)
    mask[list(sampled)] = True
    return mask


# ---------------------------------------------------------------------------------------------------
# The schedule


def test_column_mask_dilates_one_column_a_side_per_stage_and_contracts_back():
    """3 × 3 ones, δ = 3: a column next to a sampled one sees 3 known points. 6 stages: 3 up, 3 down."""
    got = dcm_schedule(_columns(16, [7, 8]), 6)
    expected = [_columns(16, range(7 - s, 9 + s)) for s in (0, 1, 2, 3, 2, 1, 0)]
    assert got.shape == (7, 16) and got.dtype == torch.bool
    torch.testing.assert_close(got, torch.stack(expected))


def test_dilation_stops_once_the_known_fraction_passes_ratio():
    # 2/10 → 4/10 → 6/10 > 0.5: the peak is the second dilation, then back to M⁰, which the rest keep
    got = dcm_schedule(_columns(10, [4, 5]), 12, ratio=0.5)
    d = [_columns(10, range(4 - s, 6 + s)) for s in range(3)]
    torch.testing.assert_close(got, torch.stack([d[0], d[1], d[2], d[1]] + [d[0]] * 9))


def test_kspace_wraps_around_the_edges():
    got = dcm_schedule(_columns(8, [0]), 2, delta=1.0)
    torch.testing.assert_close(got[1], _columns(8, [7, 0, 1]))


def test_column_schedule_is_the_2d_schedule_of_the_columns():
    mask = RandomMaskFunc([0.08], [4], seed=0)((12, 32)).mask
    column = dcm_schedule(mask.reshape(1, 32), 8)
    planar = dcm_schedule(mask.reshape(1, 32).expand(12, 32).contiguous(), 8)
    torch.testing.assert_close(planar, column.expand(9, 12, 32))


def test_2d_lines_spread_and_isolated_points_do_not():
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[6] = True
    mask[2, 2] = True
    got = dcm_schedule(mask, 4)
    expected = mask.clone()
    expected[5:8] = True
    torch.testing.assert_close(got[1], expected)
    expected[4:9] = True
    torch.testing.assert_close(got[2], expected)
    torch.testing.assert_close(got[3], got[1])
    torch.testing.assert_close(got[4], mask)


def test_2d_empty_centre_fills_from_its_rim():
    """A square ring (Chebyshev distance 3..4 from the centre) fills its hole one ring per dilation: inside,
    a side point sees 3 known points and a corner 5. Outside, a side point sees 3 and joins, the corner
    sees 1 and does not."""
    n, c = 16, 8
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    distance = torch.maximum((i - c).abs(), (j - c).abs())
    mask = (distance >= 3) & (distance <= 4)
    got = dcm_schedule(mask, 6)
    inside = distance <= 4
    for s in range(4):
        torch.testing.assert_close(got[s] & inside, (distance >= 3 - s) & inside, msg=f"dilation {s}")
    assert bool(got[3][c, c]) and bool(got[1][c + 5, c]) and not bool(got[1][c + 5, c + 5])
    torch.testing.assert_close(got[6], mask)


def test_fully_sampled_mask_never_changes():
    mask = torch.ones(8, 9, dtype=torch.bool)
    torch.testing.assert_close(dcm_schedule(mask, 12), mask.expand(13, 8, 9))


def _numpy_schedule(mask, stages, kernel, delta, ratio):
    """Eqs. 16–17 in float64 numpy, one mask: dilate (circular correlation with the kernel) while the
    known fraction is at most ratio and at most stages // 2 times, then retrace."""
    m0 = mask.astype(bool)
    kh, kw = kernel.shape
    masks = [m0]
    while len(masks) - 1 < stages // 2 and masks[-1].mean() <= ratio:
        current = masks[-1].astype(np.float64)
        spread = np.zeros_like(current)
        for a in range(kh):
            for b in range(kw):
                spread += kernel[a, b] * np.roll(current, (kh // 2 - a, kw // 2 - b), axis=(0, 1))
        masks.append((spread >= delta) | m0)
    k = len(masks) - 1
    return np.stack([masks[max(0, k - abs(t - k))] for t in range(stages + 1)])


@pytest.mark.parametrize("acceleration", [4, 8])
@pytest.mark.parametrize("kernel", ["ones", "cross"])
def test_radial_masks_against_the_numpy_formula(acceleration, kernel):
    mask = RadialMaskFunc([acceleration])((48, 40)).mask
    phi = torch.ones(3, 3, dtype=torch.float64) if kernel == "ones" else torch.tensor(
        [[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    got = dcm_schedule(mask, 12, kernel=phi, delta=2.0 if kernel == "cross" else 3.0, ratio=0.3)
    expected = _numpy_schedule(mask.numpy(), 12, phi.numpy(), 2.0 if kernel == "cross" else 3.0, 0.3)
    np.testing.assert_array_equal(got.numpy(), expected)
    assert bool((got >= mask).all()), "every stage's mask holds M⁰"
    assert not torch.equal(got[1], got[0]), "a radial mask spreads"


def test_batched_masks_have_their_own_schedules():
    a, b = _columns(16, [7, 8]), _columns(16, range(2, 16))
    got = dcm_schedule(torch.stack([a, b]).reshape(2, 1, 16), 6)
    assert got.shape == (7, 2, 1, 16)
    torch.testing.assert_close(got[:, 0, 0], dcm_schedule(a, 6))
    torch.testing.assert_close(got[:, 1, 0], dcm_schedule(b, 6))
    # b: 14/16 known, at most 0.9: one dilation fills it, which then stops the dilation
    assert bool(got[1, 1].all()) and torch.equal(got[2, 1, 0], b)


def test_schedule_is_cached_by_content():
    dcm_module._SCHEDULES.clear()
    mask = _columns(16, [7, 8])
    first = dcm_schedule(mask, 6)
    assert dcm_schedule(mask.clone(), 6) is first  # another tensor, the same content
    assert dcm_schedule(mask.float(), 6) is first  # 0/1 numbers of the same mask
    assert dcm_schedule(mask, 8) is not first
    other = mask.clone()
    other[0] = True
    assert not torch.equal(dcm_schedule(other, 6), first)


def test_schedule_compiles_fullgraph():
    mask = RadialMaskFunc([4])((24, 20)).mask
    compiled = torch.compile(lambda m: dcm_schedule(m, 12), fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(mask), dcm_schedule(mask, 12))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"stages": 0}, ValueError, "stages must be a positive integer"),
        ({"stages": 2.5}, ValueError, "stages must be a positive integer"),
        ({"kernel": torch.ones(2, 3)}, ValueError, "odd sizes"),
        ({"kernel": torch.ones(3)}, ValueError, "real 2-D tensor"),
        ({"kernel": torch.ones(3, 41)}, ValueError, "larger than the mask"),
        ({"ratio": 1.5}, ValueError, r"ratio must be a number in \[0, 1\]"),
        ({"delta": "3"}, TypeError, "delta must be a number"),
        ({"mask": torch.full((16,), 0.5)}, ValueError, "binary"),
        ({"mask": [1, 0]}, TypeError, "mask must be a torch.Tensor"),
    ],
)
def test_schedule_bad_inputs(kwargs, error, match):
    arguments = {"mask": _columns(16, [7]), "stages": 6, **kwargs}
    mask, stages = arguments.pop("mask"), arguments.pop("stages")
    with pytest.raises(error, match=match):
        dcm_schedule(mask, stages, **arguments)


# ---------------------------------------------------------------------------------------------------
# The data-consistency step


def _masks(form, B, H, W, generator):
    """(M⁰, Mᵗ) in the op's forms; Mᵗ a dilation of M⁰ ('W', 'HW', 'BW', 'B1HW') or an unrelated random
    mask ('unrelated': the op does not need M⁰ ⊆ Mᵗ)."""
    if form in ("W", "BW"):
        m0 = torch.rand((B, W) if form == "BW" else (W,), generator=generator) < 0.3
        m0[..., W // 2] = True
        return m0, dcm_schedule(m0.reshape(-1, 1, W), 4)[2].reshape(m0.shape)
    m0 = torch.rand(B, 1, H, W, generator=generator) < 0.3
    if form == "unrelated":
        return m0, torch.rand(B, 1, H, W, generator=generator) < 0.5
    mt = dcm_schedule(m0[:, 0], 4, delta=2.0)[2].unsqueeze(1)
    return (m0[0, 0], mt[0, 0]) if form == "HW" else (m0, mt)


def _inputs(shape, form, dtype=torch.float32, device="cpu", seed=0):
    """x, z, g, r, mask, dilated_mask, step, alpha, lam, grad."""
    generator = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    images = [torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(5)]
    mask, dilated = _masks(form, B, H, W, generator)
    coefficients = [torch.rand(1, generator=generator, dtype=torch.float64) + 0.2 for _ in range(3)]
    x, z, g, r, grad = (t.to(device=device, dtype=dtype) for t in images)
    step, alpha, lam = (t.to(device=device, dtype=dtype) for t in coefficients)
    return x, z, g, r, mask.to(device), dilated.to(device), step, alpha, lam, grad


NAMES = ("out", "grad_x", "grad_z", "grad_g", "grad_r", "grad_mask", "grad_dilated", "grad_step", "grad_alpha", "grad_lam")


def _run(backend, x, z, g, r, mask, dilated, step, alpha, lam, grad):
    """(out, gradients of ⟨out, grad⟩ to x, z, g, r, None, None, step, alpha, lam) on one backend."""
    tensors = [t.detach().clone().requires_grad_() for t in (x, z, g, r, step, alpha, lam)]
    with mcmri_fast.use_backend(backend):
        out = dcm_data_consistency(*tensors[:4], mask, dilated, *tensors[4:])
    grads = torch.autograd.grad(out, tensors, grad)
    return (out,) + grads[:4] + (None, None) + grads[4:]


def _assert_all_close(got, expected, atol, rtol=1e-4):
    for name, a, b in zip(NAMES, got, expected):
        if b is None:
            assert a is None, name
            continue
        # the coefficients' gradients sum the whole image: their tolerance grows with it
        scale = got[0].numel() ** 0.5 if name in ("grad_step", "grad_alpha", "grad_lam") else 1.0
        torch.testing.assert_close(a, b.to(a.dtype), atol=atol * scale, rtol=rtol, msg=lambda m: f"{name}: {m}")


SHAPES = [(1, 3, 8, 8), (2, 2, 7, 9), (1, 4, 16, 15)]
FORMS = ["W", "BW", "HW", "B1HW", "unrelated"]


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, form, shape):
    """float32 forward and fused backward against the reference in float64, and against its float32."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape != SHAPES[1]:
        pytest.skip("the Triton interpreter gets one shape")
    inputs = _inputs(shape, form, device=device)
    got = _run(backend, *inputs)
    as_double = tuple(t.double() if t.is_floating_point() else t for t in inputs)
    _assert_all_close(got, _run("reference", *as_double), atol=2e-5)
    _assert_all_close(got, _run("reference", *inputs), atol=2e-5)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("form", ["W", "B1HW"])
def test_fused_double_precision(backend, device, form):
    require_backend(backend, device)
    inputs = _inputs((2, 3, 9, 10), form, dtype=torch.float64, device=device, seed=1)
    _assert_all_close(_run(backend, *inputs), _run("reference", *inputs), atol=1e-12, rtol=1e-10)


def test_reference_is_the_papers_equations_in_numpy():
    """Eqs. 15, 18, 19 with numpy's centred FFTs in float64."""
    x, z, g, r, mask, dilated, step, alpha, lam, _ = _inputs((2, 2, 7, 8), "B1HW", dtype=torch.float64, seed=2)
    F = lambda a: np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(a, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    Fi = lambda a: np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(a, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    xn, zn, gn, rn = (t.numpy() for t in (x, z, g, r))
    m0, mt = mask.numpy().astype(np.float64), dilated.numpy().astype(np.float64)
    mu, a, l = step.item(), alpha.item(), lam.item()
    k, k0 = F(xn), m0 * F(zn)
    x_temp = Fi(k - mu * (m0 * k - k0)) - mu * (a * (xn - gn) + l * rn)
    x_hat = Fi((1 - mt) * F(x_temp) + mt * k)
    expected = Fi((1 - m0) * F(x_hat) + m0 * k0).real
    got = reference.dcm_data_consistency(x, z, g, r, mask, dilated, step, alpha, lam)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_without_dcm_it_is_data_consistency_after_the_gradient_step():
    """Mᵗ = M⁰: out = Re DC(x − μ d) with k0 = M⁰ F z, the existing op."""
    x, z, g, r, mask, _, step, alpha, lam, _ = _inputs((1, 2, 8, 10), "W", dtype=torch.float64, seed=3)
    got = dcm_data_consistency(x, z, g, r, mask, mask, step, alpha, lam)
    from mcmri_fast.data.fft import fft2c
    k0 = mask.to(torch.float64) * fft2c(z.to(torch.complex128))
    expected = ops.data_consistency(x - step * (alpha * (x - g) + lam * r), k0, mask).real
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("form", ["BW", "B1HW"])
def test_fused_gradcheck(backend, device, form):
    require_backend(backend, device)
    x, z, g, r, mask, dilated, step, alpha, lam, _ = _inputs((2, 2, 5, 6), form, dtype=torch.float64, device=device, seed=4)

    def f(x, z, g, r, step, alpha, lam):
        with mcmri_fast.use_backend(backend):
            return dcm_data_consistency(x, z, g, r, mask, dilated, step, alpha, lam)

    tensors = tuple(t.requires_grad_() for t in (x, z, g, r, step, alpha, lam))
    assert torch.autograd.gradcheck(f, tensors, fast_mode=backend == "triton")


def test_reference_gradcheck():
    x, z, g, r, mask, dilated, step, alpha, lam, _ = _inputs((1, 2, 5, 4), "B1HW", dtype=torch.float64, seed=5)
    tensors = tuple(t.requires_grad_() for t in (x, z, g, r, step, alpha, lam))
    f = lambda x, z, g, r, step, alpha, lam: reference.dcm_data_consistency(x, z, g, r, mask, dilated, step, alpha, lam)
    assert torch.autograd.gradcheck(f, tensors)


def _op_args(backend, form, device="cpu", seed=6):
    x, z, g, r, mask, dilated, step, alpha, lam, grad = _inputs((2, 3, 6, 7), form, device=device, seed=seed)
    x, z, g, r, mask, dilated, coefficients = dcm_module._validate(x, z, g, r, mask, dilated, step, alpha, lam)
    coef = torch.cat(coefficients)
    masks = dcm_module._half_weights(mask, x.dtype), dcm_module._half_weights(mask | dilated, x.dtype)
    return (x, z, g, r, coef) + masks, grad


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("form", ["W", "B1HW"])
def test_opcheck(backend, device, form):
    require_backend(backend, device)
    args, grad = _op_args(backend, form, device)
    args = tuple(t.requires_grad_() if i < 5 else t for i, t in enumerate(args))
    torch.library.opcheck(torch.ops.mcmri_fast.dcm_data_consistency.default, args + (backend,))
    x, z, g, r, coef, mask0, mask_u = args
    backward_args = (grad, x.detach(), g.detach(), r.detach(), coef.detach(), mask0, mask_u, backend)
    torch.library.opcheck(torch.ops.mcmri_fast.dcm_data_consistency_backward.default, backward_args)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs_and_stride0_gradient(backend, device):
    require_backend(backend, device)
    x, z, g, r, mask, dilated, step, alpha, lam, _ = _inputs((2, 3, 6, 8), "BW", device=device, seed=7)
    grad = torch.full((1, 1, 1, 1), 0.5, device=device).expand_as(x)
    expected = _run("reference", x, z, g, r, mask, dilated, step, alpha, lam, grad.contiguous())
    strided = [t.contiguous(memory_format=torch.channels_last) for t in (x, z)] + [t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in (g, r)]
    assert not any(t.is_contiguous() for t in strided)
    mask_nc = torch.stack([mask, mask], dim=-1)[..., 0]
    _assert_all_close(_run(backend, *strided, mask_nc, dilated, step, alpha, lam, grad), expected, atol=2e-5)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_torch_compile_fullgraph(backend):
    require_backend(backend, "cpu")
    x, z, g, r, mask, dilated, step, alpha, lam, grad = _inputs((1, 2, 8, 10), "B1HW", seed=8)
    x.requires_grad_()
    step.requires_grad_()

    def stage(x, z, g, r, step):
        return dcm_data_consistency(x, z, g, r, mask, dilated, step, alpha, lam)

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(stage, fullgraph=True, backend="aot_eager")
        out = compiled(x, z, g, r, step)
        got = (out,) + torch.autograd.grad(out, (x, step), grad)
    expected = _run("reference", x, z, g, r, mask, dilated, step, alpha, lam, grad)
    for a, b in zip(got, (expected[0], expected[1], expected[7])):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


def test_half_inputs_compute_in_float32():
    x, z, g, r, mask, dilated, step, alpha, lam, _ = _inputs((1, 2, 6, 6), "W", seed=9)
    got = dcm_data_consistency(x.half(), z.half(), g.half(), r.half(), mask, dilated, 0.5, 0.25, 0.1)
    assert got.dtype == torch.float32
    expected = dcm_data_consistency(x.half().float(), z.half().float(), g.half().float(), r.half().float(), mask,
                                    dilated, 0.5, 0.25, 0.1)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("backend,device", FUSED)
def test_empty_batch(backend, device):
    require_backend(backend, device)
    x, z, g, r, mask, dilated, step, alpha, lam, grad = _inputs((1, 0, 6, 7), "W", device=device)
    out, grad_x, *_ = _run(backend, x, z, g, r, mask, dilated, step, alpha, lam, grad)
    assert out.shape == x.shape and grad_x.shape == x.shape


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda a: a.update(x=a["x"][0]), ValueError, r"x must be \[B, C, H, W\]"),
        (lambda a: a.update(z=a["z"][:, :1]), ValueError, "z must have x's shape"),
        (lambda a: a.update(g=a["g"].to(torch.complex64)), TypeError, "g must be float32, float64, float16 or bfloat16"),
        (lambda a: a.update(r=a["r"].numpy()), TypeError, "r must be a torch.Tensor"),
        (lambda a: a.update(mask=torch.ones(5, dtype=torch.bool)), ValueError, r"mask must be \[W\]"),
        (lambda a: a.update(dilated_mask=torch.ones(3, 3)), ValueError, r"dilated_mask must be \[W\]"),
        (lambda a: a.update(mask=torch.full((7,), 0.5)), ValueError, "mask must be binary"),
        (lambda a: a.update(step=torch.ones(2)), ValueError, "step must hold one value"),
        (lambda a: a.update(alpha="1"), TypeError, "alpha must be a number or a torch.Tensor"),
        (lambda a: a.update(lam=torch.ones(1, dtype=torch.long)), TypeError, "lam must be a real floating tensor"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    x, z, g, r, mask, dilated, step, alpha, lam, _ = _inputs((1, 2, 6, 7), "W")
    arguments = dict(x=x, z=z, g=g, r=r, mask=mask, dilated_mask=dilated, step=step, alpha=alpha, lam=lam)
    change(arguments)
    with pytest.raises(error, match=match):
        dcm_data_consistency(**arguments)


def test_native_ops_check_their_arguments():
    (x, z, g, r, coef, mask0, mask_u), grad = _op_args("cpu", "W")
    with pytest.raises(RuntimeError, match="dcm_prologue: z must match x"):
        torch.ops.mcmri_fast.dcm_prologue(x, z[:, :1].contiguous(), g, r, coef)
    with pytest.raises(RuntimeError, match="coef must be a contiguous"):
        torch.ops.mcmri_fast.dcm_epilogue(x, x, g, r, coef[:2])
    spectra = torch.fft.rfft(torch.stack([x, x]), dim=-1)
    with pytest.raises(RuntimeError, match="masks must be contiguous"):
        torch.ops.mcmri_fast.dcm_blend(spectra, mask0[..., :-1].contiguous(), mask_u[..., :-1].contiguous(), coef)
    with pytest.raises(RuntimeError, match="spec must be"):
        torch.ops.mcmri_fast.dcm_split(spectra, mask0, mask_u)
    with pytest.raises(RuntimeError, match="proj must be"):
        torch.ops.mcmri_fast.dcm_backward(grad, x, x, g, r, coef)
