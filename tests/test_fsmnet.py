"""FSMNet: its size, the fused network against the same network on the reference backend, its loss,
registry entry and workflows, torch.compile."""
import contextlib
from unittest import mock

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mcmri_fast
from mcmri_fast.models import build_model, get_model_spec
from mcmri_fast.models.fsmnet import FSMNet, fsmnet_loss
from mcmri_fast.nn import CMSFusion, FreqBlock, FSFusion
from mcmri_fast.workflows.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

# The parameters of the authors' network that take part in its forward pass, and its size at 240 x 240.
PAPER_PARAMETERS = 13_799_848
PAPER_GMACS_240 = 159
# The blocks that run fused ops (the rest of the network is plain convolutions and activations).
FUSED_BLOCKS = (FreqBlock, FSFusion, CMSFusion)
FUSED_OPS = ("spectrum_to_polar", "polar_to_spectrum", "frequency_epilogue", "depthwise_channel_attention", "gated_fusion")


def _batch(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g) for key in ("zero_filled", "reference", "target")}


def _parameter_gradients(model, batch, backend):
    model.zero_grad(set_to_none=True)
    with mcmri_fast.use_backend(backend):
        fsmnet_loss(model(batch), batch).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_paper_size():
    """Parameter count and GMACs (convolutions and matrix products, counted on the meta device)."""
    with torch.device("meta"):
        model = FSMNet()
        batch = {k: torch.empty(1, 1, 240, 240) for k in ("zero_filled", "reference")}
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS
    with mcmri_fast.use_backend("reference"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    assert counter.get_total_flops() / 2e9 == pytest.approx(PAPER_GMACS_240, rel=0.01)


def test_every_parameter_takes_part():
    torch.manual_seed(0)
    model = FSMNet(channels=16, heads=8)
    batch = _batch((1, 1, 16, 24))
    gradients = _parameter_gradients(model, batch, "reference")
    assert all(g.abs().sum() > 0 for g in gradients.values()), [n for n, g in gradients.items() if g.abs().sum() == 0]


def _differentiable(value):
    return isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex())


NETWORK_CASES = pytest.mark.parametrize("config,shape", [
    ({}, (1, 1, 240, 240)),
    ({"channels": 16, "heads": 8}, (2, 1, 56, 40)),
], ids=["paper-1x1x240x240", "c16-2x1x56x40"])


@NETWORK_CASES
def test_fused_network_matches_the_reference_backend_in_float64(config, shape):
    """The whole network, fused (cpu backend) against the same network and weights on the reference
    ops: both outputs and every parameter gradient of the paper's loss. In float64, where rounding is
    too small to carry a spectrum value across the phase's branch cut (see the float32 test below)."""
    torch.manual_seed(0)
    model = FSMNet(**config).double()
    batch = {key: value.double() for key, value in _batch(shape).items()}
    results = {}
    # a whole network prefers cpu: an op without a cpu path for these inputs takes the reference
    for backend, preference in (("reference", ("reference",)), ("cpu", ("cpu", "reference"))):
        model.zero_grad(set_to_none=True)
        with mcmri_fast.use_backend(*preference):
            output = model(batch)
            fsmnet_loss(output, batch).backward()
        results[backend] = {**{key: value.detach() for key, value in output.items()},
                            **{name: p.grad for name, p in model.named_parameters()}}
    for name, expected in results["reference"].items():
        scale = expected.abs().max().item() + 1e-300
        torch.testing.assert_close(results["cpu"][name] / scale, expected / scale, rtol=1e-7, atol=1e-9,
                                   msg=lambda m: f"{name}: {m}")


