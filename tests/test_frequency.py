"""Frequency-branch ops (FSMNet's FreBlock): every fused backend against the reference, autograd,
registration, torch.compile and bad inputs."""
import pytest
import torch
import torch.nn.functional as F

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError
from mcmri_fast.ops.frequency import frequency_epilogue, polar_to_spectrum, spectrum_to_polar

from fused_backends import FUSED, require_backend

# Half spectra [B, C, H, W//2 + 1] with odd sizes; C = 8 and FSMNet's 64 (tiny H, W for the interpreter).
SPECTRUM_SHAPES = [(2, 8, 5, 4), (1, 64, 3, 5), (2, 3, 7, 9)]
# (B, C, Co, H, W) of the epilogue: tl.dot's path (C, Co >= 16) and the small-channel path.
EPILOGUE_SHAPES = [(2, 8, 8, 5, 7), (1, 64, 64, 3, 5), (2, 64, 8, 4, 3), (1, 3, 24, 5, 5)]


def _assert_close(got, expected, atol, rtol=1e-4, names=None):
    for index, (a, b) in enumerate(zip(got, expected)):
        name = names[index] if names else str(index)
        torch.testing.assert_close(
            a, b.to(a.dtype), atol=atol, rtol=rtol, equal_nan=True, msg=lambda m, name=name: f"{name}: {m}"
        )


