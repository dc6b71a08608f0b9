"""Tests of the model registry (mcmri_fast.models) and the baselines (mcmri_fast.models.baselines).

Inputs are builtin-dataset items (mcmri_fast.data.datasets.BuiltinDataset, 4x random masks) collated
with default_collate, cropped to odd sizes where a test needs them. The U-Net is compared with
fastMRI's own `fastmri/models/unet.py` when fastmri is installed; the data-consistency output is
checked in k-space with the data layer's fft2c.
"""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.data import default_collate

from mcmri_fast import models
from mcmri_fast.data import fft2c, ifft2c
from mcmri_fast.data.datasets import BuiltinDataset
from mcmri_fast.data.masks import mask_func
from mcmri_fast.data.transforms import center_crop
from mcmri_fast.models import ModelSpec, UnknownModelError, build_model, get_model_spec, model_names, register
from mcmri_fast.models.baselines import UNet, UNetReconstruction, ZeroFilled, low_resolution_phase, measured_kspace

BASELINES = ("unet", "unet_dc", "zero_filled")


def _random_mask():
    return mask_func("random", center_fractions=[0.08], accelerations=[4])


def _collate(dataset, indices):
    return default_collate([dataset[i] for i in indices])


@pytest.fixture(scope="module")
def magnitude_batch():
    """Two instance-normalised magnitude slices of the builtin test split: [2, 1, 256, 256] float32."""
    return _collate(BuiltinDataset("test", _random_mask(), magnitude=True, normalization="instance"), [4, 9])


@pytest.fixture(scope="module")
def complex_batch():
    """Two complex slices normalised by their volume's maximum, from two splits (so their scales
    differ): [2, 1, 256, 256] complex64, mask [2, 256]."""
    options = dict(magnitude=False, normalization="volume_max")
    return default_collate([BuiltinDataset("test", _random_mask(), **options)[6],
                            BuiltinDataset("val", _random_mask(), **options)[8]])


@pytest.fixture
def isolated_registry(monkeypatch):
    """A copy of the registry that the test may change; the real one is restored afterwards."""
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))


def _spec(name="tiny", **changes):
    fields = dict(
        name=name, build=lambda width=3: torch.nn.Linear(width, 2), config={"width": 3}, loss="mse",
        data={"magnitude": True, "normalization": None}, optimizer={"name": "adam", "lr": 1e-4},
        schedule={"name": "cosine"}, epochs=2, batch_size=4, trainable=True, description="a test model",
    )
    fields.update(changes)
    return ModelSpec(**fields)


def _odd_complex_batch(height, width, seed):
    """A complex batch at an odd size built as the dataset builds one: builtin images cropped to
    (height, width), k-space fft2c of them, a 4x random mask, images divided by the volume maximum."""
    images = center_crop(BuiltinDataset("val", _random_mask(), magnitude=False, normalization=None)
                         .target_images[5:7], (height, width)).unsqueeze(1)
    kspace = fft2c(images)
    mask_function = _random_mask()
    mask = torch.stack([mask_function((height, width), seed=(seed, i)).mask for i in range(2)])  # [2, W]
    masked = kspace * mask[:, None, None, :]
    scale = torch.tensor([float(images.abs().max()), 2.5 * float(images.abs().max())], dtype=torch.float64)
    normalise = scale.reshape(-1, 1, 1, 1).to(torch.float32)
    return {"zero_filled": ifft2c(masked) / normalise, "target": images / normalise, "masked_kspace": masked,
            "mask": mask, "scale": scale, "offset": torch.zeros(2, dtype=torch.float64)}


# ---------------------------------------------------------------------------------------------------
# Registry


