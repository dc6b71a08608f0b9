"""Loading the authors' FSMNet checkpoints: `from_authors_state_dict` on state dicts of their parameter
names and shapes (tests/data/fsmnet_authors_keys.json, enumerated from their networks/mynet.py and
common_freq.py), filled with random values."""
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mcmri_fast.models.fsmnet import FSMNet, from_authors_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).parent / "data" / "fsmnet_authors_keys.json"
# their network's size at the paper's setting, and the part of it that takes part in the forward pass
AUTHORS_PARAMETERS = 14_053_528
FORWARD_PARAMETERS = 13_799_848
SMALL_CHANNELS = 8  # their attention has 8 heads whatever the width: the smallest width it allows


def _configuration(channels):
    for configuration in json.loads(FIXTURE.read_text())["configurations"]:
        if configuration["num_features"] == channels:
            return configuration
    raise LookupError(channels)


def _dropped(key):
    return ".spa_att." in key  # FuseBlock7 builds a second attention that its forward never calls


def _random_state_dict(channels=SMALL_CHANNELS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {key: torch.randn(shape, generator=g) for key, shape in _configuration(channels)["keys"].items()}


@pytest.fixture(scope="module")
def theirs():
    return _random_state_dict()


def test_fixture_has_the_papers_size():
    keys = _configuration(64)["keys"]
    sizes = {key: torch.Size(shape).numel() for key, shape in keys.items()}
    assert sum(sizes.values()) == AUTHORS_PARAMETERS
    assert sum(size for key, size in sizes.items() if not _dropped(key)) == FORWARD_PARAMETERS
    assert sum(_dropped(key) for key in keys) == 14 * 6


def test_the_papers_configuration_loads_on_the_meta_device():
    with torch.device("meta"):
        state = {key: torch.empty(shape) for key, shape in _configuration(64)["keys"].items()}
        converted = from_authors_state_dict(state)
        model = FSMNet()
    model.load_state_dict(converted, strict=True)
    assert list(converted) == list(model.state_dict())
    assert sum(value.numel() for value in converted.values()) == FORWARD_PARAMETERS


# (theirs, ours), written out by hand from their module tree and ours
PLACES = [
    ("head_fre.0.layers.weight", "target_frequency.head.0.weight"),
    ("head_T1.0.act.weight", "reference_spatial.head.1.weight"),
    ("down1_fre.0.layers.0.layers.weight", "target_frequency.down.0.0.0.weight"),
    ("down2_fre_T1.0.layers.2.layers.weight", "reference_frequency.down.1.0.2.weight"),
    ("down3_fre_mo_T1.0.amp_fuse.0.weight", "reference_frequency.down_second.2.amplitude.0.weight"),
    ("down3.1.body.1.layers.0.layers.weight", "target_spatial.down.2.1.body.1.conv1.weight"),
    ("down1_mo_T1.0.body.2.act.weight", "reference_spatial.down_second.0.body.2.1.weight"),
    ("neck_fre_mo.0.pha_fuse.2.bias", "target_frequency.neck_second.phase.2.bias"),
    ("neck_fre_T1.0.fpre.bias", "reference_frequency.neck.pre.bias"),
    ("neck.0.re_scale.scale", "target_spatial.neck.scale"),
    ("up1_fre.0.0.weight", "frequency_decoder.up.0.0.0.weight"),
    ("up1_fre.1.post.weight", "frequency_decoder.up.0.1.post.weight"),
    ("up3.0.2.weight", "spatial_decoder.up.2.0.2.weight"),
    ("up2_mo.0.body.0.layers.1.layers.weight", "spatial_decoder.up_second.1.body.0.conv2.weight"),
    ("tail_fre.0.layers.weight", "frequency_decoder.tail.0.weight"),
    ("tail.0.act.weight", "spatial_decoder.tail.1.weight"),
    ("conv_fuse.13.fre.weight", "fs_fusion.13.first.weight"),
    ("conv_fuse.0.spa.bias", "fs_fusion.0.second.bias"),
    ("conv_fuse.7.fre_att.kv_dwconv.weight", "fs_fusion.7.attention.key_value_dw.weight"),
    ("conv_fuse.9.fre_att.q.weight", "fs_fusion.9.attention.query.weight"),
    ("conv_fuse.2.fuse.1.weight", "fs_fusion.2.gate.1.weight"),
    ("conv_fuse_fre.4.t1.weight", "frequency_cms.4.reference.weight"),
    ("conv_fuse_spa.0.t2.bias", "spatial_cms.0.target.bias"),
    ("conv_fuse_spa.3.fuse.0.weight", "spatial_cms.3.gate.0.weight"),
]


def test_values_land_where_they_belong(theirs):
    model = FSMNet(channels=SMALL_CHANNELS, heads=8)
    model.load_state_dict(from_authors_state_dict(theirs, channels=SMALL_CHANNELS), strict=True)
    ours = model.state_dict()
    for their_key, our_key in PLACES:
        assert torch.equal(ours[our_key], theirs[their_key]), (their_key, our_key)
    temperature = theirs["conv_fuse.3.fre_att.temperature"]
    assert temperature.shape == (8, 1, 1)
    assert torch.equal(ours["fs_fusion.3.attention.temperature"], temperature.flatten())

    # Every tensor of theirs that the forward pass uses lands in exactly one place, the dropped ones nowhere.
    source = {value.numpy().tobytes(): key for key, value in theirs.items()}
    assert len(source) == len(theirs)
    landed = [source.get(value.numpy().tobytes()) for value in ours.values()]
    assert None not in landed
    assert sorted(landed) == sorted(key for key in theirs if not _dropped(key))

    batch = {key: torch.randn(1, 1, 16, 24) for key in ("zero_filled", "reference")}
    with torch.no_grad():
        output = model(batch)
    assert output["image"].shape == output["frequency_image"].shape == (1, 1, 16, 24)
    assert torch.isfinite(output["image"]).all() and torch.isfinite(output["frequency_image"]).all()


def _authors_attention(w, prefix, x, y, heads=8):
    """Their Attention(x, y): queries from x, keys and values from y, all convolutions without bias."""
    channels = x.shape[1]
    q = F.conv2d(F.conv2d(x, w[f"{prefix}.q.weight"]), w[f"{prefix}.q_dwconv.weight"], padding=1, groups=channels)
    kv = F.conv2d(y, w[f"{prefix}.kv.weight"])
    kv = F.conv2d(kv, w[f"{prefix}.kv_dwconv.weight"], padding=1, groups=2 * channels)
    k, v = kv.chunk(2, dim=1)
    q, k, v = (t.reshape(t.shape[0], heads, channels // heads, -1) for t in (q, k, v))
    attention = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * w[f"{prefix}.temperature"]
    return F.conv2d((attention.softmax(dim=-1) @ v).reshape(x.shape), w[f"{prefix}.project_out.weight"])


def test_fs_fusion_computes_the_authors_block(theirs):
    """FuseBlock7 as their network calls it, conv_fuse[j](frequency feature, spatial feature), whose
    forward(spa, fre) hands the spatial feature to the conv named `fre`, against our fs_fusion[j]."""
    j = 5
    w = {key[len(f"conv_fuse.{j}."):]: value for key, value in theirs.items() if key.startswith(f"conv_fuse.{j}.")}
    g = torch.Generator().manual_seed(1)
    spatial, frequency = (torch.randn(2, SMALL_CHANNELS, 6, 10, generator=g) for _ in range(2))
    a = F.conv2d(spatial, w["fre.weight"], w["fre.bias"], padding=1)
    b = F.conv2d(frequency, w["spa.weight"], w["spa.bias"], padding=1)
    a = _authors_attention(w, "fre_att", a, b) + a
    b = _authors_attention(w, "fre_att", b, a) + b
    gate = torch.cat((a, b), 1)
    for conv in ("fuse.0", "fuse.1"):
        gate = F.conv2d(gate, w[f"{conv}.weight"], w[f"{conv}.bias"], padding=1)
    gate_a, gate_b = torch.sigmoid(gate).chunk(2, dim=1)
    expected = a * gate_a + b * gate_b

    model = FSMNet(channels=SMALL_CHANNELS, heads=8)
    model.load_state_dict(from_authors_state_dict(theirs, channels=SMALL_CHANNELS), strict=True)
    with torch.no_grad():
        got = model.fs_fusion[j](spatial, frequency)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_dataparallel_prefix_and_checkpoint_file(theirs):
    plain = from_authors_state_dict(theirs, channels=SMALL_CHANNELS)
    wrapped = {f"module.{key}": value for key, value in theirs.items()}
    for state in (wrapped, {"network": wrapped}, {"network": theirs}):
        converted = from_authors_state_dict(state, channels=SMALL_CHANNELS)
        assert list(converted) == list(plain)
        assert all(torch.equal(converted[key], plain[key]) for key in plain)


def test_dropped_keys_may_be_absent(theirs):
    kept = {key: value for key, value in theirs.items() if not _dropped(key)}
    converted = from_authors_state_dict(kept, channels=SMALL_CHANNELS)
    FSMNet(channels=SMALL_CHANNELS, heads=8).load_state_dict(converted, strict=True)


def test_a_wrong_shape_is_refused(theirs):
    key = "down2_mo.0.body.1.layers.0.layers.weight"
    state = dict(theirs, **{key: torch.zeros(8, 8, 1, 1)})
    with pytest.raises(ValueError, match=rf"'{key}' has shape \(8, 8, 1, 1\), expected \(8, 8, 3, 3\)"):
        from_authors_state_dict(state, channels=SMALL_CHANNELS)
    # a dropped tensor is checked too
    key = "conv_fuse.1.spa_att.temperature"
    with pytest.raises(ValueError, match=rf"'{key}' has shape \(8,\), expected \(8, 1, 1\)"):
        from_authors_state_dict(dict(theirs, **{key: torch.ones(8)}), channels=SMALL_CHANNELS)
    # a checkpoint of the small width read as the paper's
    message = r"'head_fre.0.layers.weight' has shape \(8, 1, 3, 3\), expected \(64, 1, 3, 3\)"
    with pytest.raises(ValueError, match=message):
        from_authors_state_dict(theirs)


def test_a_missing_key_is_refused(theirs):
    key = "conv_fuse_fre.2.t2.weight"
    state = {k: v for k, v in theirs.items() if k != key}
    with pytest.raises(ValueError, match=rf"missing key '{key}'"):
        from_authors_state_dict(state, channels=SMALL_CHANNELS)


def test_an_unexpected_key_is_refused(theirs):
    with pytest.raises(ValueError, match=r"unexpected key 'down1.1.body.3.layers.weight'"):
        from_authors_state_dict(dict(theirs, **{"down1.1.body.3.layers.weight": torch.zeros(8, 8, 3, 3)}),
                                channels=SMALL_CHANNELS)
    # a prefix on some keys only is not DataParallel's
    state = dict(theirs)
    state["module.tail.0.act.weight"] = state.pop("tail.0.act.weight")
    with pytest.raises(ValueError, match=r"unexpected key 'module.tail.0.act.weight'"):
        from_authors_state_dict(state, channels=SMALL_CHANNELS)


def test_values_must_be_tensors(theirs):
    with pytest.raises(TypeError, match="'neck.0.re_scale.scale' must be a tensor"):
        from_authors_state_dict(dict(theirs, **{"neck.0.re_scale.scale": 1.0}), channels=SMALL_CHANNELS)
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        from_authors_state_dict([("head.0.layers.weight", torch.zeros(8, 1, 3, 3))])