def _spectrum(shape, dtype=torch.complex64, device="cpu", seed=0):
    """Random complex values with exact zeros and signed zeros (the branch cut of the phase) mixed in."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, dtype=torch.complex128, generator=g)
    flat = z.view(-1)
    flat[::7] = 0
    flat[1::11] = torch.complex(torch.tensor(-1.5, dtype=torch.float64), torch.tensor(-0.0, dtype=torch.float64))
    flat[2::13] = torch.complex(torch.tensor(2.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    return z.to(dtype).to(device)


# ---------------------------------------------------------------------------------------------------
# spectrum_to_polar


def _run_polar(backend, z, grad_amplitude, grad_phase, signal_width=None):
    z = z.detach().clone().requires_grad_()
    with mcmri_fast.use_backend(backend):
        amplitude, phase = spectrum_to_polar(z, signal_width=signal_width)
    (grad,) = torch.autograd.grad((amplitude, phase), z, (grad_amplitude, grad_phase))
    return amplitude, phase, grad


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("shape", SPECTRUM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_spectrum_to_polar_matches_reference(backend, device, shape):
    """float32 forward and fused backward against the reference in float64; zeros get gradient 0."""
    require_backend(backend, device)
    z = _spectrum(shape, device=device)
    g = torch.Generator().manual_seed(1)
    grads = [torch.randn(shape, generator=g).to(device) for _ in range(2)]
    got = _run_polar(backend, z, *grads)
    expected = _run_polar("reference", z.to(torch.complex128), *(t.double() for t in grads))
    _assert_close(got, expected, atol=2e-5, names=("amplitude", "phase", "grad_spectrum"))
    assert (got[2][z == 0] == 0).all()
    negative_zero = (z.real < 0) & (z.imag == 0) & torch.signbit(z.imag)
    assert negative_zero.any() and (got[1][negative_zero] < 0).all()  # atan2(−0, x < 0) = −π


def test_self_conjugate_mask_is_where_rfft2_is_real():
    """The mask marks exactly the bins where rfft2 of a real signal is real (float64: exact zeros apart
    from rounding), for every parity of height and width."""
    for height, width in ((6, 8), (5, 7), (6, 7), (5, 8), (1, 1), (2, 2)):
        x = torch.randn(3, height, width, dtype=torch.float64, generator=torch.Generator().manual_seed(height * width))
        real_bins = (torch.fft.rfft2(x).imag.abs() < 1e-12).all(0)
        assert torch.equal(reference.frequency.self_conjugate_mask(height, width), real_bins), (height, width)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
@pytest.mark.parametrize("height,width", [(6, 8), (5, 7), (6, 7), (5, 8)])
def test_spectrum_to_polar_self_conjugate_bins(backend, device, height, width):
    """With signal_width, the imaginary parts at the self-conjugate bins of an rfft2 half spectrum count
    as +0 (here noise of either sign, the real parts negative and positive): the phase there is 0 or π
    by the sign of the real part, and no gradient reaches the imaginary part. Elsewhere nothing changes."""
    require_backend(backend, device)
    g = torch.Generator().manual_seed(height + width)
    z = torch.fft.rfft2(torch.randn(2, 3, height, width, generator=g))
    bins = reference.frequency.self_conjugate_mask(height, width)
    noise = 1e-6 * torch.randn(z.shape, generator=g)
    sign = torch.where(torch.rand(z.shape, generator=g) < 0.5, -1.0, 1.0)
    z = torch.where(bins, torch.complex(sign * (z.real.abs() + 0.5), noise), z).to(device)
    grads = [torch.randn(z.shape, generator=g).to(device) for _ in range(2)]
    amplitude, phase, grad = _run_polar(backend, z, *grads, signal_width=width)
    torch.testing.assert_close(phase[..., bins].cpu(), torch.where(sign < 0, torch.pi, 0.0)[..., bins])
    torch.testing.assert_close(amplitude[..., bins], z.real[..., bins].abs())
    assert (grad.imag[..., bins] == 0).all()
    torch.testing.assert_close(grad.real[..., bins], (grads[0] * torch.sign(z.real))[..., bins])
    plain = _run_polar(backend, z, *grads)
    for got, expected in zip((amplitude, phase, grad), plain):
        torch.testing.assert_close(got[..., ~bins], expected[..., ~bins], atol=0, rtol=0)
    expected = _run_polar("reference", z.to(torch.complex128), *(t.double() for t in grads), signal_width=width)
    _assert_close((amplitude, phase, grad), expected, atol=2e-5, names=("amplitude", "phase", "grad_spectrum"))


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("used", ["amplitude", "phase"])
def test_spectrum_to_polar_one_output_used(backend, device, used):
    """The unused output sends no gradient (None reaches the backward, which counts it as zero)."""
    require_backend(backend, device)
    z = _spectrum((2, 3, 4, 5), device=device, seed=2)
    grad = torch.randn(2, 3, 4, 5, device=device)
    results = []
    for name in (backend, "reference"):
        zz = z.detach().clone().requires_grad_()
        with mcmri_fast.use_backend(name):
            amplitude, phase = spectrum_to_polar(zz)
        results.append(torch.autograd.grad(amplitude if used == "amplitude" else phase, zz, grad)[0])
    torch.testing.assert_close(results[0], results[1], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend,device", FUSED)
def test_spectrum_to_polar_double_and_noncontiguous(backend, device):
    require_backend(backend, device)
    z = _spectrum((2, 5, 3, 4), dtype=torch.complex128, device=device, seed=3).transpose(1, 3)
    assert not z.is_contiguous()
    grads = [torch.randn(z.shape, dtype=torch.float64, device=device).expand_as(z) for _ in range(2)]
    got = _run_polar(backend, z, *grads)
    expected = _run_polar("reference", z, *grads)
    assert got[0].dtype == torch.float64
    _assert_close(got, expected, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_stride0_gradients(backend, device):
    """`(amplitude.sum() + phase.sum()).backward()` sends expanded scalars (stride 0) to the backward."""
    require_backend(backend, device)
    z = _spectrum((1, 3, 5, 4), device=device, seed=4)
    results = []
    for name in (backend, "reference"):
        zz = z.detach().clone().requires_grad_()
        with mcmri_fast.use_backend(name):
            amplitude, phase = spectrum_to_polar(zz)
            out = polar_to_spectrum(amplitude, phase)
        (out.real.sum() + 2 * out.imag.sum() + amplitude.sum()).backward()
        results.append(zz.grad)
    torch.testing.assert_close(results[0], results[1], atol=2e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------
# polar_to_spectrum


def _polar_inputs(shape, residuals, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    amplitude = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype).to(device)
    phase = (4 * torch.rand(shape, generator=g, dtype=torch.float64) - 2).to(dtype).to(device)
    extra = [torch.randn(shape, generator=g, dtype=torch.float64).to(dtype).to(device) if r else None for r in residuals]
    grad = torch.randn(shape, generator=g, dtype=torch.complex128).to(device)
    return [amplitude, phase] + extra, grad


def _run_recombine(backend, inputs, grad):
    inputs = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    with mcmri_fast.use_backend(backend):
        out = polar_to_spectrum(*inputs)
    present = [t for t in inputs if t is not None]
    return (out,) + torch.autograd.grad(out, present, grad.to(out.dtype))


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("shape", SPECTRUM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("residuals", [(True, True), (False, False), (True, False), (False, True)],
                         ids=["both-residuals", "no-residual", "amplitude-residual", "phase-residual"])
def test_polar_to_spectrum_matches_reference(backend, device, shape, residuals):
    require_backend(backend, device)
    inputs, grad = _polar_inputs(shape, residuals, device=device)
    got = _run_recombine(backend, inputs, grad)
    expected = _run_recombine("reference", [None if t is None else t.double() for t in inputs], grad)
    _assert_close(got, expected, atol=2e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_polar_to_spectrum_mixed_precision(backend, device):
    """Half-precision convolution outputs with float32 residuals (autocast): complex64 out, gradients in
    each input's own dtype; one float64 input makes it complex128."""
    require_backend(backend, device)
    (amplitude, phase, amplitude_residual, phase_residual), grad = _polar_inputs((1, 3, 5, 4), (True, True), device=device, seed=5)
    inputs = [amplitude.half(), phase.bfloat16(), amplitude_residual, phase_residual]
    got = _run_recombine(backend, inputs, grad)
    assert got[0].dtype == torch.complex64
    assert [g.dtype for g in got[1:]] == [torch.float16, torch.bfloat16, torch.float32, torch.float32]
    expected = _run_recombine("reference", [t.double() for t in inputs], grad)
    _assert_close(got[:1], expected[:1], atol=1e-5)
    _assert_close(got[1:], expected[1:], atol=2e-2, rtol=1e-2)  # the half-precision gradients are rounded
    with mcmri_fast.use_backend(backend):
        assert polar_to_spectrum(amplitude.double(), phase).dtype == torch.complex128