def test_baselines_are_registered_with_the_papers_defaults():
    assert set(BASELINES) <= set(model_names())
    assert model_names() == tuple(sorted(model_names()))
    for name in ("unet", "unet_dc"):
        spec = get_model_spec(name)
        assert spec.name == name and spec.trainable
        assert spec.config == {"chans": 32, "num_pool_layers": 4, "drop_prob": 0.0}
        assert (spec.loss, spec.epochs, spec.batch_size) == ("l1", 50, 1)
        assert spec.optimizer == {"name": "rmsprop", "lr": 1e-3, "weight_decay": 0.0}
        assert spec.schedule == {"name": "step", "step_size": 40, "gamma": 0.1}
    assert get_model_spec("unet").data == {"magnitude": True, "normalization": "instance"}
    assert get_model_spec("unet_dc").data == {"magnitude": False, "normalization": "volume_max"}
    zero_filled = get_model_spec("zero_filled")
    assert not zero_filled.trainable and zero_filled.config == {}
    model = build_model("unet")
    assert model.unet.chans == 32 and model.unet.num_pool_layers == 4 and not model.dc
    assert build_model("unet_dc").dc and build_model("unet_dc").unet.in_chans == 2


def test_unknown_name_lists_the_registered_names():
    with pytest.raises(UnknownModelError) as error:
        get_model_spec("unet3d")
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert "unet3d" in message and all(name in message for name in model_names())
    with pytest.raises(UnknownModelError):
        build_model("no_such_model")


def test_build_model_overrides_without_changing_the_defaults():
    small = build_model("unet", chans=4, num_pool_layers=2, drop_prob=0.1)
    assert (small.unet.chans, small.unet.num_pool_layers, small.unet.drop_prob) == (4, 2, 0.1)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in build_model("unet").parameters())
    assert get_model_spec("unet").config == {"chans": 32, "num_pool_layers": 4, "drop_prob": 0.0}
    with pytest.raises(ValueError, match="dc"):  # the DC variant is its own name, not a key
        build_model("unet", dc=True)
    with pytest.raises(ValueError, match="chans"):
        build_model("unet", chans=0)


def test_register_a_new_spec_and_refuse_a_duplicate(isolated_registry):
    config = {"width": 3}
    spec = register(_spec(config=config))
    config["width"] = 99  # the spec keeps its own copy
    assert "tiny" in model_names() and get_model_spec("tiny") is spec
    assert build_model("tiny").in_features == 3 and build_model("tiny", width=5).in_features == 5
    with pytest.raises(ValueError, match="already registered"):
        register(_spec())
    with pytest.raises(ValueError, match="already registered"):
        register(_spec(name="unet"))
    with pytest.raises(TypeError, match="ModelSpec"):
        register({"name": "dict"})
    assert get_model_spec("tiny") is spec


def test_registry_is_restored_after_an_isolated_test():
    assert "tiny" not in model_names()


@pytest.mark.parametrize("changes, message", [
    ({"loss": "huber"}, "loss"),
    ({"name": ""}, "name"),
    ({"data": {"magnitude": False, "normalization": "instance"}}, "instance"),
    ({"data": {"magnitude": True}}, "data"),
    ({"optimizer": {"name": "sgd", "lr": 0.1}}, "optimizer"),
    ({"optimizer": {"name": "adam", "lr": 0}}, "lr"),
    ({"schedule": {"name": "step", "step_size": 10}}, "step"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"config": {"depth": 3}}, "depth"),
    ({"demo": {"steps": 3}}, "demo takes"),
    ({"demo": {"model_config": {"depth": 3}}}, "depth"),
])
def test_model_spec_rejects_bad_fields(changes, message):
    with pytest.raises(ValueError, match=message):
        _spec(**changes)


# ---------------------------------------------------------------------------------------------------
# Zero-filled and the U-Net


def test_zero_filled_returns_the_input(magnitude_batch):
    model = build_model("zero_filled")
    assert isinstance(model, ZeroFilled) and not list(model.parameters())
    assert model(magnitude_batch) is magnitude_batch["zero_filled"]


def test_unet_matches_fastmri():
    """Our U-Net against fastMRI's own module, with its weights loaded into ours (runs where fastmri
    is installed; its package __init__ needs more than torch, so unet.py is loaded on its own)."""
    spec = importlib.util.find_spec("fastmri")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fastmri is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "unet.py"
    module_spec = importlib.util.spec_from_file_location("_fastmri_unet", path)
    fastmri_unet = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(fastmri_unet)
    torch.manual_seed(0)
    for height, width in ((64, 64), (37, 53)):
        reference = fastmri_unet.Unet(2, 2, chans=4, num_pool_layers=3, drop_prob=0.0)
        ours = UNet(2, 2, chans=4, num_pool_layers=3)
        ours.load_state_dict(reference.state_dict())
        assert list(ours.state_dict()) == list(reference.state_dict())
        image = torch.randn(2, 2, height, width)
        torch.testing.assert_close(ours(image), reference(image), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(256, 256), (37, 53), (64, 49)])
