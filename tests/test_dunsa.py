"""DUN-SA: its size, the fused network against the same network on the reference backend, the ablation
switches, registry entry and workflows (the misaligned default, the alignment panel), torch.compile, bad
inputs."""
import copy
import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mcmri_fast
from mcmri_fast.data.fft import fft2c, ifft2c
from mcmri_fast.metrics import SSIMLoss
from mcmri_fast.models import build_model, get_model_spec
from mcmri_fast.models.dunsa import DUNSA
from mcmri_fast.nn import SpatialAlignment
from mcmri_fast.workflows.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {"width": 4, "depth": 2}


def _batch(shape, mask="1d", seed=0, dtype=torch.complex64):
    """A synthetic batch: a random complex target, its masked k-space and zero-filled image, a reference."""
    B, _, H, W = shape
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    target = torch.complex(torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real))
    if mask == "1d":
        sampled = torch.rand(B, W, generator=g) < 0.3
        sampled[:, W // 2 - 2: W // 2 + 2] = True
        plane = sampled[:, None, None, :]
    else:
        sampled = torch.rand(B, H, W, generator=g) < 0.3
        sampled[:, H // 2 - 2: H // 2 + 2, W // 2 - 2: W // 2 + 2] = True
        plane = sampled[:, None]
    masked = fft2c(target) * plane
    return {"target": target, "zero_filled": ifft2c(masked), "masked_kspace": masked, "scale": torch.ones(B, dtype=real),
            "mask": sampled, "reference": torch.rand(shape, generator=g, dtype=real)}


def _perturb_outputs(model, seed=1):
    """Small random output layers of SA-Net, Z-Net and S-Net (zero at initialisation): every block takes
    part, and the fields are a fraction of a pixel, at positions off whole pixels (where the warp's
    derivative to the field jumps)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for stage in model.unfolded:
            for net in (stage.align.net if stage.align is not None else None, stage.z_net, stage.s_net):
                if net is not None:
                    net.out.weight.copy_(0.05 * torch.randn(net.out.weight.shape, generator=g))
                    net.out.bias.copy_(0.3 * torch.randn(net.out.bias.shape, generator=g))
    return model


def _loss(output, batch):
    return SSIMLoss()(output["image"].abs().float(), batch["target"].abs().float())


def _outputs_and_gradients(model, batch, preference, loss=_loss):
    model.zero_grad(set_to_none=True)
    with mcmri_fast.use_backend(*preference):
        output = model(batch)
        loss(output, batch).backward()
    return {**{k: v.detach() for k, v in output.items()}, **{n: p.grad for n, p in model.named_parameters()}}


def _largest(values: dict) -> float:
    return max(value.abs().max().item() for value in values.values())


def _assert_close_to(got, expected, rtol, atol, floor):
    for name, value in expected.items():
        scale = max(value.abs().max().item(), floor)
        torch.testing.assert_close(got[name].to(value.dtype) / scale, value / scale, rtol=rtol, atol=atol,
                                   msg=lambda m: f"{name}: {m}")


def _count(**kwargs):
    with torch.device("meta"):
        model = DUNSA(**kwargs)
        batch = _meta_batch()
    with mcmri_fast.use_backend("reference"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() / 2e9


def _meta_batch():
    images = {k: torch.empty(1, 1, 256, 256, dtype=torch.complex64) for k in ("zero_filled", "masked_kspace")}
    return {**images, "reference": torch.empty(1, 1, 256, 256), "scale": torch.ones(1),
            "mask": torch.ones(1, 256, dtype=torch.bool)}


@pytest.mark.parametrize("kwargs,size", [
    ({}, (4_245_228, 45.48)),
    ({"alignment_scale": 1}, (4_245_228, 66.21)),
    ({"alignment": False}, (2_829_576, 44.10)),
    ({"alignment": False, "multimodal": False}, (1_413_924, 21.99)),
    ({"denoiser": False}, (2_831_304, 23.49)),
], ids=["dunsa", "full-resolution-sa-net", "without-sa", "without-mm", "without-db"])
def test_size(kwargs, size):
    """The sizes the model's docstring states (parameters; GMACs of the convolutions at 256 x 256)."""
    parameters, gmacs = _count(**kwargs)
    assert parameters == size[0]
    assert gmacs == pytest.approx(size[1], abs=0.01)


@pytest.mark.parametrize("alignment_scale", [1, 4])
def test_every_parameter_takes_part(alignment_scale):
    torch.manual_seed(0)
    model = _perturb_outputs(DUNSA(**SMALL, stages=3, alignment_scale=alignment_scale))
    batch = _batch((1, 1, 16, 18))
    _loss(model(batch), batch).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.parameters()), [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]


def test_coarse_alignment_field_is_in_full_resolution_pixels():
    """alignment_scale = s: SA-Net sees the inputs average-pooled by s (ceil mode: any size) and its update,
    upsampled bilinearly, is in full-resolution pixels: a constant output c of SA-Net moves the field by
    −α·s·c at every pixel. At s = 1 SA-Net runs on the inputs as they are."""
    torch.manual_seed(0)
    x, aligned, flow = torch.randn(2, 2, 18, 23), torch.randn(2, 1, 18, 23), torch.randn(2, 2, 18, 23)
    for scale in (1, 4):
        module = SpatialAlignment(2, 1, width=4, depth=1, scale=scale)
        seen = []
        module.net.register_forward_pre_hook(lambda _, inputs: seen.append(inputs[0].shape[-2:]))
        with torch.no_grad():
            module.alpha.fill_(0.5)
            module.net.out.bias.copy_(torch.tensor([0.75, -0.25]))
            moved = module(x, aligned, flow) - flow
        assert seen == [(-(-18 // scale), -(-23 // scale))]
        expected = -0.5 * scale * torch.tensor([0.75, -0.25])[None, :, None, None].expand_as(flow)
        torch.testing.assert_close(moved, expected)
    with pytest.raises(ValueError, match="scale must be an integer >= 1"):
        SpatialAlignment(2, 1, scale=0)


def test_the_untrained_network_is_zero_filling():
    """The output layers start at zero: the fields are 0, the aligned reference is the reference, and each
    stage's DC of the zero-filled image gives it back (it is consistent with the measurement, and zero
    elsewhere in k-space)."""
    torch.manual_seed(0)
    batch = _batch((2, 1, 16, 18))
    with torch.no_grad():
        output = DUNSA(**SMALL, stages=2)(batch)
    assert not output["flows"].any()
    torch.testing.assert_close(output["aligned"], batch["reference"])
    torch.testing.assert_close(output["image"], batch["zero_filled"], atol=1e-5, rtol=1e-5)


NETWORK_CASES = pytest.mark.parametrize("shape,mask", [((1, 1, 256, 256), "1d"), ((2, 1, 35, 27), "2d")],
                                        ids=["paper-1x1x256x256-1d", "2x1x35x27-2d"])


@NETWORK_CASES
def test_fused_network_matches_the_reference_backend_in_float64(shape, mask):
    """The 12-stage network, fused (cpu backend: warp, data consistency, conv3x3) against the same network
    and weights on the reference ops: the outputs (image, aligned reference, every field) and every
    parameter gradient of 1 − SSIM, to 1e-9."""
    torch.manual_seed(0)
    model = _perturb_outputs(DUNSA(**SMALL)).double()
    batch = _batch(shape, mask, dtype=torch.complex128)
    expected = _outputs_and_gradients(model, batch, ("reference",))
    got = _outputs_and_gradients(model, batch, ("cpu", "reference"))
    assert expected["flows"].abs().max() > 0.05  # the fields are not trivially zero
    _assert_close_to(got, expected, rtol=1e-7, atol=1e-9, floor=1e-6 * _largest(expected))


@NETWORK_CASES
def test_fused_network_matches_the_reference_backend_in_float32(shape, mask):
    """float32 fused against the float64 reference network with the same weights: the outputs and every
    gradient to 2e-4 of the largest (the Winograd convolutions' rounding, tests/test_conv3x3.py, which the
    instance norms' division by small planes' deviations (9 × 7 at the odd size's bottom) amplifies; the
    float64 test above holds the same network to 1e-9)."""
    torch.manual_seed(0)
    model = _perturb_outputs(DUNSA(**SMALL))
    batch64 = _batch(shape, mask, dtype=torch.complex128)
    batch = {k: v.to(torch.complex64 if v.is_complex() else torch.float32) if v.is_floating_point() or v.is_complex() else v
             for k, v in batch64.items()}
    exact = _outputs_and_gradients(copy.deepcopy(model).double(), batch64, ("reference",))
    fused = _outputs_and_gradients(model, batch, ("cpu", "reference"))
    _assert_close_to(fused, exact, rtol=0, atol=2e-4, floor=_largest(exact))


def test_ablations():
    """alignment=False: the weights less SA-Net's, φ = 0; multimodal=False: no Z-Net (and no alignment),
    the reference unused; denoiser=False: no S-Net. Each changes the output."""
    full = DUNSA(**SMALL, stages=2)
    names = set(full.state_dict())
    variants = {
        "alignment": (DUNSA(**SMALL, stages=2, alignment=False), ".align."),
        "multimodal": (DUNSA(**SMALL, stages=2, alignment=False, multimodal=False), (".align.", ".z_net.", ".beta_z")),
        "denoiser": (DUNSA(**SMALL, stages=2, denoiser=False), (".s_net.", ".beta_s")),
    }
    _perturb_outputs(full)
    batch = _batch((1, 1, 16, 18))
    with torch.no_grad():
        image = full(batch)["image"]
    for name, (model, dropped) in variants.items():
        dropped = (dropped,) if isinstance(dropped, str) else dropped
        kept = {n for n in names if not any(d in n for d in dropped)}
        assert set(model.state_dict()) == kept != names, name
        model.load_state_dict({k: v for k, v in full.state_dict().items() if k in kept})
        with torch.no_grad():
            output = model(batch)
        assert not torch.allclose(output["image"], image), name
        assert ("flow" in output) == (name == "denoiser"), name
    # without the multimodal block the reference is not read
    without_mm = variants["multimodal"][0]
    with torch.no_grad():
        a = without_mm(batch)["image"]
        b = without_mm({**batch, "reference": torch.zeros_like(batch["reference"])})["image"]
    assert torch.equal(a, b)


def test_data_consistency_holds_at_the_sampled_points_as_the_paper_says():
    """Eq. 11 where M = 1: the output's k-space is (k̃ + β₁ F z + β₂ F s)/(1 + β₁ + β₂); with β's → 0 it is
    the measurement. Checked through the model with tiny β's: the sampled k-space is the measurement."""
    torch.manual_seed(0)
    model = _perturb_outputs(DUNSA(**SMALL, stages=2))
    with torch.no_grad():
        for stage in model.unfolded:
            stage.beta_z.fill_(1e-7)
            stage.beta_s.fill_(1e-7)
    batch = _batch((1, 1, 16, 18))
    with torch.no_grad():
        kspace = fft2c(model(batch)["image"])
    sampled = batch["mask"][:, None, None, :].expand_as(kspace)
    torch.testing.assert_close(kspace[sampled], batch["masked_kspace"][sampled], atol=1e-5, rtol=1e-5)


def test_compile_fullgraph_on_cpu():
    torch.manual_seed(0)
    model = _perturb_outputs(DUNSA(**SMALL, stages=2))
    batch = _batch((1, 1, 16, 20))
    with mcmri_fast.use_backend("cpu", "reference"):
        expected = model(batch)["image"]
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        output = compiled(batch)
        _loss(output, batch).backward()
    torch.testing.assert_close(output["image"], expected, rtol=1e-4, atol=1e-4)
    assert all(p.grad is not None for p in model.parameters())


def test_registry_entry():
    spec = get_model_spec("dunsa")
    assert spec.trainable and spec.loss == "ssim" and spec.batch_size == 2
    assert spec.config["stages"] == 12 and spec.config["alignment"] and spec.config["multimodal"] and spec.config["denoiser"]
    assert spec.optimizer == {"name": "adam", "lr": 1e-4}
    assert spec.data == {"magnitude": False, "normalization": "volume_max", "misalignment": 1.0}
    assert isinstance(build_model("dunsa", **spec.demo["model_config"]), DUNSA)


@pytest.mark.parametrize("change,error,message", [
    (lambda b: b.update(zero_filled=b["zero_filled"].abs()), TypeError, "complex images"),
    (lambda b: b.update(zero_filled=b["zero_filled"][:, :, :8]), ValueError, "k-space at the image size"),
    (lambda b: b.update(zero_filled=b["zero_filled"].expand(1, 2, 16, 18)), ValueError, r"\[B, 1, H, W\]"),
    (lambda b: b.update(reference=torch.zeros(1, 1, 16, 20)), ValueError, r"batch\['reference'\] must be"),
    (lambda b: b.update(mask=torch.ones(2, 18, dtype=torch.bool)), ValueError, r"batch\['mask'\] must be"),
])
def test_bad_inputs(change, error, message):
    batch = _batch((1, 1, 16, 18))
    change(batch)
    with pytest.raises(error, match=message):
        DUNSA(**SMALL, stages=1)(batch)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"stages": 0}, ValueError, "stages must be an integer >= 1"),
    ({"width": 2.0}, ValueError, "width must be an integer"),
    ({"depth": -1}, ValueError, "depth must be an integer >= 0"),
    ({"alignment_scale": 0}, ValueError, "alignment_scale must be an integer >= 1"),
    ({"alignment": 1}, TypeError, "alignment must be a bool"),
    ({"multimodal": False}, ValueError, "alignment=True needs multimodal=True"),
    ({"alignment": False, "multimodal": False, "denoiser": False}, ValueError, "no prior"),
])
def test_bad_configuration(kwargs, error, message):
    with pytest.raises(error, match=message):
        DUNSA(**{**SMALL, **kwargs})