@pytest.mark.parametrize("backend,device", FUSED)
def test_polar_to_spectrum_eps(backend, device):
    """At a = 0 the spectrum is FSMNet's guard: 2·eps + i·eps."""
    require_backend(backend, device)
    zeros = torch.zeros(2, 3, device=device)
    with mcmri_fast.use_backend(backend):
        out = polar_to_spectrum(zeros, zeros + 1.0, eps=1e-3)
    torch.testing.assert_close(out, torch.full((2, 3), 2e-3 + 1e-3j, device=device))


# ---------------------------------------------------------------------------------------------------
# frequency_epilogue


def _epilogue_inputs(shape, with_bias=True, nonfinite=False, dtype=torch.float32, device="cpu", seed=0, conv_weight=True):
    B, C, Co, H, W = shape
    g = torch.Generator().manual_seed(seed)
    y = torch.randn((B, C, H, W), generator=g, dtype=torch.float64)
    weight = torch.randn((Co, C, 1, 1) if conv_weight else (Co, C), generator=g, dtype=torch.float64) / C**0.5
    bias = torch.randn(Co, generator=g, dtype=torch.float64) if with_bias else None
    residual = torch.randn((B, Co, H, W), generator=g, dtype=torch.float64)
    grad = torch.randn((B, Co, H, W), generator=g, dtype=torch.float64)
    y.view(-1)[::5] = 0  # the sign of |y|'s gradient is 0 there
    if nonfinite:
        y[0, 0, 0, 1] = float("nan")
        y[-1, -1, -1, -1] = float("inf")
        residual[0, -1, 1, 0] = float("-inf")
        residual[-1, 0, 0, 0] = float("nan")
        residual[0, 0, -1, -1] = float("inf")
    tensors = [y, weight, bias, residual]
    return [None if t is None else t.to(dtype).to(device) for t in tensors], grad.to(dtype).to(device)