def test_unet_shapes_dtype_and_gradients(magnitude_batch, size):
    torch.manual_seed(0)
    model = build_model("unet", chans=4, num_pool_layers=3)
    batch = dict(magnitude_batch)
    for key in ("zero_filled", "target"):
        batch[key] = center_crop(magnitude_batch[key], size)
    output = model(batch)
    assert output.shape == batch["target"].shape == (2, 1, *size)
    assert output.dtype == batch["target"].dtype == torch.float32
    torch.nn.functional.l1_loss(output, batch["target"]).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_unet_rejects_bad_inputs(magnitude_batch, complex_batch):
    with pytest.raises(TypeError, match="magnitude"):
        build_model("unet", chans=4)(complex_batch)
    with pytest.raises(TypeError, match="complex"):
        build_model("unet_dc", chans=4)(magnitude_batch)
    with pytest.raises(ValueError, match="too small"):
        UNet(1, 1, chans=4, num_pool_layers=4)(torch.randn(1, 1, 17, 16))
    with pytest.raises(ValueError, match=r"\[N, 1, H, W\]"):
        UNet(1, 1, chans=4)(torch.randn(1, 2, 32, 32))
    with pytest.raises(ValueError, match="drop_prob"):
        UNet(1, 1, drop_prob=1.0)
    cropped = dict(complex_batch, zero_filled=center_crop(complex_batch["zero_filled"], (128, 128)))
    with pytest.raises(ValueError, match="image size"):
        build_model("unet_dc", chans=4)(cropped)


# ---------------------------------------------------------------------------------------------------
# U-Net with data consistency