def test_trains_and_evaluates_through_the_workflows(tmp_path):
    """One step of `mcmri train --model dunsa` on the builtin data: its default misaligned reference (σ = 1)
    goes into the run's config, the evaluation reads it and draws the alignment panels."""
    from mcmri_fast.workflows.evaluate import evaluate

    config = TrainConfig(model="dunsa", model_config={**SMALL, "stages": 2}, epochs=1, batch_size=2, max_steps_per_epoch=1,
                         val_data=None, run_dir=str(tmp_path / "run"), device="cpu")
    result = train(config, progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["misalignment"] == 1.0
    summary = evaluate(result["last_checkpoint"], tmp_path / "eval", slices_to_plot=(0,), progress=False)
    assert summary["metrics"]["psnr"]["mean"] > 0 and summary["data"]["misalignment"] == 1.0
    assert len(summary["alignment_panels"]) == 1 and (tmp_path / "eval" / "panels" / summary["alignment_panels"][0]).exists()
    # another σ when asked, and no misalignment for a model without a default
    assert TrainConfig(model="dunsa", misalignment=3.0).misalignment == 3.0
    unet = train(TrainConfig(model="unet", model_config={"chans": 4, "num_pool_layers": 1}, epochs=1, batch_size=2,
                             max_steps_per_epoch=1, val_data=None, run_dir=str(tmp_path / "unet"), device="cpu"),
                 progress=False)
    assert json.loads((tmp_path / "unet" / "config.json").read_text())["misalignment"] == 0.0
    assert unet["last_checkpoint"]