def _run_epilogue(backend, inputs, grad):
    inputs = [None if t is None else t.detach().clone().requires_grad_() for t in inputs]
    with mcmri_fast.use_backend(backend):
        out = frequency_epilogue(*inputs)
    present = [t for t in inputs if t is not None]
    return (out,) + torch.autograd.grad(out, present, grad.to(out.dtype))


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("shape", EPILOGUE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "nonfinite"])
def test_epilogue_matches_reference(backend, device, shape, nonfinite):
    require_backend(backend, device)
    inputs, grad = _epilogue_inputs(shape, nonfinite=nonfinite, device=device)
    got = _run_epilogue(backend, inputs, grad)
    expected = _run_epilogue("reference", [t.double() for t in inputs], grad)
    _assert_close(got, expected, atol=1e-4, names=("out", "grad_y", "grad_weight", "grad_bias", "grad_residual"))
    if nonfinite:
        assert torch.isfinite(got[0]).all() and (got[0] == 1e-5).any()


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("with_bias,shape", [(True, (2, 16, 5, 3, 5)), (False, (1, 16, 16, 3, 5))], ids=["bias", "no-bias"])
def test_epilogue_forms_and_double(backend, device, with_bias, shape):
    """A [Co, C] weight, no bias, float64 (both Triton paths), some inputs without gradients."""
    require_backend(backend, device)
    inputs, grad = _epilogue_inputs(shape, with_bias, dtype=torch.float64, device=device, seed=6, conv_weight=False)
    got = _run_epilogue(backend, inputs, grad)
    expected = _run_epilogue("reference", inputs, grad)
    _assert_close(got, expected, atol=1e-10, rtol=1e-10)
    y, weight, bias, residual = inputs
    weight = weight.clone().requires_grad_()
    with mcmri_fast.use_backend(backend):
        out = frequency_epilogue(y, weight, bias, residual, nonfinite=0.5)
    (grad_weight,) = torch.autograd.grad(out, weight, grad)
    torch.testing.assert_close(grad_weight, expected[2])


@pytest.mark.parametrize("backend,device", FUSED)
def test_epilogue_half_residual(backend, device):
    """A half-precision residual (autocast) gives a float32 output and a float16 residual gradient."""
    require_backend(backend, device)
    (y, weight, bias, residual), grad = _epilogue_inputs((1, 16, 16, 3, 4), device=device, seed=7)
    inputs = [y, weight, bias, residual.half()]
    got = _run_epilogue(backend, inputs, grad)
    assert got[0].dtype == torch.float32 and got[-1].dtype == torch.float16
    expected = _run_epilogue("reference", [t.double() for t in inputs], grad)
    _assert_close(got[:-1], expected[:-1], atol=1e-4)


# ---------------------------------------------------------------------------------------------------
# gradcheck, opcheck, torch.compile


def test_reference_gradcheck():
    # Away from 0 (|z| is not differentiable there) and the branch cut of the phase.
    z = torch.randn(1, 2, 3, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(8)).requires_grad_()
    assert torch.autograd.gradcheck(lambda z: reference.spectrum_to_polar(z), (z,))
    assert torch.autograd.gradcheck(lambda z: reference.spectrum_to_polar(z, 6), (z,))
    (a, p, ar, pr), _ = _polar_inputs((1, 2, 3, 4), (True, True), dtype=torch.float64, seed=9)
    assert torch.autograd.gradcheck(reference.polar_to_spectrum, tuple(t.requires_grad_() for t in (a, p, ar, pr)))
    (y, w, b, r), _ = _epilogue_inputs((1, 3, 2, 3, 4), dtype=torch.float64, seed=10)
    y = torch.where(y == 0, torch.ones_like(y), y)
    assert torch.autograd.gradcheck(reference.frequency_epilogue, tuple(t.requires_grad_() for t in (y, w, b, r)))