@NETWORK_CASES
def test_fused_network_matches_the_reference_backend(config, shape):
    """float32: the network with fused ops (cpu backend) against the same network and weights on the
    reference ops, fed the activations of the reference network's forward pass at every place:
    * every block that runs fused ops (22 frequency blocks, 14 FS- and 10 CMS-fusions) gives the
      reference's output;
    * every fused op call (three per frequency block, three per FS-fusion, one per CMS-fusion) gives the
      reference's outputs and the same gradients of all its inputs (weights included) for a random
      output gradient.
    The rest of every parameter gradient is plain PyTorch (convolutions, activations, FFTs).

    Place by place, because in float32 the network as a whole has no such tolerance: the phase
    angle(rfft2(·)) jumps by 2π where a spectrum value crosses the negative real axis, and among the
    ~10^7 spectrum values of a forward pass at 240 x 240 some lie within float32 rounding of it, so
    any two float32 implementations (the reference with 1 and with 2 threads, too) differ by ~1e-3 at
    the output. (The self-conjugate bins, real up to rounding at every block, are treated as real: see
    FreqBlock. Before that, the outputs differed by ~1e-2.)
    """
    torch.manual_seed(0)
    model = FSMNet(**config)
    blocks, op_calls = [], []

    def record_block(module, inputs, output):
        blocks.append((module, tuple(t.detach() for t in inputs), output.detach()))

    def recording(name, op):
        def record(*args, **kwargs):
            op_calls.append((name, tuple(a.detach() if _differentiable(a) else a for a in args), kwargs))
            return op(*args, **kwargs)
        return record

    hooks = [m.register_forward_hook(record_block) for m in model.modules() if isinstance(m, FUSED_BLOCKS)]
    with contextlib.ExitStack() as stack:
        for name in FUSED_OPS:
            stack.enter_context(mock.patch.object(mcmri_fast.ops, name, recording(name, getattr(mcmri_fast.ops, name))))
        with mcmri_fast.use_backend("reference"), torch.no_grad():
            model(_batch(shape))
    for hook in hooks:
        hook.remove()
    assert len(blocks) == 22 + 14 + 10
    # FreqBlock: 3 ops; FS: 2 attentions (with their depthwise projections) and the gate; CMS: the gate
    assert len(op_calls) == 22 * 3 + 14 * (2 + 1) + 10

    for index, (module, inputs, expected) in enumerate(blocks):
        with mcmri_fast.use_backend("cpu"), torch.no_grad():
            got = module(*inputs)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item(),
                                   msg=lambda m: f"block {index} ({type(module).__name__}): {m}")

    g = torch.Generator().manual_seed(1)
    for index, (name, args, kwargs) in enumerate(op_calls):
        results = {}
        for backend in ("reference", "cpu"):
            leaves = [a.clone().requires_grad_() if _differentiable(a) else a for a in args]
            with mcmri_fast.use_backend(backend):
                out = getattr(mcmri_fast.ops, name)(*leaves, **kwargs)
            outs = out if isinstance(out, tuple) else (out,)
            if backend == "reference":
                grads_out = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
            inputs = [leaf for leaf in leaves if _differentiable(leaf)]
            results[backend] = ([o.detach() for o in outs], torch.autograd.grad(outs, inputs, grads_out))
        (expected_outs, expected_grads), (got_outs, got_grads) = results["reference"], results["cpu"]
        for i, (a, b) in enumerate(list(zip(got_outs, expected_outs)) + list(zip(got_grads, expected_grads))):
            scale = b.abs().max().item() + 1e-12
            torch.testing.assert_close(a / scale, b / scale, rtol=1e-4, atol=1e-5,
                                       msg=lambda m: f"op call {index} ({name}), tensor {i}: {m}")


