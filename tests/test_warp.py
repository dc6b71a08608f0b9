"""warp: every fused backend against the reference (F.grid_sample) and a float64 numpy bilinear
interpolation, autograd, registration and bad inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError, backend_status
from mcmri_fast.ops.warp import warp

from fused_backends import FUSED, require_backend

# [B, C, H, W]: odd and even sizes, one channel (DUN-SA's) and several; the interpreter gets the small ones.
SHAPES = [(1, 1, 16, 16), (2, 3, 7, 9), (1, 5, 13, 6), (3, 2, 5, 11)]
TRITON_SHAPES = [(2, 3, 7, 9), (3, 2, 5, 11)]
PADDINGS = ["zeros", "border", "reflection"]
# sub-pixel displacements, and displacements of a few image sizes (far past the border)
SCALES = {"subpixel": 0.8, "large": 2.5}


def _inputs(shape, scale="subpixel", dtype=torch.float32, device="cpu", seed=0):
    """image, flow, grad. The flow's sampled positions keep their fractional parts in [0.05, 0.95]: the
    gradient to the flow jumps at whole pixels (and the clipping and reflection edges lie there), where
    two correct implementations may round to either side."""
    B, C, H, W = shape
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(shape, generator=g, dtype=torch.float64)
    size = torch.tensor([W, H], dtype=torch.float64).reshape(1, 2, 1, 1)
    amplitude = SCALES[scale] * (size if scale == "large" else 1.0)
    flow = torch.randn(B, 2, H, W, generator=g, dtype=torch.float64) * amplitude
    base = torch.stack(torch.meshgrid(torch.arange(W, dtype=torch.float64), torch.arange(H, dtype=torch.float64),
                                      indexing="xy"))
    position = base + flow
    position = position.floor() + 0.05 + 0.9 * torch.rand(position.shape, generator=g, dtype=torch.float64)
    flow = position - base
    grad = torch.randn(shape, generator=g, dtype=torch.float64)
    return tuple(t.to(device=device, dtype=dtype) for t in (image, flow, grad))


def _run(backend, image, flow, grad, **options):
    """Output and gradients to (image, flow) of one backend."""
    image, flow = (t.detach().clone().requires_grad_() for t in (image, flow))
    with mcmri_fast.use_backend(backend):
        out = warp(image, flow, **options)
    return (out,) + torch.autograd.grad(out, (image, flow), grad)


def _assert_all_close(got, expected, atol, rtol=1e-5):
    for name, x, y in zip(("out", "grad_image", "grad_flow"), got, expected):
        torch.testing.assert_close(x, y.to(x.dtype), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


# --- an independent float64 model: bilinear interpolation in numpy ----------------------------------


def _numpy_coordinate(c, size, padding, align_corners):
    """The padding modes on plain numbers: reflection by the period of the mirrored image."""
    if padding == "zeros":
        return c
    if padding == "reflection":
        low, high = (0.0, size - 1.0) if align_corners else (-0.5, size - 0.5)
        period = 2 * (high - low)
        c = np.mod(c - low, period)
        c = np.where(c > high - low, period - c, c) + low
    return np.clip(c, 0, size - 1)


def _numpy_warp(image, flow, padding, align_corners):
    image, flow = image.double().numpy(), flow.double().numpy()
    B, C, H, W = image.shape
    rows, cols = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    out = np.zeros_like(image)
    for b in range(B):
        x = _numpy_coordinate(cols + flow[b, 0], W, padding, align_corners)
        y = _numpy_coordinate(rows + flow[b, 1], H, padding, align_corners)
        x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        for dy in (0, 1):
            for dx in (0, 1):
                xk, yk = x0 + dx, y0 + dy
                weight = (1 - np.abs(x - xk)) * (1 - np.abs(y - yk))
                inside = (xk >= 0) & (xk < W) & (yk >= 0) & (yk < H)
                values = image[b][:, np.clip(yk, 0, H - 1), np.clip(xk, 0, W - 1)]
                out[b] += np.where(inside, weight, 0.0) * values
    return torch.from_numpy(out)


# --- values and gradients against the reference ------------------------------------------------------


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("align_corners", [False, True], ids=["edges", "centres"])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(backend, device, shape, scale, padding, align_corners):
    """float32 forward and fused backward against the reference in float64 and in float32."""
    require_backend(backend, device)
    if backend == "triton" and device == "cpu" and shape not in TRITON_SHAPES:
        pytest.skip("the Triton interpreter gets the small shapes")
    inputs = _inputs(shape, scale, device=device)
    options = dict(padding=padding, align_corners=align_corners)
    got = _run(backend, *inputs, **options)
    _assert_all_close(got, _run("reference", *(t.double() for t in inputs), **options), atol=1e-4, rtol=1e-4)
    _assert_all_close(got, _run("reference", *inputs, **options), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
@pytest.mark.parametrize("align_corners", [False, True], ids=["edges", "centres"])
@pytest.mark.parametrize("padding", PADDINGS)
def test_against_numpy_bilinear(backend, device, padding, align_corners):
    """float64 values against an independent bilinear interpolation, sub-pixel and large displacements."""
    require_backend(backend, device)
    for scale in SCALES:
        image, flow, _ = _inputs((2, 3, 9, 8), scale, dtype=torch.float64, seed=1)
        with mcmri_fast.use_backend(backend):
            got = warp(image.to(device), flow.to(device), padding=padding, align_corners=align_corners)
        torch.testing.assert_close(got.cpu(), _numpy_warp(image, flow, padding, align_corners), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend,device", FUSED)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    for padding in PADDINGS:
        inputs = _inputs((2, 3, 7, 6), "large", dtype=torch.float64, device=device, seed=2)
        _assert_all_close(_run(backend, *inputs, padding=padding), _run("reference", *inputs, padding=padding),
                          atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
@pytest.mark.parametrize("padding", PADDINGS)
def test_gradcheck(backend, device, padding):
    """float64 gradcheck (positions away from whole pixels, where the derivative jumps)."""
    require_backend(backend, device)
    interpreted = backend == "triton" and device == "cpu"
    image, flow, _ = _inputs((1, 2, 4, 5) if interpreted else (2, 2, 5, 6), "subpixel", dtype=torch.float64,
                             device=device, seed=3)

    def f(image, flow):
        with mcmri_fast.use_backend(backend):
            return warp(image, flow, padding=padding)

    assert torch.autograd.gradcheck(f, (image.requires_grad_(), flow.requires_grad_()), eps=1e-7, atol=1e-6,
                                    fast_mode=interpreted)


@pytest.mark.parametrize("backend,device", FUSED)
def test_rigid_shift_is_exact(backend, device):
    """A whole-pixel translation moves every pixel exactly (zeros padding: zeros where it leaves the image)."""
    require_backend(backend, device)
    image = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(4)).to(device)
    flow = torch.zeros(2, 2, 9, 11, device=device)
    flow[:, 0], flow[:, 1] = 3.0, -2.0  # sample (j + 3, i − 2)
    with mcmri_fast.use_backend(backend):
        out = warp(image, flow, padding="zeros")
    expected = torch.zeros_like(image)
    expected[:, :, 2:, :-3] = image[:, :, :-2, 3:]
    assert torch.equal(out, expected)
    with mcmri_fast.use_backend("reference"):
        torch.testing.assert_close(warp(image, flow, padding="zeros"), expected)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_zero_flow_is_the_identity(backend, device):
    require_backend(backend, device)
    image = torch.randn(1, 2, 6, 7, generator=torch.Generator().manual_seed(5)).to(device)
    for padding in PADDINGS:
        with mcmri_fast.use_backend(backend):
            out = warp(image, torch.zeros(1, 2, 6, 7, device=device), padding=padding)
        torch.testing.assert_close(out, image, atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_complex_image_warps_both_parts(backend, device):
    require_backend(backend, device)
    image, flow, _ = _inputs((2, 3, 6, 7), device=device, seed=6)
    imag = torch.randn(image.shape, generator=torch.Generator().manual_seed(7)).to(device)
    with mcmri_fast.use_backend(backend):
        out = warp(torch.complex(image, imag), flow)
        expected = torch.complex(warp(image, flow), warp(imag, flow))
    assert out.dtype == torch.complex64
    torch.testing.assert_close(out, expected)
    # and gradients flow back to the complex image
    z = torch.complex(image, imag).requires_grad_()
    with mcmri_fast.use_backend(backend):
        (grad,) = torch.autograd.grad(warp(z, flow).abs().sum(), z)
    assert grad.shape == z.shape and grad.dtype == z.dtype


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(backend, device, dtype):
    require_backend(backend, device)
    inputs = _inputs((1, 2, 6, 5), dtype=dtype, device=device, seed=8)
    got = _run(backend, *inputs)
    assert all(t.dtype == dtype for t in got)
    tolerance = {torch.float16: 1e-2, torch.bfloat16: 6e-2}[dtype]
    _assert_all_close(got, _run("reference", *(t.float() for t in inputs)), atol=tolerance, rtol=tolerance)


@pytest.mark.parametrize("backend,device", FUSED + [pytest.param("reference", "cpu", id="reference")])
def test_noncontiguous_inputs(backend, device):
    require_backend(backend, device)
    image, flow, grad = _inputs((2, 3, 6, 5), "large", device=device, seed=9)
    expected = _run("reference", image, flow, grad)
    image_nc = image.contiguous(memory_format=torch.channels_last)
    flow_nc = torch.stack([flow, flow], dim=-1)[..., 1]
    grad_nc = grad.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not image_nc.is_contiguous() and not flow_nc.is_contiguous() and not grad_nc.is_contiguous()
    _assert_all_close(_run(backend, image_nc, flow_nc, grad_nc), expected, atol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_only_the_gradients_asked_for(backend, device):
    require_backend(backend, device)
    image, flow, grad = _inputs((1, 3, 5, 4), device=device, seed=10)
    expected = _run("reference", image, flow, grad)
    with mcmri_fast.use_backend(backend):
        f = flow.clone().requires_grad_()
        (grad_flow,) = torch.autograd.grad(warp(image, f), f, grad)  # DUN-SA's case: the reference is data
        i = image.clone().requires_grad_()
        (grad_image,) = torch.autograd.grad(warp(i, flow), i, grad)
    torch.testing.assert_close(grad_flow, expected[2], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grad_image, expected[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend,device", FUSED)
def test_empty_inputs(backend, device):
    require_backend(backend, device)
    for shape in ((2, 0, 4, 3), (0, 2, 4, 3), (1, 2, 0, 3)):
        image, flow, grad = _inputs(shape, device=device)
        out, grad_image, grad_flow = _run(backend, image, flow, grad)
        assert out.shape == image.shape and grad_image.shape == image.shape and grad_flow.shape == flow.shape
        assert not grad_flow.any()


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("padding", PADDINGS)
def test_opcheck(backend, device, padding):
    require_backend(backend, device)
    image, flow, grad = _inputs((2, 3, 4, 5), "large", device=device, seed=11)
    code = {"zeros": 0, "border": 1, "reflection": 2}[padding]
    for need_image, need_flow in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(torch.ops.mcmri_fast.warp_backward.default,
                              (grad, image, flow, code, False, need_image, need_flow, backend))
    torch.library.opcheck(torch.ops.mcmri_fast.warp.default,
                          (image.requires_grad_(), flow.requires_grad_(), code, False, backend))


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "inductor")])
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    image, flow, grad = _inputs((2, 3, 6, 7), seed=12)
    inputs = (image.requires_grad_(), flow.requires_grad_())

    def step(image, flow):
        return warp(image, flow) * 2

    with mcmri_fast.use_backend(backend):
        compiled = torch.compile(step, fullgraph=True, backend=compiler)
        out = compiled(*inputs)
        got = (out,) + torch.autograd.grad(out, inputs, grad)
    _assert_all_close((got[0] / 2,) + got[1:], _run("reference", image, flow, 2 * grad), atol=1e-4)


def test_reference_is_grid_sample_on_the_normalised_grid():
    """The reference's grid: pixel p at (2p + 1)/N − 1 (align_corners=False) and 2p/(N − 1) − 1 (True)."""
    image, flow, _ = _inputs((1, 2, 5, 6), dtype=torch.float64, seed=13)
    zero = torch.zeros_like(flow)
    for align_corners in (False, True):
        grid = reference.warp.__globals__["sampling_grid"](zero, align_corners)
        ys, xs = torch.linspace(-1, 1, 5, dtype=torch.float64), torch.linspace(-1, 1, 6, dtype=torch.float64)
        if not align_corners:
            ys, xs = ys * 4 / 5, xs * 5 / 6
        torch.testing.assert_close(grid, torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None])
        expected = F.grid_sample(image, reference.warp.__globals__["sampling_grid"](flow, align_corners),
                                 align_corners=align_corners, padding_mode="border")
        torch.testing.assert_close(reference.warp(image, flow, "border", align_corners), expected)