@pytest.mark.parametrize("backend,device", FUSED[:1] + FUSED[2:3])
def test_fused_gradcheck(backend, device):
    """float64 gradcheck through the fused backward kernels of the three ops."""
    require_backend(backend, device)

    def forced(op):
        def run(*args):
            with mcmri_fast.use_backend(backend):
                return op(*args)

        return run

    z = torch.randn(1, 2, 3, 4, dtype=torch.complex128, generator=torch.Generator().manual_seed(8))
    z = z.to(device).requires_grad_()
    assert torch.autograd.gradcheck(forced(spectrum_to_polar), (z,))
    assert torch.autograd.gradcheck(forced(lambda z: spectrum_to_polar(z, signal_width=6)), (z,))
    (a, p, ar, pr), _ = _polar_inputs((1, 2, 3, 4), (True, True), dtype=torch.float64, device=device, seed=9)
    assert torch.autograd.gradcheck(forced(polar_to_spectrum), tuple(t.requires_grad_() for t in (a, p, ar, pr)))
    (y, w, b, r), _ = _epilogue_inputs((1, 3, 2, 3, 4), dtype=torch.float64, device=device, seed=10)
    y = torch.where(y == 0, torch.ones_like(y), y)
    assert torch.autograd.gradcheck(forced(frequency_epilogue), tuple(t.requires_grad_() for t in (y, w, b, r)))


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    require_backend(backend, device)
    ops = torch.ops.mcmri_fast
    z = _spectrum((2, 3, 4, 5), device=device, seed=11)
    g = torch.randn(2, 3, 4, 5, device=device)
    for width in (None, 8, 9):
        torch.library.opcheck(ops.spectrum_to_polar.default, (z.detach().requires_grad_(), width, backend))
        torch.library.opcheck(ops.spectrum_to_polar_backward.default, (z.detach(), g, None, width, backend))
        torch.library.opcheck(ops.spectrum_to_polar_backward.default, (z.detach(), g, g.clone(), width, backend))
    (a, p, ar, pr), grad = _polar_inputs((2, 3, 4, 5), (True, False), device=device, seed=12)
    args = (a.requires_grad_(), p.requires_grad_(), ar.requires_grad_(), pr)
    torch.library.opcheck(ops.polar_to_spectrum.default, args + (1e-8, backend))
    torch.library.opcheck(ops.polar_to_spectrum_backward.default, (grad.to(torch.complex64), a.detach(), p.detach(), ar.detach(), None, backend))
    # Finite inputs: opcheck compares gradients without equal_nan (the other tests cover non-finite values).
    (y, w, b, r), grad = _epilogue_inputs((2, 16, 8, 3, 5), device=device, seed=13, conv_weight=False)
    for keep_mask in (True, False):
        args = (y.requires_grad_(keep_mask), w.requires_grad_(keep_mask), b, r, 1e-5, keep_mask, backend)
        torch.library.opcheck(ops.frequency_epilogue.default, args)
    finite = torch.rand(grad.shape, generator=torch.Generator().manual_seed(13)).to(device) > 0.1
    for needs in ((True, True, True), (False, True, False), (True, False, False)):
        torch.library.opcheck(ops.frequency_epilogue_backward.default, (grad, y.detach(), w.detach(), finite, *needs, backend))


def _fre_block(x, conv_in, amp_convs, pha_convs, conv_out, inner_out):
    """A FreBlock-like function (FSMNet's frequency block) on the public ops."""
    H, W = x.shape[-2:]
    spectrum = torch.fft.rfft2(F.conv2d(x, conv_in), norm="backward")
    amplitude, phase = spectrum_to_polar(spectrum, signal_width=W)
    amp = F.conv2d(F.leaky_relu(F.conv2d(amplitude, amp_convs[0], padding=1), 0.1), amp_convs[1], padding=1)
    pha = F.conv2d(F.leaky_relu(F.conv2d(phase, pha_convs[0], padding=1), 0.1), pha_convs[1], padding=1)
    y = torch.fft.irfft2(polar_to_spectrum(amp, pha, amplitude, phase), s=(H, W), norm="backward")
    return frequency_epilogue(y, conv_out, inner_out, x)