def test_gate_logits_are_the_concatenating_form():
    """The fusions' gate logits: the first convolution as two over a and b (no concatenated copy) gives
    conv(cat[a, b]) and its gradients, with the same parameters."""
    torch.manual_seed(0)
    gate = CMSFusion(8).gate.double()
    a, b = (torch.randn(2, 8, 9, 7, dtype=torch.float64, requires_grad=True) for _ in range(2))
    grad = torch.randn(2, 16, 9, 7, dtype=torch.float64)
    results = []
    for logits in (gate(a, b), torch.nn.Sequential.forward(gate, torch.cat((a, b), dim=1))):
        results.append((logits,) + torch.autograd.grad(logits, (a, b, *gate.parameters()), grad))
    for got, expected in zip(*results, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_compile_fullgraph_on_cpu():
    torch.manual_seed(0)
    model = FSMNet(channels=8, heads=2, resblocks=1)
    batch = _batch((1, 1, 16, 24))
    with mcmri_fast.use_backend("cpu", "reference"):  # a whole network: see the float64 test
        expected = model(batch)["image"]
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        output = compiled(batch)
        fsmnet_loss(output, batch).backward()
    torch.testing.assert_close(output["image"], expected, rtol=1e-4, atol=1e-4)
    assert all(p.grad is not None for p in model.parameters())


def test_loss_is_the_papers():
    g = torch.Generator().manual_seed(1)
    image, frequency_image, target = (torch.randn(2, 1, 8, 6, generator=g) for _ in range(3))
    spectrum, target_spectrum = torch.fft.rfft2(frequency_image), torch.fft.rfft2(target)
    expected = ((image - target).abs().mean() + (frequency_image - target).abs().mean()
                + 0.01 * ((spectrum.abs() - target_spectrum.abs()).abs().mean()
                          + (spectrum.angle() - target_spectrum.angle()).abs().mean()))
    loss = fsmnet_loss({"image": image, "frequency_image": frequency_image}, {"target": target})
    torch.testing.assert_close(loss, expected)


def test_registry_entry():
    spec = get_model_spec("fsmnet")
    assert spec.trainable and spec.config == {"channels": 64, "resblocks": 2, "heads": 8}
    assert spec.loss is fsmnet_loss and spec.batch_size == 4
    assert spec.data == {"magnitude": True, "normalization": "instance"}
    assert spec.optimizer == {"name": "adamw", "lr": 1e-4, "weight_decay": 1e-4}
    assert isinstance(build_model("fsmnet", **spec.demo["model_config"]), FSMNet)


@pytest.mark.parametrize("batch,error,message", [
    ({"zero_filled": torch.zeros(1, 1, 20, 16), "reference": torch.zeros(1, 1, 20, 16)}, ValueError, "divisible by 8"),
    ({"zero_filled": torch.zeros(1, 2, 16, 16), "reference": torch.zeros(1, 2, 16, 16)}, ValueError, r"\[B, 1, H, W\]"),
    ({"zero_filled": torch.zeros(1, 1, 16, 16), "reference": torch.zeros(1, 1, 16, 24)}, ValueError, "one shape"),
    ({"zero_filled": torch.zeros(1, 1, 16, 16, dtype=torch.complex64), "reference": torch.zeros(1, 1, 16, 16)}, TypeError, "magnitude"),
])
def test_bad_inputs(batch, error, message):
    with pytest.raises(error, match=message):
        FSMNet(channels=8, heads=2)(batch)


@pytest.mark.parametrize("kwargs,message", [({"channels": 12, "heads": 8}, "divide"), ({"channels": 0}, "channels")])
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FSMNet(**kwargs)


def test_trains_and_evaluates_through_the_workflows(tmp_path):
    """One step of `mcmri train --model fsmnet` on the builtin data (the dict output and the paper's
    loss through the training loop), then its checkpoint evaluated."""
    from mcmri_fast.workflows.evaluate import evaluate

    config = TrainConfig(model="fsmnet", model_config={"channels": 8, "heads": 2, "resblocks": 1}, epochs=1,
                         batch_size=2, max_steps_per_epoch=1, val_data=None, run_dir=str(tmp_path / "run"), device="cpu")
    result = train(config, progress=False)
    summary = evaluate(result["last_checkpoint"], tmp_path / "eval", slices_to_plot=(), progress=False)
    assert summary["metrics"]["psnr"]["mean"] > 0
