"""unshuffle_downsample: the composed strided convolution (the cpu and cuda backends) against the
three-step reference, autograd, torch.compile, the DownSample module and bad inputs."""
import pytest
import torch
from torch import nn

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.backends import BackendUnavailableError, backend_status
from mcmri_fast.nn import DownSample
from mcmri_fast.ops.downsample import unshuffle_downsample

from fused_backends import FUSED, assert_all_close, output_and_gradients, require_backend

# The op's fused backends: all but triton (tests/test_op_backends.py checks that forcing it raises).
BACKENDS = [p for p in FUSED if p.values[0] != "triton"]

# (B, Ci, C, Co, k, factor, H, W, biases): odd sizes (H, W odd multiples of the factor), C in {8, 64},
# FSMNet's setting (64 → 64, k = 3, factor 2, no bias), other kernels, factors and channel counts.
CASES = [
    (2, 8, 8, 8, 3, 2, 14, 18, False),
    (1, 64, 64, 64, 3, 2, 10, 6, False),
    (1, 5, 8, 6, 3, 2, 22, 10, True),
    (2, 3, 4, 7, 5, 3, 15, 9, True),
    (1, 8, 8, 8, 1, 2, 6, 10, True),
    (1, 4, 6, 5, 3, 1, 7, 5, True),
]


def _inputs(case, dtype=torch.float32, device="cpu", seed=0):
    """(x, conv_weight, project_weight, conv_bias, project_bias), grad of the output; weights scaled so
    that the output is O(1)."""
    B, Ci, C, Co, k, r, H, W, biases = case
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(device=device, dtype=dtype)

    args = (
        randn(B, Ci, H, W),
        randn(C, Ci, k, k, scale=(Ci * k * k) ** -0.5),
        randn(Co, C * r * r, 1, 1, scale=(C * r * r) ** -0.5),
        randn(C) if biases else None,
        randn(Co) if biases else None,
    )
    return args, randn(B, Co, H // r, W // r)


def _run(backend, case, args, grad):
    """Output and gradients to every tensor argument (None for an absent bias) of one backend."""

    def op(x, conv_weight, project_weight, conv_bias, project_bias):
        return unshuffle_downsample(
            x, conv_weight, project_weight, factor=case[5], conv_bias=conv_bias, project_bias=project_bias
        )

    return output_and_gradients(op, backend, args, grad)


def _assert_all_close(got, expected, atol, rtol):
    names = ("out", "grad_x", "grad_conv_weight", "grad_project_weight", "grad_conv_bias", "grad_project_bias")
    assert_all_close(names, got, expected, atol, rtol)


@pytest.mark.parametrize("backend,device", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:8])) + ("-bias" if c[8] else ""))
def test_fused_matches_reference(backend, device, case):
    """float32 output and gradients against the reference in float64, and against its float32 backward."""
    require_backend(backend, device)
    args, grad = _inputs(case, device=device)
    got = _run(backend, case, args, grad)
    as_double = tuple(None if t is None else t.double() for t in args)
    # gradients of the weights sum over the batch and pixels: a looser absolute tolerance
    _assert_all_close(got, _run("reference", case, as_double, grad.double()), atol=1e-4, rtol=1e-4)
    _assert_all_close(got, _run("reference", case, args, grad), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("backend,device", BACKENDS)
def test_fused_double_precision(backend, device):
    require_backend(backend, device)
    case = CASES[2]
    args, grad = _inputs(case, dtype=torch.float64, device=device, seed=1)
    _assert_all_close(_run(backend, case, args, grad), _run("reference", case, args, grad), atol=1e-12, rtol=1e-10)


def test_fused_differs_from_reference_in_how_it_computes():
    """The fused path is one strided convolution, not the three steps (so the test above compares two
    computations): its autograd graph holds no pixel-unshuffle."""
    case = CASES[0]
    (x, conv_weight, project_weight, _, _), _ = _inputs(case)
    x.requires_grad_()

    def graph_names(backend):
        with mcmri_fast.use_backend(backend):
            out = unshuffle_downsample(x, conv_weight, project_weight)
        names, stack = set(), [out.grad_fn]
        while stack:
            node = stack.pop()
            if node is not None:
                names.add(type(node).__name__)
                stack.extend(next_node for next_node, _ in node.next_functions)
        return names

    assert any("PixelUnshuffle" in name for name in graph_names("reference"))
    assert not any("PixelUnshuffle" in name for name in graph_names("cpu"))


def test_gradcheck():
    """float64 gradcheck of the fused path and of the reference, biases included."""
    case = (1, 3, 4, 5, 3, 2, 6, 4, True)
    args, _ = _inputs(case, dtype=torch.float64, seed=2)
    args = tuple(t.requires_grad_() for t in args)

    for backend in ("cpu", "reference"):

        def op(x, conv_weight, project_weight, conv_bias, project_bias):
            with mcmri_fast.use_backend(backend):
                return unshuffle_downsample(
                    x, conv_weight, project_weight, factor=2, conv_bias=conv_bias, project_bias=project_bias
                )

        assert torch.autograd.gradcheck(op, args), backend


def test_bfloat16_and_autocast():
    """bfloat16 inputs give a bfloat16 output close to the float32 reference; under CPU autocast the
    convolution runs in bfloat16 and the composed kernel is built in float32."""
    case = CASES[0]
    args, _ = _inputs(case, seed=3)
    expected = reference.unshuffle_downsample(*args[:3], 2)
    half = tuple(None if t is None else t.bfloat16() for t in args)
    got = unshuffle_downsample(*half[:3])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=5e-2, rtol=5e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = unshuffle_downsample(*args[:3])
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=5e-2, rtol=5e-2)