# On "reference": torch.compile of the reference block trains (Inductor once failed on its complex
# gradients), so the compile provider of the benchmarks can time the reference network's training step.
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("compiler", ["inductor", "aot_eager"])
def test_torch_compile_fullgraph(compiler, backend):
    require_backend(backend, "cpu")
    g = torch.Generator().manual_seed(14)
    C = 8
    x = torch.randn(2, C, 8, 10, generator=g, requires_grad=True)
    params = [torch.randn(C, C, 1, 1, generator=g) / C,
              [torch.randn(C, C, 3, 3, generator=g) / (3 * C) for _ in range(2)],
              [torch.randn(C, C, 3, 3, generator=g) / (3 * C) for _ in range(2)],
              torch.randn(C, C, 1, 1, generator=g) / C, torch.randn(C, generator=g)]
    leaves = [params[0], *params[1], *params[2], params[3], params[4]]
    for leaf in leaves:
        leaf.requires_grad_()
    grad = torch.randn(2, C, 8, 10, generator=g)
    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(_fre_block, fullgraph=True, backend=compiler)
        out = compiled(x, *params)
        got = (out,) + torch.autograd.grad(out, [x] + leaves, grad)
    with mcmri_fast.use_backend("reference"):
        out = _fre_block(x, *params)
        expected = (out,) + torch.autograd.grad(out, [x] + leaves, grad)
    _assert_close(got, expected, atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------------------------------------------
# Bad inputs and backends


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: spectrum_to_polar(torch.randn(3)), TypeError, "spectrum must be complex64 or complex128"),
        (lambda: spectrum_to_polar([1j]), TypeError, "spectrum must be a torch.Tensor"),
        (lambda: spectrum_to_polar(torch.ones(2, 3, dtype=torch.complex64), signal_width=3), ValueError,
         r"spectrum must be \[\.\.\., H, signal_width // 2 \+ 1\] = \[\.\.\., H, 2\]"),
        (lambda: spectrum_to_polar(torch.ones(3, dtype=torch.complex64), signal_width=4), ValueError, "got shape"),
        (lambda: spectrum_to_polar(torch.ones(2, 3, dtype=torch.complex64), signal_width=True), TypeError,
         "signal_width must be a positive int"),
        (lambda: spectrum_to_polar(torch.ones(2, 3, dtype=torch.complex64), signal_width=0), TypeError,
         "signal_width must be a positive int"),
        (lambda: polar_to_spectrum(torch.ones(3), torch.ones(4)), ValueError, "phase must have amplitude's shape"),
        (lambda: polar_to_spectrum(torch.ones(3), torch.ones(3, dtype=torch.int32)), TypeError, "phase must be a real"),
        (lambda: polar_to_spectrum(torch.ones(3), torch.ones(3), torch.ones(3, dtype=torch.complex64)), TypeError,
         "amplitude_residual must be a real"),
        (lambda: polar_to_spectrum(torch.ones(3), torch.ones(3), None, torch.ones(3, device="meta")), ValueError,
         "phase_residual must be on amplitude's device"),
        (lambda: polar_to_spectrum(torch.ones(3), torch.ones(3), eps="1"), TypeError, "eps must be a real number"),
        (lambda: frequency_epilogue(torch.ones(2, 3, 4), torch.ones(5, 3), None, torch.ones(2, 5, 4)), ValueError,
         r"y must be \[B, C, H, W\]"),
        (lambda: frequency_epilogue(torch.ones(1, 3, 4, 4), torch.ones(5, 2), None, torch.ones(1, 5, 4, 4)), ValueError,
         "weight must be"),
        (lambda: frequency_epilogue(torch.ones(1, 3, 4, 4), torch.ones(5, 3, 3, 3), None, torch.ones(1, 5, 4, 4)),
         ValueError, "weight must be"),
        (lambda: frequency_epilogue(torch.ones(1, 3, 4, 4), torch.ones(5, 3), torch.ones(4), torch.ones(1, 5, 4, 4)),
         ValueError, "bias must be"),
        (lambda: frequency_epilogue(torch.ones(1, 3, 4, 4), torch.ones(5, 3), None, torch.ones(1, 5, 4, 3)), ValueError,
         "residual must be"),
        (lambda: frequency_epilogue(torch.ones(1, 3, 4, 4), torch.ones(5, 3), None, torch.ones(1, 5, 4, 4), nonfinite=None),
         TypeError, "nonfinite must be a real number"),
        (lambda: frequency_epilogue(torch.ones(1, 3, 4, 4, dtype=torch.int64), torch.ones(5, 3), None,
                                    torch.ones(1, 5, 4, 4)), TypeError, "y must be a real"),
    ],
)
def test_bad_inputs_raise(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_native_ops_check_their_arguments():
    """The C++ ops refuse malformed calls instead of reading out of bounds."""
    require_backend("cpu", "cpu")
    ops = torch.ops.mcmri_fast
    with pytest.raises(RuntimeError, match="spectrum must be complex"):
        ops.freq_spectrum_to_polar(torch.ones(3), None)
    with pytest.raises(RuntimeError, match="grad_phase must be a real tensor"):
        ops.freq_spectrum_to_polar_backward(torch.ones(3, dtype=torch.complex64), None, torch.ones(4), None)
    with pytest.raises(RuntimeError, match="last size must be signal_width / 2 \\+ 1 = 4"):
        ops.freq_spectrum_to_polar(torch.ones(2, 3, dtype=torch.complex64), 6)
    with pytest.raises(RuntimeError, match="last size must be signal_width / 2 \\+ 1"):
        ops.freq_spectrum_to_polar_backward(torch.ones(3, dtype=torch.complex64), None, None, 4)
    with pytest.raises(RuntimeError, match="phase_residual must match"):
        ops.freq_polar_to_spectrum(torch.ones(3), torch.ones(3), None, torch.ones(3, dtype=torch.float64), 1e-8)
    with pytest.raises(RuntimeError, match="residual must be"):
        ops.freq_epilogue(torch.ones(1, 3, 4, 4), torch.ones(5, 3), None, torch.ones(1, 5, 4, 5), 1e-5, False)
    with pytest.raises(RuntimeError, match="finite must be a bool tensor"):
        ops.freq_epilogue_backward(torch.ones(1, 5, 4, 4), torch.ones(1, 3, 4, 4), torch.ones(5, 3),
                                   torch.ones(1, 5, 4, 4), True, True, True)


def test_forcing_an_unavailable_backend_raises():
    z = torch.ones(3, dtype=torch.complex64)
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="spectrum_to_polar"):
        spectrum_to_polar(z)


