"""FSMNet: its size, the fused network against the same network on the reference backend, its loss,
registry entry and workflows, torch.compile."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mcmri_fast
from mcmri_fast.models import build_model, get_model_spec
from mcmri_fast.models.fsmnet import FSMNet, fsmnet_loss
from mcmri_fast.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

# The parameters of the authors' network that take part in its forward pass, and its size at 240 x 240.
PAPER_PARAMETERS = 13_799_848
PAPER_GMACS_240 = 159


def _batch(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g) for key in ("zero_filled", "reference", "target")}


def _outputs_and_gradients(model, batch, backend):
    model.zero_grad(set_to_none=True)
    with mcmri_fast.use_backend(backend):
        output = model(batch)
        fsmnet_loss(output, batch).backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters()}


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
    _, gradients = _outputs_and_gradients(model, batch, "reference")
    assert all(g.abs().sum() > 0 for g in gradients.values()), [n for n, g in gradients.items() if g.abs().sum() == 0]


@pytest.mark.parametrize("config,shape", [
    ({}, (1, 1, 240, 240)),
    ({"channels": 16, "heads": 8}, (2, 1, 56, 40)),
    ({"channels": 8, "heads": 2, "resblocks": 1}, (1, 1, 24, 72)),
], ids=["paper-1x1x240x240", "c16-2x1x56x40", "c8-1x1x24x72"])
def test_fused_network_matches_the_reference_backend(config, shape):
    """The same weights and inputs: outputs and every parameter gradient of the fused ops (cpu backend)
    against the reference ops, to float32 tolerance."""
    torch.manual_seed(0)
    model = FSMNet(**config)
    batch = _batch(shape)
    fused, fused_grads = _outputs_and_gradients(model, batch, "cpu")
    reference, reference_grads = _outputs_and_gradients(model, batch, "reference")
    for key in ("image", "frequency_image"):
        torch.testing.assert_close(fused[key], reference[key], rtol=1e-4, atol=1e-4)
    for name, grad in reference_grads.items():
        scale = grad.abs().max().item() + 1e-12
        torch.testing.assert_close(fused_grads[name] / scale, grad / scale, rtol=1e-3, atol=1e-3, msg=lambda m: f"{name}: {m}")


def test_compile_fullgraph_on_cpu():
    torch.manual_seed(0)
    model = FSMNet(channels=8, heads=2, resblocks=1)
    batch = _batch((1, 1, 16, 24))
    with mcmri_fast.use_backend("cpu"):
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
    from mcmri_fast.evaluate import evaluate

    config = TrainConfig(model="fsmnet", model_config={"channels": 8, "heads": 2, "resblocks": 1}, epochs=1,
                         batch_size=2, max_steps_per_epoch=1, val_data=None, run_dir=str(tmp_path / "run"), device="cpu")
    result = train(config, progress=False)
    summary = evaluate(result["last_checkpoint"], tmp_path / "eval", slices_to_plot=(), progress=False)
    assert summary["metrics"]["psnr"]["mean"] > 0
