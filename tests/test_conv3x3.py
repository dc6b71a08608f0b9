"""conv3x3: the Winograd kernel (cpu backend) and torch's convolution (the cpu backend's inputs the kernel
does not take) against F.conv2d, the reference on CUDA tensors, autograd, registration, the module and bad
inputs."""
import os

import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.nn import Conv3x3
from mcmri_fast.ops.conv3x3 import _conv3x3, conv3x3, winograd_applies

from fused_backends import assert_all_close, output_and_gradients, require_backend

# The op's one fused backend (tests/test_op_backends.py checks that forcing another raises).
CPU = [pytest.param("cpu", "cpu", id="cpu")]

# (B, C, Co, H, W, bias): odd sizes, C in {8, 12, 36, 64}; 70 columns are 18 tiles per tile row, two groups
# of 16 (AVX-512) or three of 8 (AVX2), so groups inside the plane and one crossing its right edge both
# run; 36 and 12 outputs (IMA's width; the backward to x of C = 12) fill their last pack of 8 partly; the last
# case takes torch's convolution on the cpu backend (C < 8, Co < 8)
CASES = [
    (1, 8, 16, 9, 13, True),
    (2, 64, 64, 17, 23, False),
    (1, 8, 8, 10, 70, True),
    (1, 64, 128, 11, 9, True),
    (1, 36, 36, 12, 11, True),
    (1, 12, 8, 9, 9, False),
    (2, 3, 5, 7, 6, True),
]
WINOGRAD_CASES = CASES[:6]


def _ids(case):
    return "x".join(map(str, case[:5])) + ("-bias" if case[5] else "")


def _inputs(case, dtype=torch.float32, device="cpu", seed=0):
    B, C, Co, H, W, bias = case
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    args = (randn(B, C, H, W), randn(Co, C, 3, 3, scale=(9 * C) ** -0.5), randn(Co) if bias else None)
    return args, randn(B, Co, H, W)


def _run(backend, args, grad):
    return output_and_gradients(conv3x3, backend, args, grad)


def _assert_all_close(got, expected, atol, rtol):
    assert_all_close(("out", "grad_x", "grad_weight", "grad_bias"), got, expected, atol, rtol)


@pytest.mark.parametrize("backend,device", CPU)
@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_fused_matches_reference(backend, device, case):
    """float32 output and gradients against F.conv2d in float64, and against its float32 backward.
    Outputs are ~N(0, 1): the Winograd kernel's rounding, ~1e-5 of the largest, is within 1e-4."""
    require_backend(backend, device)
    args, grad = _inputs(case, device=device)
    got = _run(backend, args, grad)
    _assert_all_close(got, _run("reference", tuple(None if t is None else t.double() for t in args), grad.double()), 1e-4, 1e-4)
    _assert_all_close(got, _run("reference", args, grad), 1e-4, 1e-4)


def check_winograd_kernel(case):
    """The kernel of this process's ISA computes the case's output and gradient to x, with the rounding
    error the docs state: below 2e-5 of the largest value."""
    args, grad = _inputs(case, seed=8)
    x, weight, _ = args
    assert winograd_applies(x, weight)
    # the backward to x takes the kernel when it has at least 8 outputs (x's channels); float64 never
    assert winograd_applies(grad, weight.transpose(0, 1)) == (case[1] >= 8)
    assert not winograd_applies(x.double(), weight.double())
    got = _run("cpu", args, grad)[:2]
    expected = _run("reference", tuple(None if t is None else t.double() for t in args), grad.double())[:2]
    for name, a, e in zip(("out", "grad_x"), got, expected):
        assert (a.double() - e).abs().max() <= 2e-5 * e.abs().max(), name


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=_ids)
def test_winograd_kernel_runs_where_it_applies(case):
    """The cases above that should exercise the kernel do (on CPUs that have one), at its stated error."""
    require_backend("cpu", "cpu")
    args, _ = _inputs(case)
    if not winograd_applies(*args[:2]):
        pytest.skip("the Winograd kernel needs AVX2 or AVX-512 (and the ISA caps allowing it)")
    check_winograd_kernel(case)


_AVX2_KERNEL_CHECK = """
import sys
sys.path.insert(0, {tests!r})
from mcmri_fast import cpu_isa
if cpu_isa.kernel_isa() != "avx2":
    print("skip: the CPU has no AVX2")
else:
    import test_conv3x3
    for case in test_conv3x3.WINOGRAD_CASES:
        test_conv3x3.check_winograd_kernel(case)
"""


def test_avx2_winograd_kernel(run_on_cpu_kernels):
    """The AVX2 kernel (what CPUs without AVX-512 run), also where this process runs the AVX-512 one: the
    same checks in a fresh process capped to AVX2."""
    require_backend("cpu", "cpu")
    out = run_on_cpu_kernels("avx2", _AVX2_KERNEL_CHECK.format(tests=os.path.dirname(os.path.abspath(__file__))))
    if out.startswith("skip:"):
        pytest.skip(out.removeprefix("skip:").strip())