def test_dispatch_and_forcing():
    image, flow, _ = _inputs((1, 1, 4, 4))
    expected = "cpu" if backend_status("cpu", torch.device("cpu")) is None else "reference"
    from mcmri_fast.ops.warp import _warp

    assert _warp.select(image.device) == expected
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError, match="warp"):
        warp(image, flow)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda i, f: ((i.numpy(), f), {}), TypeError, "image must be a torch.Tensor"),
        (lambda i, f: ((i.to(torch.int32), f), {}), TypeError, "image must be a real floating or complex"),
        (lambda i, f: ((i, f.to(torch.int64)), {}), TypeError, "flow must be a real floating tensor"),
        (lambda i, f: ((i, f.to(torch.complex64)), {}), TypeError, "flow must be a real floating tensor"),
        (lambda i, f: ((i[0], f), {}), ValueError, r"image must be \[B, C, H, W\]"),
        (lambda i, f: ((i, f[:, :1]), {}), ValueError, r"flow must be \[B, 2, H, W\]"),
        (lambda i, f: ((i, f[..., :3]), {}), ValueError, r"flow must be \[B, 2, H, W\]"),
        (lambda i, f: ((i, f.to("meta")), {}), ValueError, "flow must be on image's device"),
        (lambda i, f: ((i, f), {"padding": "wrap"}), ValueError, "padding must be one of"),
        (lambda i, f: ((i, f), {"align_corners": 1}), TypeError, "align_corners must be a bool"),
        (lambda i, f: ((i[..., :1], f[..., :1]), {"align_corners": True}), ValueError, "align_corners=True needs"),
    ],
)
def test_bad_inputs_raise(change, error, match):
    image, flow, _ = _inputs((1, 2, 4, 5))
    args, kwargs = change(image, flow)
    with pytest.raises(error, match=match):
        warp(*args, **kwargs)


def test_native_ops_check_their_arguments():
    require_backend("cpu", "cpu")
    image, flow, grad = _inputs((1, 2, 4, 5))
    with pytest.raises(RuntimeError, match="flow must be"):
        torch.ops.mcmri_fast.warp_fwd(image, flow[:, :1].contiguous(), 2, False)
    with pytest.raises(RuntimeError, match="flow must be"):
        torch.ops.mcmri_fast.warp_fwd(image, flow.double(), 2, False)
    with pytest.raises(RuntimeError, match="padding must be"):
        torch.ops.mcmri_fast.warp_fwd(image, flow, 3, False)
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.mcmri_fast.warp_fwd(image.transpose(-1, -2), flow.transpose(-1, -2), 2, False)
    with pytest.raises(RuntimeError, match="grad must be"):
        torch.ops.mcmri_fast.warp_bwd(grad[..., :2].contiguous(), image, flow, 2, False, True, True)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        torch.ops.mcmri_fast.warp_fwd(image.half(), flow.half(), 2, False)