def test_every_available_backend_agrees():
    """The automatic choice and every forced backend give the reference's result on CPU."""
    z = _spectrum((1, 2, 3, 4), seed=15)
    expected = reference.spectrum_to_polar(z)
    for backend in [None] + mcmri_fast.available_backends("cpu"):
        with mcmri_fast.use_backend(backend):
            got = spectrum_to_polar(z)
        _assert_close(got, expected, atol=1e-6)


_BASELINE_CHECK = """
import torch, mcmri_fast
from mcmri_fast import reference
from mcmri_fast.ops.frequency import frequency_epilogue, polar_to_spectrum, spectrum_to_polar
g = torch.Generator().manual_seed(0)
z = torch.randn(2, 3, 5, 7, dtype=torch.complex64, generator=g)
z.view(-1)[::4] = 0
y, w, r = torch.randn(2, 8, 5, 7, generator=g), torch.randn(8, 8, generator=g), torch.randn(2, 8, 5, 7, generator=g)
r[0, 0, 0, 0] = float("nan")
for backend in ("cpu", "reference"):
    leaves = [t.clone().requires_grad_() for t in (z, y, w, r)]
    with mcmri_fast.use_backend(backend):
        amplitude, phase = spectrum_to_polar(leaves[0])
        out = frequency_epilogue(leaves[1], leaves[2], None, leaves[3])
        total = polar_to_spectrum(amplitude, phase, amplitude, phase).abs().sum() + out.sum()
    result = [total.detach()] + list(torch.autograd.grad(total, leaves))
    if backend == "cpu":
        fused = result
for a, b in zip(fused, result):
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
"""


def test_baseline_cpu_kernels(run_on_baseline_cpu_kernels):
    """The baseline (non-AVX2) build of the CPU kernels against the reference."""
    require_backend("cpu", "cpu")
    run_on_baseline_cpu_kernels(_BASELINE_CHECK)
