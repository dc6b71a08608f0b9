"""MANet / MARIO: their sizes, every parameter in use, the fused network against the same network on the
reference backend, batch norm folded in eval mode, the optional data consistency, the loss, the authors'
parameter names, registry entries and workflows (the noisy default of manet), torch.compile, bad inputs."""
import json
import math
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import mcmri_fast
from mcmri_fast.data.fft import fft2c, ifft2c
from mcmri_fast.models import build_model, get_model_spec
from mcmri_fast.models.manet import AUTHORS_UNUSED, MANet, from_authors_state_dict, manet_loss
from mcmri_fast.nn import ConvBatchNormReLU, DenseBlock
from mcmri_fast.workflows.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

AUTHORS_KEYS = Path(__file__).parent / "data" / "manet_authors_keys.json"


def _batch(shape, complex_image, seed=0, dtype=torch.complex64):
    """A synthetic batch: a random complex target, its k-space, a column mask per sample and the masked
    k-space, a reference; magnitudes of the images for MANet."""
    B, _, H, W = shape
    g = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    target = torch.complex(torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real))
    reference = torch.complex(torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real))
    mask = torch.rand(B, W, generator=g) < 0.3
    mask[:, W // 2 - 2: W // 2 + 2] = True
    kspace = fft2c(target)
    if not complex_image:
        target, reference = target.abs(), reference.abs()
    return {"target": target, "reference": reference, "kspace": kspace, "masked_kspace": kspace * mask[:, None, None, :],
            "mask": mask, "scale": torch.ones(B, dtype=torch.float64)}


def _perturb(model, seed=1):
    """Every parameter with a gradient: non-negative channel-attention weights W_down (f₁ ≥ 0, ReLU features,
    so no attention's ReLU is dead; with one reduced channel one in two is at initialisation), and small
    random target output layers where data consistency starts them at zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("channel_down"):
                parameter.abs_()
            elif name.endswith("target_out.weight") and not parameter.any():
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=g))
    return model


def _outputs_and_gradients(model, batch, preference):
    model.zero_grad(set_to_none=True)
    with mcmri_fast.use_backend(*preference):
        output = model(batch)
        manet_loss(output, batch).backward()
    return {**{k: v.detach() for k, v in output.items()}, **{n: p.grad for n, p in model.named_parameters()}}


def _count(complex_image):
    with torch.device("meta"):
        model = MANet(complex_image=complex_image)
        reference = torch.empty(1, 1, 256, 256, dtype=torch.complex64 if complex_image else torch.float32)
        batch = {"masked_kspace": torch.empty(1, 1, 256, 256, dtype=torch.complex64), "scale": torch.ones(1),
                 "reference": reference}
    with mcmri_fast.use_backend("reference"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(batch)
    stage = sum(p.numel() for name, p in model.kspace_net.named_parameters() if not name.endswith(("_in.weight", "_in.bias",
                                                                                                     "_out.weight", "_out.bias")))
    return sum(p.numel() for p in model.parameters()), stage, counter.get_total_flops() / 2e9


@pytest.mark.parametrize("complex_image,size", [(False, (7_283_670, 127.86)), (True, (7_283_992, 127.88))], ids=["manet", "mario"])
def test_size(complex_image, size):
    """The sizes the model's docstring states: the parameters that take part in the authors' forward pass,
    each stage's body, GMACs of the convolutions at 256 x 256."""
    parameters, stage, gmacs = _count(complex_image)
    assert parameters == size[0]
    assert stage == 18 * 148_224 + 4 * 102_656 + 4 * 139_520 + 8 * 561 == 3_641_224
    assert gmacs == pytest.approx(size[1], abs=0.01)


@pytest.mark.parametrize("complex_image,data_consistency", [(False, False), (True, True), (False, True)],
                         ids=["manet", "mario-dc", "manet-dc"])
def test_every_parameter_takes_part(complex_image, data_consistency):
    torch.manual_seed(0)
    model = _perturb(MANet(16, complex_image, data_consistency))
    batch = _batch((2, 1, 32, 48), complex_image)
    output = model(batch)
    assert output["image"].shape == batch["target"].shape and output["image"].dtype == batch["target"].dtype
    assert output["reference_image"].dtype == batch["reference"].dtype
    assert output["kspace"].shape == output["reference_kspace"].shape == batch["kspace"].shape
    manet_loss(output, batch).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


NETWORK_CASES = pytest.mark.parametrize("shape,channels,complex_image,data_consistency", [
    ((1, 1, 256, 256), 4, False, False),
    ((1, 1, 256, 256), 4, True, False),
    ((2, 1, 48, 80), 8, False, True),
    ((2, 1, 48, 80), 8, True, True),
], ids=["manet-1x1x256x256", "mario-1x1x256x256", "manet-dc-2x1x48x80", "mario-dc-2x1x48x80"])


@NETWORK_CASES
def test_fused_network_matches_the_reference_backend_in_float64(shape, channels, complex_image, data_consistency):
    """The network on the fused ops (cpu backend: guided attention, conv3x3, conv1x1, data consistency)
    against the same network and weights on the reference ops, training mode: the four outputs and every
    parameter gradient of the loss, to 1e-9 of the largest."""
    torch.manual_seed(0)
    model = _perturb(MANet(channels, complex_image, data_consistency)).double()
    batch = _batch(shape, complex_image, dtype=torch.complex128)
    expected = _outputs_and_gradients(model, batch, ("reference",))
    got = _outputs_and_gradients(model, batch, ("cpu", "reference"))
    # the biases of the convolutions before a training-mode batch norm have a zero gradient in exact
    # arithmetic: rounding noise there is measured against the largest gradient of all, not its own
    largest = max(value.abs().max().item() for value in expected.values())
    for name, value in expected.items():
        scale = max(value.abs().max().item(), 1e-6 * largest)
        torch.testing.assert_close(got[name] / scale, value / scale, rtol=1e-7, atol=1e-9, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("residual", [False, True])
def test_batch_norm_is_folded_into_the_convolution_in_eval_mode(residual):
    """Eval mode: one convolution with the folded weights, BN(conv(x) + r) = conv'(x) + s·r, equal to the
    unfolded steps in float64; the batch-norm module itself is not called."""
    torch.manual_seed(0)
    unit = ConvBatchNormReLU(6, 5).double()
    with torch.no_grad():
        unit.bn.running_mean.normal_()
        unit.bn.running_var.uniform_(0.5, 2.0)
        unit.bn.weight.normal_()
        unit.bn.bias.normal_()
    x = torch.randn(2, 6, 11, 13, dtype=torch.float64)
    r = torch.randn(2, 5, 11, 13, dtype=torch.float64) if residual else None
    unfolded = torch.relu(unit.bn.eval()(unit.conv(x) + (r if residual else 0)))
    calls = []
    unit.bn.register_forward_hook(lambda *_: calls.append(1))
    folded = unit.eval()(x, r)
    assert not calls
    torch.testing.assert_close(folded, unfolded, rtol=0, atol=1e-10)
    # the whole network in eval mode: no batch norm runs, and it is the same function of its inputs
    block = DenseBlock(5, 4).double().eval()
    inputs = torch.rand(2, 5, 8, 8, dtype=torch.float64)
    expected = inputs
    links = None
    for layer in block.layers:
        out = torch.relu(layer.bn(layer.conv(expected) + (0 if links is None else links)))
        links = expected if links is None else links + expected
        expected = out
    torch.testing.assert_close(block(inputs), expected, rtol=0, atol=1e-10)


def test_dense_block_links():
    """o_{i+1} = relu(BN_i(conv_i(o_i) + Σ_{j<i} o_j)): with zero convolutions and an identity BN (eval
    mode, μ = 0, var = 1 − eps), each unit passes on the sum of the outputs before its input: o₁ = 0,
    o₂ = o₀ = x, o₃ = o₀ + o₁ = x, o₄ = o₀ + o₁ + o₂ = 2x for x ≥ 0 (links j ≤ i would give 8x)."""
    block = DenseBlock(3, 4).double().eval()
    with torch.no_grad():
        for layer in block.layers:
            layer.conv.weight.zero_()
            layer.conv.bias.zero_()
            layer.bn.running_var.fill_(1 - layer.bn.eps)
    x = torch.rand(1, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(block(x), 2 * x)


def test_data_consistency():
    """Off by default (the paper has none). On: the target output layers start at zero, so the untrained
    network is zero-filling; stage 1's target k-space is the measurement where sampled, and so is MARIO's
    image's; MANet's image is the magnitude of the consistent image that has stage 1's phase."""
    assert get_model_spec("manet").config["data_consistency"] is False is get_model_spec("mario").config["data_consistency"]
    torch.manual_seed(0)
    for complex_image in (False, True):
        model = MANet(4, complex_image, data_consistency=True)
        batch = _batch((2, 1, 32, 48), complex_image)
        zero_filled = ifft2c(batch["masked_kspace"])
        with torch.no_grad():
            untrained = model(batch)
        torch.testing.assert_close(untrained["kspace"], batch["masked_kspace"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(untrained["image"], zero_filled if complex_image else zero_filled.abs(), atol=1e-5, rtol=1e-5)
        _perturb(model)
        with torch.no_grad():
            output = model(batch)
        sampled = batch["mask"][:, None, None, :].expand_as(output["kspace"])
        torch.testing.assert_close(output["kspace"][sampled], batch["masked_kspace"][sampled], atol=1e-4, rtol=1e-4)
        if complex_image:
            torch.testing.assert_close(fft2c(output["image"])[sampled], batch["masked_kspace"][sampled], atol=1e-4, rtol=1e-4)
        without = MANet(4, complex_image)
        without.load_state_dict(model.state_dict())
        with torch.no_grad():
            assert not torch.allclose(without(batch)["image"], output["image"])


def test_loss_is_eq_6():
    torch.manual_seed(0)
    batch = _batch((2, 1, 16, 16), complex_image=True)
    output = {"kspace": torch.randn(2, 1, 16, 16, dtype=torch.complex64), "reference_kspace": torch.randn(2, 1, 16, 16, dtype=torch.complex64),
              "image": torch.randn(2, 1, 16, 16, dtype=torch.complex64), "reference_image": torch.randn(2, 1, 16, 16, dtype=torch.complex64)}

    def l1(a, b):
        return (torch.view_as_real(a) - torch.view_as_real(b)).abs().mean()

    terms = (l1(output["reference_kspace"], fft2c(batch["reference"])), l1(output["kspace"], batch["kspace"]),
             l1(output["reference_image"], batch["reference"]), l1(output["image"], batch["target"]))
    for alpha, beta in ((0.4, 0.6), (0.5, 0.9)):
        expected = alpha * ((1 - beta) * terms[0] + beta * terms[1]) + (1 - alpha) * ((1 - beta) * terms[2] + beta * terms[3])
        torch.testing.assert_close(manet_loss(output, batch, alpha=alpha, beta=beta), expected)
    torch.testing.assert_close(manet_loss(output, batch), manet_loss(output, batch, alpha=0.4, beta=0.6))
    # the target's k-space truth is batch["kspace"] in the images' units
    halved = {**batch, "scale": 2 * batch["scale"], "kspace": 2 * batch["kspace"]}
    torch.testing.assert_close(manet_loss(output, halved), manet_loss(output, batch))


def test_compile_fullgraph_on_cpu():
    torch.manual_seed(0)
    model = MANet(4, complex_image=False, data_consistency=True, convs=1)  # one unit per dense block: a shorter trace
    batch = _batch((2, 1, 32, 32), complex_image=False)
    with mcmri_fast.use_backend("cpu", "reference"):
        expected = model(batch)["image"]
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        output = compiled(batch)
        manet_loss(output, batch).backward()
    torch.testing.assert_close(output["image"], expected, rtol=1e-4, atol=1e-4)
    assert all(p.grad is not None for p in model.parameters())


# ---------------------------------------------------------------------------------------------------
# The authors' parameter names


def _authors_state_dict(complex_image):
    fixture = json.loads(AUTHORS_KEYS.read_text())
    shapes = {**fixture["keys"], **(fixture["complex_image_changes"] if complex_image else {})}
    g = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=g) if shape else torch.tensor(17) for k, shape in shapes.items()}
    return fixture, state


@pytest.mark.parametrize("complex_image", [False, True], ids=["manet", "mario"])
def test_authors_state_dict_loads(complex_image):
    """Every parameter and batch-norm buffer of the authors' module (a fixture of its names and shapes,
    tests/data/manet_authors_keys.json) lands in ours, but their 8 unused conv3×3, which are dropped."""
    fixture, state = _authors_state_dict(complex_image)
    if not complex_image:
        assert sum(v.numel() for k, v in state.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))) \
            == fixture["parameters"] == 7_579_094
    converted = from_authors_state_dict(state, complex_image=complex_image)
    model = MANet(complex_image=complex_image)
    model.load_state_dict(converted)  # strict: every key of ours, and nothing else
    held = {id(v) for v in converted.values()}  # the tensors are passed on as given
    dropped = {k for k, v in state.items() if id(v) not in held}
    assert dropped and all(AUTHORS_UNUSED.fullmatch(k) for k in dropped) and len(dropped) == 16
    assert sum(state[k].numel() for k in dropped) == 295_424
    assert sum(p.numel() for p in model.parameters()) == (7_283_992 if complex_image else 7_283_670)
    # the same from their Lightning checkpoint, from a DataParallel-prefixed state dict, without the unused layers
    for given in ({"state_dict": state, "epoch": 3}, {f"module.{k}": v for k, v in state.items()},
                  {k: v for k, v in state.items() if k not in dropped}):
        again = from_authors_state_dict(given, complex_image=complex_image)
        assert list(again) == list(converted) and all(again[k] is converted[k] for k in again)
    ours = model.state_dict()
    for mine, theirs in [("kspace_net.reference_in.weight", "UNet_k.conv1T1.weight"),
                         ("kspace_net.target_down.2.layers.3.conv.bias", "UNet_k.dT2_3.conv_list.3.bias"),
                         ("kspace_net.reference_down.0.layers.1.bn.running_var", "UNet_k.dT1_1.bn_list.1.running_var"),
                         ("image_net.target_bottom.layers.0.bn.num_batches_tracked", "UNet_img.bottom_T2.bn_list.0.num_batches_tracked"),
                         ("image_net.reference_up.0.up.weight", "UNet_img.up4_T1.upsample_layer.weight"),
                         ("image_net.target_up.3.fuse.conv.weight", "UNet_img.up1_T2.conv.weight"),
                         ("image_net.target_up.1.fuse.bn.bias", "UNet_img.up3_T2.bn.bias"),
                         ("kspace_net.target_up_dense.0.layers.2.bn.weight", "UNet_k.u4_T2.bn_list.2.weight"),
                         ("kspace_net.down_attention.1.channel_down", "UNet_k.atten_depth_channel_1.fc1.weight"),
                         ("kspace_net.up_attention.3.channel_up", "UNet_k.atten_depth_channel_U_3.fc2.weight"),
                         ("image_net.up_attention.0.spatial", "UNet_img.atten_depth_spatial_U_0.conv1.weight"),
                         ("image_net.target_out.bias", "UNet_img.outconvT2.bias")]:
        assert torch.equal(ours[mine], state[theirs]), mine


def test_authors_state_dict_refusals():
    _, state = _authors_state_dict(False)
    with pytest.raises(ValueError, match=r"unexpected key 'UNet_k\.extra\.weight'"):
        from_authors_state_dict({**state, "UNet_k.extra.weight": torch.zeros(1)})
    missing = dict(state)
    del missing["UNet_img.dT1_2.bn_list.3.running_mean"]
    with pytest.raises(ValueError, match=r"lacks the key 'UNet_img\.dT1_2\.bn_list\.3\.running_mean'"):
        from_authors_state_dict(missing)
    with pytest.raises(ValueError, match=r"state_dict\['UNet_img\.conv1T1\.weight'\] has shape \(64, 1, 1, 1\), expected \(64, 2, 1, 1\)"):
        from_authors_state_dict(state, complex_image=True)  # their published image net is MANet's, of 1 channel
    with pytest.raises(ValueError, match=r"state_dict\['UNet_k\.convdemU2\.bias'\] has shape \(32,\), expected \(64,\)"):
        from_authors_state_dict({**state, "UNet_k.convdemU2.bias": torch.zeros(32)})
    with pytest.raises(TypeError, match=r"state_dict\['UNet_k\.conv1T1\.bias'\] must be a tensor"):
        from_authors_state_dict({**state, "UNet_k.conv1T1.bias": [0.0] * 64})
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        from_authors_state_dict(list(state.items()))
    with pytest.raises(TypeError, match="complex_image must be a bool"):
        from_authors_state_dict(state, complex_image="yes")


# ---------------------------------------------------------------------------------------------------
# Registry, workflows, bad inputs


def test_registry_entries():
    for name, complex_image, data in (("manet", False, {"magnitude": True, "normalization": "volume_max", "noise": 0.1}),
                                      ("mario", True, {"magnitude": False, "normalization": "volume_max", "noise": 0.0})):
        spec = get_model_spec(name)
        assert spec.trainable and spec.loss is manet_loss and spec.batch_size == 8 and spec.epochs == 50
        assert spec.optimizer == {"name": "adam", "lr": 1e-3} and spec.schedule == {"name": "none"}
        assert spec.data == data and spec.config == {"channels": 64, "data_consistency": False, "convs": 4}
        model = build_model(name, **spec.demo["model_config"])
        assert isinstance(model, MANet) and model.complex_image is complex_image


@pytest.mark.parametrize("name,noise", [("manet", 0.1), ("mario", 0.0)])
def test_trains_and_evaluates_through_the_workflows(tmp_path, name, noise):
    """One step of `mcmri train --model manet|mario` on the builtin data: the model's default k-space noise
    goes into the run's config, and the evaluation reads it there."""
    from mcmri_fast.workflows.evaluate import evaluate

    config = TrainConfig(model=name, model_config={"channels": 4}, epochs=1, batch_size=2, max_steps_per_epoch=1,
                         val_data=None, run_dir=str(tmp_path / "run"), device="cpu")
    result = train(config, progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["noise"] == noise
    summary = evaluate(result["last_checkpoint"], tmp_path / "eval", slices_to_plot=(0,), progress=False)
    assert math.isfinite(summary["metrics"]["psnr"]["mean"]) and summary["data"]["noise"] == noise
    assert TrainConfig(model=name, noise=0.05).noise == 0.05


@pytest.mark.parametrize("complex_image,change,error,message", [
    (False, lambda b: b.update(reference=b["reference"][..., :40]), ValueError, r"batch\['reference'\] at the k-space size"),
    (False, lambda b: b.update(reference=b["reference"].to(torch.complex64)), TypeError, "MANet takes magnitude images"),
    (True, lambda b: b.update(reference=b["reference"].abs()), TypeError, "MARIO takes complex images"),
    (False, lambda b: b.update(masked_kspace=b["masked_kspace"].expand(2, 2, 32, 48)), ValueError, "one channel"),
    (False, lambda b: b.update(masked_kspace=b["masked_kspace"].abs()), ValueError, r"batch\['masked_kspace'\] must be a complex"),
    (True, lambda b: b.update(mask=torch.ones(3, 48, dtype=torch.bool)), ValueError, r"batch\['mask'\] must be"),
])
def test_bad_inputs(complex_image, change, error, message):
    batch = _batch((2, 1, 32, 48), complex_image)
    change(batch)
    with pytest.raises(error, match=message):
        MANet(4, complex_image, data_consistency=True)(batch)


def test_sizes_not_divisible_by_16_are_refused():
    with pytest.raises(ValueError, match="MARIO needs H and W divisible by 16, got 32 x 40"):
        MANet(4, complex_image=True)(_batch((1, 1, 32, 40), complex_image=True))


@pytest.mark.parametrize("kwargs,error,message", [
    ({"channels": 0}, ValueError, "channels must be a positive integer"),
    ({"channels": 8.0}, ValueError, "channels must be a positive integer"),
    ({"convs": 0}, ValueError, "convs must be a positive integer"),
    ({"complex_image": 1}, TypeError, "complex_image must be a bool"),
    ({"data_consistency": "yes"}, TypeError, "data_consistency must be a bool"),
])
def test_bad_configuration(kwargs, error, message):
    with pytest.raises(error, match=message):
        MANet(**kwargs)
