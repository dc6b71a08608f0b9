"""IMA: its size, the fused network against the same network on the reference backend, the ablation
switches, its loss, registry entry and workflows, torch.compile, bad inputs."""
import copy
from unittest import mock

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mcmri_fast
from mcmri_fast import reference
from mcmri_fast.models import build_model, get_model_spec
from mcmri_fast.models.ima import IMA, ima_loss
from mcmri_fast.workflows.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

# The paper's Table 2 (a): parameters and GMACs at 256 x 256 with and without CSCA.
PAPER = {True: (1.53e6, 107.92), False: (1.33e6, 103.28)}
# A narrow network with every stage: what the place-by-place comparisons run.
SMALL = {"channels": 8, "reference_channels": 6, "csca_width": 6, "csca_heads": 2}


def _batch(shape, mask="1d", seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    batch = {key: torch.randn(shape, generator=g, dtype=dtype) for key in ("zero_filled", "reference", "target")}
    B, _, H, W = shape
    if mask == "1d":
        batch["mask"] = torch.rand(B, W, generator=g) < 0.3
        batch["mask"][:, W // 2 - 2: W // 2 + 2] = True
    else:
        batch["mask"] = torch.rand(B, H, W, generator=g) < 0.3
    return batch


def _count(csca):
    with torch.device("meta"):
        model = IMA(csca=csca, dcm=False)  # the schedule cannot run on the meta device; it has no MACs
        batch = {k: torch.empty(1, 1, 256, 256) for k in ("zero_filled", "reference")}
        batch["mask"] = torch.empty(1, 256, dtype=torch.bool)
    with mcmri_fast.use_backend("reference"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2e9


@pytest.mark.parametrize("csca", [True, False], ids=["csca", "without-csca"])
def test_paper_size(csca):
    """Within 5% of the paper's parameters and GMACs (convolutions and matrix products)."""
    parameters, gmacs = _count(csca)
    assert parameters == {True: 1_536_605, False: 1_314_797}[csca]
    assert parameters == pytest.approx(PAPER[csca][0], rel=0.05)
    assert gmacs == pytest.approx(PAPER[csca][1], rel=0.05)


def test_every_parameter_takes_part():
    torch.manual_seed(0)
    model = IMA(**SMALL, stages=4)
    batch = _batch((1, 1, 16, 18))
    ima_loss(model(batch), batch).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.parameters()), [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]


def _outputs_and_gradients(model, batch, preference):
    model.zero_grad(set_to_none=True)
    with mcmri_fast.use_backend(*preference):
        output = model(batch)
        ima_loss(output, batch).backward()
    return {**{k: v.detach() for k, v in output.items()}, **{n: p.grad for n, p in model.named_parameters()}}


NETWORK_CASES = pytest.mark.parametrize("shape,mask", [((1, 1, 256, 256), "1d"), ((2, 1, 35, 27), "2d")],
                                        ids=["paper-1x1x256x256-1d", "2x1x35x27-2d"])


def _assert_close_to(got, expected, rtol, atol, floor):
    """Every tensor of got against expected, relative to its largest value (at least `floor`)."""
    for name, value in expected.items():
        scale = max(value.abs().max().item(), floor)
        torch.testing.assert_close(got[name].to(value.dtype) / scale, value / scale, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{name}: {m}")


def _largest(values: dict) -> float:
    return max(value.abs().max().item() for value in values.values())


@NETWORK_CASES
def test_fused_network_matches_the_reference_backend_in_float64(shape, mask):
    """The 12-stage network, fused (cpu backend, the reference for ops without a cpu path) against the
    same network and weights on the reference ops: both outputs and every parameter gradient of the
    paper's loss, to 1e-9. Some gradients are zero but for rounding (the output biases of C_R1: a
    constant image is the k-space centre, which the data consistency replaces): their scale is 1e-6 of
    the largest gradient's."""
    torch.manual_seed(0)
    model = IMA(**SMALL).double()
    batch = _batch(shape, mask, dtype=torch.float64)
    expected = _outputs_and_gradients(model, batch, ("reference",))
    got = _outputs_and_gradients(model, batch, ("cpu", "reference"))
    _assert_close_to(got, expected, rtol=1e-7, atol=1e-9, floor=1e-6 * _largest(expected))


@NETWORK_CASES
def test_fused_network_matches_the_reference_backend_in_float32(shape, mask):
    """float32, against the float64 reference network with the same weights: the fused network with its
    3×3 convolutions on the reference is as close to it as float32 rounding makes the reference network
    itself (10×); with the Winograd convolutions too (whose rounding, ~1e-5 of the output's largest
    value a convolution, tests/test_conv3x3.py bounds), to 1e-4 of the largest gradient."""
    torch.manual_seed(0)
    model = IMA(**SMALL)
    batch = _batch(shape, mask)
    exact = _outputs_and_gradients(copy.deepcopy(model).double(), {k: v.double() if v.is_floating_point() else v
                                                                  for k, v in batch.items()}, ("reference",))
    floor = 1e-6 * _largest(exact)
    eager = _outputs_and_gradients(model, batch, ("reference",))
    error = max(((eager[n].double() - v).abs().max() / max(v.abs().max().item(), floor)).item() for n, v in exact.items())
    with mock.patch.object(mcmri_fast.ops, "conv3x3", reference.conv3x3):
        direct = _outputs_and_gradients(model, batch, ("cpu", "reference"))
    _assert_close_to(direct, exact, rtol=0, atol=10 * error + 1e-6, floor=floor)
    fused = _outputs_and_gradients(model, batch, ("cpu", "reference"))
    _assert_close_to(fused, exact, rtol=0, atol=1e-4, floor=_largest(exact))


def test_paper_widths_on_the_fused_ops():
    """The paper's widths (C = 36: Winograd with padded output packs; c = 32; CSCA's 112 channels in 4
    heads), two stages, against the reference network: the output and every gradient, float32."""
    torch.manual_seed(0)
    model = IMA(stages=2)
    batch = _batch((1, 1, 32, 24))
    exact = _outputs_and_gradients(copy.deepcopy(model).double(), {k: v.double() if v.is_floating_point() else v
                                                                  for k, v in batch.items()}, ("reference",))
    fused = _outputs_and_gradients(model, batch, ("cpu", "reference"))
    _assert_close_to(fused, exact, rtol=0, atol=1e-4, floor=_largest(exact))


def test_ablations_keep_the_other_weights():
    """csca=False: the same parameters less the attentions'; dcm=False: the same parameters, another output
    (every stage blends with M⁰ alone)."""
    full, without_csca, without_dcm = IMA(**SMALL, stages=4), IMA(**SMALL, stages=4, csca=False), IMA(**SMALL, stages=4, dcm=False)
    names = set(full.state_dict())
    assert set(without_csca.state_dict()) == {n for n in names if ".csca." not in n} != names
    assert set(without_dcm.state_dict()) == names
    without_csca.load_state_dict({k: v for k, v in full.state_dict().items() if ".csca." not in k})
    without_dcm.load_state_dict(full.state_dict())
    batch = _batch((1, 1, 16, 18))
    with torch.no_grad():
        image, no_csca, no_dcm = (m(batch)["image"] for m in (full, without_csca, without_dcm))
    assert not torch.allclose(image, no_csca) and not torch.allclose(image, no_dcm)
    masks = without_dcm._stage_masks(batch["mask"], batch["zero_filled"].shape)
    assert all(torch.equal(m, masks[0]) for m in masks)
    dilated = full._stage_masks(batch["mask"], batch["zero_filled"].shape)
    assert not torch.equal(dilated[1], dilated[0]) and torch.equal(dilated[-1], dilated[0])


def test_compile_fullgraph_on_cpu():
    torch.manual_seed(0)
    model = IMA(**SMALL, stages=3)
    batch = _batch((1, 1, 16, 20))
    with mcmri_fast.use_backend("cpu", "reference"):
        expected = model(batch)["image"]
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        output = compiled(batch)
        ima_loss(output, batch).backward()
    torch.testing.assert_close(output["image"], expected, rtol=1e-4, atol=1e-4)
    assert all(p.grad is not None for p in model.parameters())


def test_loss_is_the_papers():
    g = torch.Generator().manual_seed(1)
    image, mapping, target = (torch.randn(2, 1, 8, 6, generator=g) for _ in range(3))
    expected = (image - target).abs().mean() + 0.5 * (image - mapping).abs().mean()
    torch.testing.assert_close(ima_loss({"image": image, "mapping": mapping}, {"target": target}), expected)


def test_registry_entry():
    spec = get_model_spec("ima")
    assert spec.trainable and spec.loss is ima_loss and spec.batch_size == 1 and spec.epochs == 100
    assert spec.config["stages"] == 12 and spec.config["csca"] and spec.config["dcm"]
    assert spec.optimizer == {"name": "adam", "lr": 1e-4}
    assert spec.data == {"magnitude": True, "normalization": "instance"}
    assert isinstance(build_model("ima", **spec.demo["model_config"]), IMA)


@pytest.mark.parametrize("change,error,message", [
    (lambda b: b.update(mask=torch.ones(1, 17, dtype=torch.bool)), ValueError, r"batch\['mask'\] must be \[B, W\]"),
    (lambda b: b.update(mask=torch.ones(1, 15, 18, dtype=torch.bool)), ValueError, r"batch\['mask'\] must be"),
    (lambda b: b.update(reference=torch.zeros(1, 1, 16, 20)), ValueError, "the reference"),
    (lambda b: b.update(zero_filled=torch.zeros(1, 2, 16, 18)), ValueError, r"\[B, 1, H, W\]"),
    (lambda b: b.update(zero_filled=torch.zeros(1, 1, 16, 18, dtype=torch.complex64)), TypeError, "magnitude"),
])
def test_bad_inputs(change, error, message):
    batch = _batch((1, 1, 16, 18))
    change(batch)
    with pytest.raises(error, match=message):
        IMA(**SMALL, stages=2)(batch)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"stages": 0}, ValueError, "stages must be a positive integer"),
    ({"stages": 2.0}, ValueError, "stages must be a positive integer"),
    ({"channels": -1}, ValueError, "channels"),
    ({"csca": 1}, TypeError, "csca must be a bool"),
    ({"csca_width": 5, "csca_heads": 4}, ValueError, "heads"),
])
def test_bad_configuration(kwargs, error, message):
    with pytest.raises(error, match=message):
        IMA(**{**SMALL, **kwargs})


def test_trains_and_evaluates_through_the_workflows(tmp_path):
    """One step of `mcmri train --model ima` on the builtin data, then its checkpoint evaluated."""
    from mcmri_fast.workflows.evaluate import evaluate

    config = TrainConfig(model="ima", model_config={**SMALL, "stages": 2}, epochs=1, batch_size=2, max_steps_per_epoch=1,
                         val_data=None, run_dir=str(tmp_path / "run"), device="cpu")
    result = train(config, progress=False)
    summary = evaluate(result["last_checkpoint"], tmp_path / "eval", slices_to_plot=(), progress=False)
    assert summary["metrics"]["psnr"]["mean"] > 0
