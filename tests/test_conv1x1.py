"""conv1x1: the matrix-product path (the cpu backend) against F.conv2d, the reference on CUDA tensors,
autograd, registration, the modules that use it and bad inputs."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError, backend_status
from mcmri_fast.nn import ChannelAttention, UpSample
from mcmri_fast.ops.conv1x1 import _conv1x1, conv1x1

from fused_backends import assert_all_close, output_and_gradients, require_backend

# The op's one fused backend (tests/test_op_backends.py checks that forcing another raises).
CPU = [pytest.param("cpu", "cpu", id="cpu")]

# (B, C, Co, H, W, bias): odd sizes, C in {8, 64}, batch 1 (no stacking) and above, Co < C and > C
CASES = [(1, 8, 16, 7, 9, True), (3, 64, 64, 5, 3, False), (2, 8, 3, 11, 1, True), (1, 64, 128, 13, 6, False)]


def _inputs(case, dtype=torch.float32, device="cpu", seed=0):
    B, C, Co, H, W, bias = case
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    args = (randn(B, C, H, W), randn(Co, C, 1, 1, scale=C**-0.5), randn(Co) if bias else None)
    return args, randn(B, Co, H, W)


def _run(backend, args, grad):
    return output_and_gradients(conv1x1, backend, args, grad)


def _assert_all_close(got, expected, atol, rtol):
    assert_all_close(("out", "grad_x", "grad_weight", "grad_bias"), got, expected, atol, rtol)


@pytest.mark.parametrize("backend,device", CPU)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + ("-bias" if c[5] else ""))
def test_fused_matches_reference(backend, device, case):
    """float32 output and gradients against F.conv2d in float64, and against its float32 backward."""
    require_backend(backend, device)
    args, grad = _inputs(case, device=device)
    got = _run(backend, args, grad)
    _assert_all_close(got, _run("reference", tuple(None if t is None else t.double() for t in args), grad.double()), 1e-4, 1e-4)
    _assert_all_close(got, _run("reference", args, grad), 1e-4, 1e-4)


@pytest.mark.parametrize("backend,device", CPU)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    args, grad = _inputs(CASES[0], dtype=torch.float64, device=device, seed=1)
    _assert_all_close(_run(backend, args, grad), _run("reference", args, grad), 1e-12, 1e-10)


def test_cuda_tensors_take_the_reference():
    """On CUDA tensors the automatic choice is the reference: torch's convolution, cuDNN."""
    assert _conv1x1.select(torch.device("cuda")) == "reference"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(dtype):
    args, grad = _inputs(CASES[0], dtype=dtype, seed=2)
    got = _run("cpu", args, grad)
    assert all(t.dtype == dtype for t in got)
    expected = _run("reference", tuple(t.float() for t in args), grad.float())
    _assert_all_close(got, expected, 5e-2, 5e-2)


def test_noncontiguous_and_stride0_gradient():
    args, _ = _inputs(CASES[0], seed=3)
    x = args[0].transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    grad = torch.ones(1, 1, 1, 1).expand(1, 16, 7, 9)
    _assert_all_close(_run("cpu", (x,) + args[1:], grad), _run("reference", args, grad.contiguous()), 1e-4, 1e-4)


def test_only_some_gradients():
    (x, weight, bias), grad = _inputs(CASES[0], seed=4)
    weight.requires_grad_()
    out = conv1x1(x, weight, bias)
    (grad_weight,) = torch.autograd.grad(out, weight, grad)
    torch.testing.assert_close(grad_weight, torch.einsum("bohw,bchw->oc", grad, x).view_as(weight), atol=1e-4, rtol=1e-4)


def test_gradcheck_and_opcheck():
    args, _ = _inputs((2, 3, 2, 4, 3, True), dtype=torch.float64, seed=5)
    args = tuple(t.requires_grad_() for t in args)
    for backend in ("cpu", "reference"):

        def op(*a):
            with mcmri_fast.use_backend(backend):
                return conv1x1(*a)

        assert torch.autograd.gradcheck(op, args), backend
    (x, weight, bias), grad = _inputs(CASES[0], seed=6)
    torch.library.opcheck(torch.ops.mcmri_fast.conv1x1, (x, weight.flatten(1), bias, "cpu"))
    torch.library.opcheck(
        torch.ops.mcmri_fast.conv1x1_backward, (grad, x, weight.flatten(1), True, True, True, "cpu")
    )


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(compile_backend):
    (x, weight, bias), grad = _inputs(CASES[0], seed=7)
    args = tuple(t.requires_grad_() for t in (x, weight, bias))
    torch._dynamo.reset()
    compiled = torch.compile(conv1x1, fullgraph=True, backend=compile_backend)
    with mcmri_fast.use_backend("cpu"):
        got = compiled(*args)
    expected = reference.conv1x1(*args)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(torch.autograd.grad(got, args, grad), torch.autograd.grad(expected, args, grad)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_modules_match_their_conv2d_form():
    """ChannelAttention and UpSample on the op give their nn.Conv2d modules' results."""
    torch.manual_seed(0)
    attention, up = ChannelAttention(16, 4), UpSample(8)
    x, context = torch.randn(1, 16, 9, 7), torch.randn(1, 16, 9, 7)
    with mcmri_fast.use_backend("reference"):
        expected = attention(x, context), up(x[:, :8])
    torch.testing.assert_close(attention(x, context), expected[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(up(x[:, :8]), expected[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(up(x[:, :8]), torch.nn.Sequential.forward(up, x[:, :8]), atol=1e-5, rtol=1e-5)


def test_forcing_an_unavailable_backend_raises():
    args, _ = _inputs(CASES[0])
    if backend_status("cuda", torch.device("cpu")) is None:
        pytest.skip("cuda runs CPU tensors here")
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError):
        conv1x1(*args)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(2, 3, 4), torch.zeros(2, 3), None), ValueError, "x must be"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 4), None), ValueError, "weight must be"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, 3, 3), None), ValueError, "weight must be"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 3), torch.zeros(3)), ValueError, "bias must be"),
        ((torch.zeros(1, 3, 4, 4, dtype=torch.long), torch.zeros(2, 3), None), TypeError, "x must be float32"),
        ((torch.zeros(1, 3, 4, 4), [[0.0] * 3] * 2, None), TypeError, "weight must be a torch.Tensor"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, device="meta"), None), ValueError, "on x's device"),
    ],
)
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        conv1x1(*args)