def test_mixed_dtypes_promote():
    case = CASES[0]
    (x, conv_weight, project_weight, _, _), _ = _inputs(case)
    out = unshuffle_downsample(x, conv_weight.double(), project_weight)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, reference.unshuffle_downsample(x.double(), conv_weight.double(), project_weight.double()))


def test_project_weight_as_matrix():
    case = CASES[2]
    (x, conv_weight, project_weight, conv_bias, project_bias), _ = _inputs(case)
    out = unshuffle_downsample(x, conv_weight, project_weight.flatten(1), conv_bias=conv_bias, project_bias=project_bias)
    expected = reference.unshuffle_downsample(x, conv_weight, project_weight, 2, conv_bias, project_bias)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(compile_backend):
    """torch.compile(fullgraph=True) of the fused path traces the composition and the convolution,
    forward and backward."""
    case = CASES[2]
    args, grad = _inputs(case, seed=4)
    x, conv_weight, project_weight, conv_bias, project_bias = (t.requires_grad_() for t in args)

    def op(x, conv_weight, project_weight, conv_bias, project_bias):
        return unshuffle_downsample(x, conv_weight, project_weight, conv_bias=conv_bias, project_bias=project_bias)

    torch._dynamo.reset()
    compiled = torch.compile(op, fullgraph=True, backend=compile_backend)
    with mcmri_fast.use_backend("cpu"):
        got = compiled(x, conv_weight, project_weight, conv_bias, project_bias)
    got_grads = torch.autograd.grad(got, (x, conv_weight, project_weight, conv_bias, project_bias), grad)
    expected = reference.unshuffle_downsample(x, conv_weight, project_weight, 2, conv_bias, project_bias)
    expected_grads = torch.autograd.grad(expected, (x, conv_weight, project_weight, conv_bias, project_bias), grad)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for a, b in zip(got_grads, expected_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_module_keeps_the_three_step_parameters():
    """DownSample runs the op with the parameters (and state-dict keys) of conv → unshuffle → conv."""
    torch.manual_seed(0)
    module = DownSample(8)
    assert sorted(module.state_dict()) == ["0.weight", "2.weight"]
    x = torch.randn(2, 8, 12, 10)
    steps = nn.Sequential.forward(module, x)  # the three modules one after the other
    torch.testing.assert_close(module(x), steps, atol=1e-5, rtol=1e-5)
    with mcmri_fast.use_backend("reference"):
        torch.testing.assert_close(module(x), steps)


def test_forcing_an_unavailable_backend_raises():
    args, _ = _inputs(CASES[0])
    if backend_status("cuda", torch.device("cpu")) is None:
        pytest.skip("cuda runs CPU tensors here")
    with mcmri_fast.use_backend("cuda"), pytest.raises(BackendUnavailableError):
        unshuffle_downsample(*args[:3])


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda a: a.update(x=a["x"][0]), ValueError, "x must be"),
        (lambda a: a.update(x=a["x"][..., :-1]), ValueError, "divisible by factor"),
        (lambda a: a.update(factor=0), ValueError, "factor must be"),
        (lambda a: a.update(factor=2.0), ValueError, "factor must be"),
        (lambda a: a.update(conv_weight=a["conv_weight"][:, :-1]), ValueError, "conv_weight must be"),
        (lambda a: a.update(conv_weight=torch.zeros(8, 8, 2, 2)), ValueError, "k odd"),
        (lambda a: a.update(project_weight=a["project_weight"][:, :-1]), ValueError, "project_weight must be"),
        (lambda a: a.update(project_weight=torch.zeros(8, 32, 3, 3)), ValueError, "project_weight must be"),
        (lambda a: a.update(conv_bias=torch.zeros(7)), ValueError, "conv_bias must be"),
        (lambda a: a.update(project_bias=torch.zeros(9)), ValueError, "project_bias must be"),
        (lambda a: a.update(x=a["x"].long()), TypeError, "x must be float32"),
        (lambda a: a.update(conv_weight=a["conv_weight"].numpy()), TypeError, "conv_weight must be a torch.Tensor"),
        (lambda a: a.update(project_weight=a["project_weight"].to("meta")), ValueError, "on x's device"),
    ],
)
def test_bad_inputs(change, error, match):
    (x, conv_weight, project_weight, _, _), _ = _inputs(CASES[0])
    kwargs = {"x": x, "conv_weight": conv_weight, "project_weight": project_weight, "factor": 2}
    change(kwargs)
    with pytest.raises(error, match=match):
        unshuffle_downsample(
            kwargs.pop("x"), kwargs.pop("conv_weight"), kwargs.pop("project_weight"), **kwargs
        )