def _assert_data_consistent(model: UNetReconstruction, batch: dict, sampled: torch.Tensor) -> None:
    """fft2c(output) is the normalised measurement where sampled, the U-Net's spectrum elsewhere.
    sampled: bool [B, 1, H, W]."""
    output = model(batch)
    assert output.shape == batch["target"].shape and output.dtype == torch.complex64
    scale = batch["scale"].to(torch.float32).reshape(-1, 1, 1, 1)
    measurement = batch["masked_kspace"] / scale
    # The U-Net part computed separately: 2 channels (real, imaginary) in and out, on the image with the
    # phase of the k-space centre removed, which is put back afterwards.
    phase = low_resolution_phase(measurement, sampled[:, 0, sampled.shape[2] // 2, :])
    zero_filled = batch["zero_filled"] * phase.conj()
    unet_channels = model.unet(torch.cat([zero_filled.real, zero_filled.imag], dim=1))
    unet_image = torch.complex(unet_channels[:, :1], unet_channels[:, 1:]) * phase
    spectrum, unet_spectrum = fft2c(output), fft2c(unet_image)
    tolerance = 1e-5 * float(measurement.abs().max())
    torch.testing.assert_close(spectrum[sampled], measurement[sampled], rtol=0, atol=tolerance)
    torch.testing.assert_close(spectrum[~sampled], unet_spectrum[~sampled], rtol=0, atol=tolerance)
    # The same, as one image: Fᴴ[M k0 + (1 − M) F x]
    expected = ifft2c(torch.where(sampled, measurement, unet_spectrum))
    torch.testing.assert_close(output, expected, rtol=0, atol=tolerance)


def test_unet_dc_is_data_consistent_on_builtin_items(complex_batch):
    torch.manual_seed(0)
    model = build_model("unet_dc", chans=4, num_pool_layers=3)
    assert complex_batch["scale"][0] != complex_batch["scale"][1]  # per-sample scaling is exercised
    sampled = complex_batch["mask"][:, None, None, :].expand(-1, 1, 256, -1)
    with torch.no_grad():
        _assert_data_consistent(model.eval(), complex_batch, sampled)


def test_unet_dc_with_a_2d_mask_and_odd_sizes():
    torch.manual_seed(1)
    model = build_model("unet_dc", chans=4, num_pool_layers=2).eval()
    batch = _odd_complex_batch(45, 39, seed=3)
    with torch.no_grad():
        _assert_data_consistent(model, batch, batch["mask"][:, None, None, :].expand(-1, 1, 45, -1))
        # The same columns as a per-sample 2-D mask [B, H, W] (and 0/1 floats rather than bool).
        mask_2d = batch["mask"][:, None, :].expand(-1, 45, -1).float()
        _assert_data_consistent(model, dict(batch, mask=mask_2d), mask_2d.bool().unsqueeze(1))


def test_low_resolution_phase_recovers_a_smooth_phase(complex_batch):
    """The phase of the k-space centre's image is the slice's smooth phase: multiplying the data by a
    new phase ramp moves the estimate by that ramp, up to a few hundredths of a radian in the brain."""
    target = complex_batch["target"]
    brain = target.abs() > 0.1 * target.abs().amax(dim=(-2, -1), keepdim=True)
    rows, columns = torch.meshgrid(torch.linspace(-1, 1, 256), torch.linspace(-1, 1, 256), indexing="ij")
    ramp = torch.polar(torch.ones(256, 256), 2.0 - 1.5 * columns + 0.7 * rows)  # outside the training split's phases
    for data in (target, target * ramp):
        kspace = fft2c(data) * complex_batch["mask"][:, None, None, :]
        phase = low_resolution_phase(kspace, complex_batch["mask"])
        # modulus 1 in the brain but at its blurred edge, below 1 in the background
        assert (phase.abs() <= 1 + 1e-6).all() and (phase.abs()[brain] > 1 - 1e-6).float().mean() > 0.95
        residual = (data * phase.conj()).angle()[brain]
        assert residual.abs().mean() < 0.05 and residual.abs().max() < 0.3
    # no sampled centre: no phase to estimate
    assert (low_resolution_phase(kspace, torch.zeros_like(complex_batch["mask"])) == 1).all()


def test_unet_dc_does_not_depend_on_the_phase_of_the_data(complex_batch):
    """A phase rotation of the data (image and measurement) rotates unet_dc's output by the same phase:
    the network sees the images with their phase removed, so test slices whose phase the training
    slices never had reconstruct as well."""
    torch.manual_seed(0)
    model = build_model("unet_dc", chans=4, num_pool_layers=3).eval()
    rotation = torch.polar(torch.ones(()), torch.tensor(2.5))
    rotated = dict(complex_batch, **{k: complex_batch[k] * rotation for k in ("zero_filled", "target", "masked_kspace", "kspace")})
    with torch.no_grad():
        output, output_rotated = model(complex_batch), model(rotated)
    torch.testing.assert_close(output_rotated, output * rotation, rtol=0, atol=1e-5 * float(output.abs().max()))


def test_unet_dc_gradients_flow():
    torch.manual_seed(2)
    model = build_model("unet_dc", chans=4, num_pool_layers=2)
    batch = _odd_complex_batch(33, 40, seed=5)
    (model(batch) - batch["target"]).abs().mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all() and parameter.grad.abs().sum() > 0, name


def test_measured_kspace_keeps_the_precision(complex_batch):
    measurement = measured_kspace(complex_batch)  # scale is float64 after default_collate
    assert measurement.dtype == torch.complex64
    for i in range(2):
        torch.testing.assert_close(measurement[i], complex_batch["masked_kspace"][i] / float(complex_batch["scale"][i]))
    with pytest.raises(ValueError, match="scale"):
        measured_kspace(dict(complex_batch, scale=torch.ones(3)))


# ---------------------------------------------------------------------------------------------------
# Training signal


def test_tiny_unet_overfits_one_builtin_crop():
    dataset = BuiltinDataset("train", _random_mask(), magnitude=True, normalization="instance")
    item = default_collate([dataset[30]])
    batch = {key: center_crop(item[key], (64, 64)) for key in ("zero_filled", "target")}
    torch.manual_seed(0)
    model = build_model("unet", chans=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(500):
        optimizer.zero_grad()
        loss = torch.nn.functional.l1_loss(model(batch), batch["target"])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    initial, final = losses[0], sum(losses[-10:]) / 10
    assert final < 0.5 * initial, (initial, final)
