"""depthwise_channel_attention: the depthwise projections and the attention as one op, against the two
references in sequence; what it keeps for backward; autograd, registration and bad inputs."""
import pytest
import torch

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.ops import depthwise_channel_attention

from fused_backends import FUSED, require_backend

# (B, Cq, Ck, heads, H, W, bias): self-attention sizes, Cq != Ck, odd sizes, B > 1 (keys and values are
# then strided views of kv), FSMNet's 64 channels and 8 heads, a single head of 32.
CASES = [
    (2, 8, 8, 1, 5, 7, False),
    (2, 8, 8, 8, 9, 11, True),
    (1, 64, 64, 8, 7, 9, False),
    (2, 16, 24, 8, 13, 6, True),
    (3, 32, 32, 1, 6, 5, True),
]


def _inputs(case, dtype=torch.float32, device="cpu", seed=0):
    """(q, kv, q_weight, kv_weight, temperature, q_bias, kv_bias, grad), heads."""
    B, Cq, Ck, heads, H, W, bias = case
    g = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, dtype=dtype, generator=g).to(device)

    tensors = (
        randn(B, Cq, H, W), randn(B, 2 * Ck, H, W), randn(Cq, 1, 3, 3), randn(2 * Ck, 1, 3, 3), 0.5 + randn(heads),
        randn(Cq) if bias else None, randn(2 * Ck) if bias else None, randn(B, Cq, H, W),
    )
    return tensors, heads


def _run(backend, tensors, heads):
    """The output and the gradients of every tensor argument, for one backend."""
    *args, grad = tensors
    leaves = [None if t is None else t.detach().clone().requires_grad_() for t in args]
    q, kv, q_weight, kv_weight, temperature, q_bias, kv_bias = leaves
    with mcmri_fast.use_backend(backend):
        out = depthwise_channel_attention(q, kv, q_weight, kv_weight, temperature, heads, q_bias=q_bias, kv_bias=kv_bias)
    inputs = [t for t in leaves if t is not None]
    return (out,) + torch.autograd.grad(out, inputs, grad)


def _assert_all_close(got, expected, atol, rtol):
    for i, (a, b) in enumerate(zip(got, expected, strict=True)):
        scale = b.abs().max().item() + 1e-12
        torch.testing.assert_close(a / scale, b / scale, atol=atol, rtol=rtol, msg=lambda m: f"tensor {i}: {m}")


def test_reference_is_the_two_references_in_sequence():
    (q, kv, q_weight, kv_weight, temperature, q_bias, kv_bias, _), heads = _inputs(CASES[1], seed=1)
    k, v = reference.depthwise_conv3x3(kv, kv_weight, kv_bias).chunk(2, dim=1)
    expected = reference.channel_attention(reference.depthwise_conv3x3(q, q_weight, q_bias), k, v, temperature, heads)
    got = reference.depthwise_channel_attention(q, kv, q_weight, kv_weight, temperature, heads, q_bias, kv_bias)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend,device", FUSED)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-{c[2]}h{c[3]}-{c[4]}x{c[5]}{'-bias' if c[6] else ''}")