@pytest.mark.parametrize("backend,device", CPU)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    args, grad = _inputs(CASES[0], dtype=torch.float64, device=device, seed=1)
    _assert_all_close(_run(backend, args, grad), _run("reference", args, grad), 1e-12, 1e-10)


def test_cuda_tensors_take_the_reference():
    """On CUDA tensors the automatic choice is the reference: torch's convolution, cuDNN."""
    assert _conv3x3.select(torch.device("cuda")) == "reference"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_half_precision(dtype):
    args, grad = _inputs(CASES[0], dtype=dtype, seed=2)
    got = _run("cpu", args, grad)
    assert all(t.dtype == dtype for t in got)
    expected = _run("reference", tuple(t.float() for t in args), grad.float())
    _assert_all_close(got, expected, 5e-2, 5e-2)


def test_noncontiguous_and_stride0_gradient():
    args, _ = _inputs(CASES[1], seed=3)
    x = args[0].transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    weight = args[1].permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    grad = torch.ones(1, 1, 1, 1).expand(2, 64, 17, 23)
    _assert_all_close(_run("cpu", (x, weight, None), grad), _run("reference", args, grad.contiguous()), 1e-4, 1e-4)


def test_only_some_gradients():
    (x, weight, bias), grad = _inputs(CASES[0], seed=4)
    x.requires_grad_()
    with mcmri_fast.use_backend("cpu"):
        (grad_x,) = torch.autograd.grad(conv3x3(x, weight, bias), x, grad)
    expected = torch.nn.functional.conv_transpose2d(grad, weight, padding=1)
    torch.testing.assert_close(grad_x, expected, atol=1e-4, rtol=1e-4)


def test_gradcheck_and_opcheck():
    args, _ = _inputs((2, 3, 2, 4, 3, True), dtype=torch.float64, seed=5)
    args = tuple(t.requires_grad_() for t in args)
    for backend in ("cpu", "reference"):

        def op(*a):
            with mcmri_fast.use_backend(backend):
                return conv3x3(*a)

        assert torch.autograd.gradcheck(op, args), backend
    for case in (CASES[0], CASES[4], CASES[-1]):  # the Winograd kernel, with padded outputs, torch's convolution
        (x, weight, bias), grad = _inputs(case, seed=6)
        torch.library.opcheck(torch.ops.mcmri_fast.conv3x3, (x, weight, bias, "cpu"))
        torch.library.opcheck(torch.ops.mcmri_fast.conv3x3_backward, (grad, x, weight, True, True, True, "cpu"))


@pytest.mark.parametrize("batch", [1, 2])
def test_padded_outputs_are_tensors_of_their_own(batch):
    """Co = 36 is computed in packs of 8, the last one partly unused: the output is no view (an in-place ReLU
    after it, as nn.ReLU(inplace=True) does, must work under autograd), and it is right."""
    args, grad = _inputs((batch, 36, 36, 12, 11, True), seed=9)
    leaves = [t.clone().requires_grad_() for t in args]
    out = conv3x3(*leaves)
    assert out._base is None and out.is_contiguous()
    out.relu_()
    grads = torch.autograd.grad(out, leaves, grad)
    expected_out = reference.conv3x3(*args).relu()
    torch.testing.assert_close(out.detach(), expected_out, atol=1e-4, rtol=1e-4)
    assert all(g.shape == t.shape for g, t in zip(grads, args))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(compile_backend):
    (x, weight, bias), grad = _inputs(CASES[0], seed=7)
    args = tuple(t.requires_grad_() for t in (x, weight, bias))
    torch._dynamo.reset()
    compiled = torch.compile(conv3x3, fullgraph=True, backend=compile_backend)
    with mcmri_fast.use_backend("cpu"):
        got = compiled(*args)
    expected = reference.conv3x3(*args)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    for a, b in zip(torch.autograd.grad(got, args, grad), torch.autograd.grad(expected, args, grad)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_module_matches_its_conv2d_form():
    """Conv3x3 holds nn.Conv2d's parameters and gives its result; its state dict loads into nn.Conv2d."""
    torch.manual_seed(0)
    conv = Conv3x3(8, 16, bias=True)
    x = torch.randn(2, 8, 12, 11)
    plain = torch.nn.Conv2d(8, 16, 3, padding=1)
    plain.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv(x), plain(x), atol=1e-4, rtol=1e-4)
    assert Conv3x3(8, 16, bias=False).bias is None


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((torch.zeros(2, 3, 4), torch.zeros(2, 3, 3, 3), None), ValueError, "x must be"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 4, 3, 3), None), ValueError, "weight must be"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, 1, 1), None), ValueError, "weight must be"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, 3, 3), torch.zeros(3)), ValueError, "bias must be"),
        ((torch.zeros(1, 3, 4, 4, dtype=torch.long), torch.zeros(2, 3, 3, 3), None), TypeError, "x must be float32"),
        ((torch.zeros(1, 3, 4, 4), [[0.0] * 3] * 2, None), TypeError, "weight must be a torch.Tensor"),
        ((torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, 3, 3, device="meta"), None), ValueError, "on x's device"),
    ],
)
def test_bad_inputs(args, error, match):
    with pytest.raises(error, match=match):
        conv3x3(*args)