def test_fused_matches_reference(backend, device, case):
    require_backend(backend, device)
    tensors, heads = _inputs(case, device=device, seed=2)
    _assert_all_close(_run(backend, tensors, heads), _run("reference", tensors, heads), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend,device", [p for p in FUSED if p.id != "triton-interpreted"])
def test_fused_gradcheck(backend, device):
    """float64 gradcheck of the orchestration (not under the Triton interpreter: minutes there; the
    Triton kernels' own gradients are checked by their ops' tests, and the comparison above covers
    this op's on Triton)."""
    require_backend(backend, device)
    (*args, _), heads = _inputs((2, 4, 2, 2, 3, 4, True), dtype=torch.float64, device=device, seed=3)
    leaves = [t.requires_grad_() for t in args]

    def f(q, kv, q_weight, kv_weight, temperature, q_bias, kv_bias):
        with mcmri_fast.use_backend(backend):
            return depthwise_channel_attention(q, kv, q_weight, kv_weight, temperature, heads, q_bias=q_bias, kv_bias=kv_bias)

    assert torch.autograd.gradcheck(f, leaves)


def _saved_map_storages(backend, q, kv, tensors, heads):
    """The storages of map size (q's or larger) that autograd keeps for one call's backward."""
    _, _, q_weight, kv_weight, temperature, q_bias, kv_bias, _ = tensors
    saved = {}

    def pack(t):
        if t.untyped_storage().nbytes() >= q.untyped_storage().nbytes():
            saved[t.untyped_storage().data_ptr()] = t
        return t

    with mcmri_fast.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        depthwise_channel_attention(q, kv, q_weight, kv_weight, temperature, heads, q_bias=q_bias, kv_bias=kv_bias)
    return set(saved)


@pytest.mark.parametrize("backend,device", FUSED)
def test_keeps_only_its_inputs_for_backward(backend, device):
    """The fused op keeps q and kv (which the projections before it keep anyway), not the depthwise
    outputs: the reference keeps those besides (three maps more: the memory the op saves)."""
    require_backend(backend, device)
    tensors, heads = _inputs((2, 16, 16, 2, 12, 10, True), device=device, seed=4)
    q, kv = (t.requires_grad_() for t in tensors[:2])
    inputs = {q.untyped_storage().data_ptr(), kv.untyped_storage().data_ptr()}
    assert _saved_map_storages(backend, q, kv, tensors, heads) == inputs
    assert len(_saved_map_storages("reference", q, kv, tensors, heads) - inputs) >= 3


def test_only_needed_gradients():
    """Arguments that need no gradient get none (kv and the query kernels here); the rest match."""
    (q, kv, q_weight, kv_weight, temperature, q_bias, kv_bias, grad), heads = _inputs(CASES[3], seed=5)
    results = {}
    for backend in mcmri_fast.available_backends("cpu"):
        leaves = [t.clone().requires_grad_() for t in (q, kv_weight, temperature, kv_bias)]
        with mcmri_fast.use_backend(backend):
            out = depthwise_channel_attention(leaves[0], kv, q_weight, leaves[1], leaves[2], heads, q_bias=q_bias,
                                              kv_bias=leaves[3])
        results[backend] = (out,) + torch.autograd.grad(out, leaves, grad)
    for backend, got in results.items():
        _assert_all_close(got, results["reference"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("backend,device", FUSED)
def test_opcheck(backend, device):
    require_backend(backend, device)
    (q, kv, q_weight, kv_weight, temperature, q_bias, kv_bias, _), heads = _inputs((2, 8, 6, 2, 3, 5, True), device=device,
                                                                                      seed=6)
    args = (q.requires_grad_(), kv.requires_grad_(), q_weight.reshape(-1, 3, 3).requires_grad_(), q_bias,
            kv_weight.reshape(-1, 3, 3).requires_grad_(), kv_bias, temperature.requires_grad_(), heads, True, backend)
    torch.library.opcheck(torch.ops.mcmri_fast.depthwise_channel_attention.default, args)


@pytest.mark.parametrize("backend,compiler", [("cpu", "inductor"), ("cpu", "aot_eager"), ("reference", "aot_eager")])
def test_torch_compile_fullgraph(backend, compiler):
    require_backend(backend, "cpu")
    (q, kv, q_weight, kv_weight, temperature, q_bias, kv_bias, grad), heads = _inputs((2, 8, 8, 2, 6, 7, True), seed=7)
    leaves = [t.requires_grad_() for t in (q, kv, q_weight, kv_weight, temperature)]

    def block(q, kv, q_weight, kv_weight, temperature):  # with surrounding work, as in FS-fusion
        return depthwise_channel_attention(q * 2, kv, q_weight, kv_weight, temperature, heads, q_bias=q_bias, kv_bias=kv_bias) + q

    with mcmri_fast.use_backend(backend):
        out = torch.compile(block, fullgraph=True, backend=compiler)(*leaves)
        got = (out,) + torch.autograd.grad(out, leaves, grad)
    with mcmri_fast.use_backend("reference"):
        expected_out = block(*leaves)
    expected = (expected_out,) + torch.autograd.grad(expected_out, leaves, grad)
    _assert_all_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda a: a.update(kv=a["kv"][:, :-1], kv_weight=a["kv_weight"][:-1]), ValueError, "even channel count"),
        (lambda a: a.update(kv=a["kv"].double(), kv_weight=a["kv_weight"].double()), TypeError, "one dtype"),
        (lambda a: a.update(q_weight=a["q_weight"][:-1]), ValueError, "weight must be"),
        (lambda a: a.update(heads=3), ValueError, "heads must be a positive divisor"),
        (lambda a: a.update(kv=a["kv"][..., :-1]), ValueError, "pixel count"),
    ],
    ids=["odd-kv-channels", "dtype-mismatch", "bad-weight", "bad-heads", "pixel-mismatch"],
)
def test_bad_inputs_raise(change, error, match):
    (q, kv, q_weight, kv_weight, temperature, _, _, _), heads = _inputs((1, 8, 8, 2, 4, 4, False), seed=8)
    args = dict(q=q, kv=kv, q_weight=q_weight, kv_weight=kv_weight, temperature=temperature, heads=heads)
    change(args)
    with pytest.raises(error, match=match):
        depthwise_channel_attention(**args)
