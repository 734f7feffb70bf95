"""Detector factory, weights from any URI, checkpoints, and the offline download error."""

import io

import pytest
import torch

from abs_ray.errors import ConfigError, StorageNotFoundError
from abs_ray.io import write_bytes
from abs_ray.models import (
    Detector,
    WeightsMismatchError,
    WeightsUnavailableError,
    create_detector,
    detector_names,
    load_detector,
    save_detector,
)
from abs_ray.models.backbones import backbone_spec
from abs_ray.models.efficientnet_lite import lite0_weights_path


def _save_state(state: dict, uri: str) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    write_bytes(uri, buf.getvalue())


def test_registry_names():
    assert detector_names() == ("efficientnet_b0", "efficientnet_lite0", "resnet50", "test_tiny")


@pytest.mark.parametrize(
    ("name", "weights", "feature_dim"),
    [
        ("test_tiny", "default", 512),
        ("efficientnet_lite0", "default", 1280),
        ("efficientnet_b0", None, 1280),
        ("resnet50", None, 2048),
    ],
)
@pytest.mark.parametrize("head", ["pooled", "dense"])
def test_shapes_for_every_backbone(name, weights, feature_dim, head):
    det = create_detector(name, grid=8, image_size=64, weights=weights, head=head).eval()
    assert isinstance(det, Detector) and det.feature_dim == feature_dim
    assert det.config.head == head
    if head == "pooled":
        linear = [m for m in det.head.modules() if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linear] == [
            (feature_dim, 2 * 64),
            (2 * 64, 64),
        ]
    else:  # the first conv reads every feature map's channels
        first = next(m for m in det.head.modules() if isinstance(m, torch.nn.Conv2d))
        assert first.in_channels == sum(backbone_spec(name).feature_channels)
    x = torch.rand(2, 3, 64, 64)
    logits = det(x)
    prob = det.background_prob(x)
    assert logits.shape == (2, 8, 8) and prob.shape == (2, 8, 8)
    assert torch.allclose(prob, torch.sigmoid(logits))
    assert float(prob.min()) >= 0.0 and float(prob.max()) <= 1.0


def test_runs_on_device(device):
    det = create_detector("test_tiny", grid=4, image_size=32, device=device).eval()
    out = det(torch.rand(3, 3, 32, 32, device=device))
    assert out.device.type == device.type and out.shape == (3, 4, 4)


def test_unknown_name_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown detector 'vit'; known: efficientnet_b0, "):
        create_detector("vit")


@pytest.mark.parametrize(
    ("grid", "size", "message"),
    [
        (15, 224, "patch grid 15 must divide image size 224"),
        (0, 224, "grid must be an int >= 1"),
        (16, 4, "image_size must be an int >= 8"),
    ],
)
def test_bad_grid_or_size(grid, size, message):
    with pytest.raises(ConfigError, match=message):
        create_detector("test_tiny", grid=grid, image_size=size)


def test_bad_input_and_thresholds():
    det = create_detector("test_tiny", grid=4, image_size=32)
    with pytest.raises(ConfigError, match=r"\(B, 3, 32, 32\) float"):
        det(torch.rand(1, 3, 64, 64))
    with pytest.raises(ConfigError, match="float"):
        det(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="tight threshold 0.95 must be <= loose"):
        create_detector("test_tiny", grid=4, image_size=32, tight=0.95, loose=0.9)
    with pytest.raises(ConfigError, match="test_tiny has no pretrained weights"):
        create_detector("test_tiny", weights="imagenet")


def test_freeze_backbone_trains_the_head_only():
    det = create_detector("test_tiny", grid=4, image_size=32, freeze_backbone=True).train()
    assert det.backbone_frozen and not det.backbone.training and det.head.training
    before = det.backbone.state_dict()["body.0.1.running_mean"].clone()
    det(torch.rand(4, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in det.backbone.parameters())
    assert all(p.grad is not None for p in det.head.parameters())
    assert torch.equal(det.backbone.state_dict()["body.0.1.running_mean"], before)  # BN kept


def _tiny_state_uri(root: str) -> tuple[str, dict]:
    donor = create_detector("test_tiny", grid=4, image_size=32, weights=None)
    state = donor.backbone.state_dict()
    uri = f"{root}/weights/tiny.pth"
    _save_state(state, uri)
    return uri, state


def _assert_backbone_equals(det: Detector, state: dict) -> None:
    own = det.backbone.state_dict()
    assert own.keys() == state.keys()
    assert all(torch.equal(own[k], state[k]) for k in state)


def test_state_dict_weights_from_local_file(tmp_path):
    uri, state = _tiny_state_uri(str(tmp_path))
    _assert_backbone_equals(create_detector("test_tiny", grid=4, image_size=32, weights=uri), state)


def test_state_dict_weights_from_s3(bucket):
    uri, state = _tiny_state_uri(bucket)
    assert uri.startswith("s3://")
    _assert_backbone_equals(create_detector("test_tiny", grid=4, image_size=32, weights=uri), state)


def test_torchvision_state_dict_file(tmp_path):
    """A torchvision .pth as a user downloads it (classifier included) loads strictly."""
    from torchvision.models import efficientnet_b0

    donor = efficientnet_b0(weights=None)
    path = str(tmp_path / "efficientnet_b0.pth")
    _save_state(donor.state_dict(), path)
    det = create_detector("efficientnet_b0", grid=4, image_size=64, weights=path)
    weight = det.backbone.model.features[0][0].weight
    assert torch.equal(weight, donor.features[0][0].weight)
    assert isinstance(det.backbone.model.classifier, torch.nn.Identity)


def test_lite0_weights_from_packaged_file_uri():
    default = create_detector("efficientnet_lite0", grid=4, image_size=64)
    from_uri = create_detector(
        "efficientnet_lite0", grid=4, image_size=64, weights=lite0_weights_path()
    )
    a, b = default.backbone.state_dict(), from_uri.backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_mismatched_or_missing_weights(tmp_path):
    path = str(tmp_path / "wrong.pth")
    _save_state({"fc.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(WeightsMismatchError, match="unexpected: fc.weight"):
        create_detector("test_tiny", grid=4, image_size=32, weights=path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsMismatchError, match="not a torch state-dict file"):
        create_detector("test_tiny", grid=4, image_size=32, weights=str(tmp_path / "junk.pth"))
    with pytest.raises(StorageNotFoundError):
        create_detector("test_tiny", grid=4, image_size=32, weights=str(tmp_path / "none.pth"))


@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0"])
def test_download_without_network_raises_typed_error(name, tmp_path, monkeypatch):
    # An empty hub cache and a proxy that refuses connections: the real download path runs
    # and fails the same way with or without internet.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(WeightsUnavailableError, match=r"could not download .* weights='"):
        create_detector(name, weights="imagenet")


@pytest.mark.parametrize("where", ["local", "s3"])
def test_checkpoint_round_trip(where, tmp_path, request):
    root = request.getfixturevalue("bucket") if where == "s3" else str(tmp_path)
    torch.manual_seed(0)
    det = create_detector("test_tiny", grid=4, image_size=32, tight=0.33, loose=0.8).eval()
    meta = {"label_source": {"kind": "csv", "uri": "labels.csv"}, "metrics": {"bacc": 0.9}}
    uri = f"{root}/ckpt/detector.pt"
    save_detector(det, uri, meta=meta)
    loaded = load_detector(uri, device="cpu")
    x = torch.rand(3, 3, 32, 32)
    assert not loaded.training
    assert loaded.config == det.config and loaded.config.tight == 0.33
    assert loaded.meta == meta
    assert torch.equal(loaded(x), det(x))


@pytest.mark.parametrize("grid", [8, 16])
def test_dense_head_shapes_on_the_tiny_backbone(grid):
    det = create_detector("test_tiny", grid=grid, image_size=64, freeze_backbone=True).eval()
    x = torch.rand(3, 3, 64, 64)
    frozen = det.frozen_features(x)  # every map resampled to G x G and concatenated
    assert frozen.shape == (3, sum(backbone_spec("test_tiny").feature_channels), grid, grid)
    assert det.logits_from_frozen(frozen).shape == (3, grid, grid)
    assert torch.allclose(det.logits_from_frozen(frozen), det(x))
    # one logit per patch, not one value broadcast over the grid
    assert not torch.allclose(det(x)[:, :, :1], det(x)[:, :, -1:])


@pytest.mark.parametrize("head", ["pooled", "dense"])
def test_checkpoint_records_the_head(head, tmp_path):
    det = create_detector("test_tiny", grid=4, image_size=32, head=head).eval()
    save_detector(det, str(tmp_path / "d.pt"))
    payload = torch.load(str(tmp_path / "d.pt"), weights_only=True)
    assert payload["config"]["head"] == head
    loaded = load_detector(str(tmp_path / "d.pt"))
    assert loaded.config.head == head
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), det(x))


def test_checkpoint_without_head_loads_as_pooled(tmp_path):
    """Checkpoints written before the dense head existed have no "head" in their config."""
    det = create_detector("test_tiny", grid=4, image_size=32, head="pooled").eval()
    save_detector(det, str(tmp_path / "new.pt"))
    payload = torch.load(str(tmp_path / "new.pt"), weights_only=True)
    del payload["config"]["head"]
    torch.save(payload, str(tmp_path / "old.pt"))
    loaded = load_detector(str(tmp_path / "old.pt"))
    assert loaded.config.head == "pooled"
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded(x), det(x))


def test_unknown_head():
    with pytest.raises(ConfigError, match="unknown detector head 'fancy'; known: dense, pooled"):
        create_detector("test_tiny", head="fancy")


def test_checkpoint_of_pretrained_lite0_rebuilds_offline(tmp_path):
    det = create_detector("efficientnet_lite0", grid=4, image_size=64).eval()
    save_detector(det, str(tmp_path / "d.pt"))
    loaded = load_detector(str(tmp_path / "d.pt"))
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(x), det(x))


def test_load_rejects_non_checkpoints(tmp_path):
    path = str(tmp_path / "state.pt")
    _save_state({"a": torch.zeros(1)}, path)
    with pytest.raises(WeightsMismatchError, match="not a detector checkpoint"):
        load_detector(path)
    with pytest.raises(ConfigError, match="JSON"):
        save_detector(create_detector("test_tiny"), str(tmp_path / "x.pt"), meta={"a": object()})


@pytest.mark.parametrize(("name", "blocks"), [("efficientnet_lite0", 4), ("test_tiny", 1)])
def test_partial_freezing_splits_the_backbone_exactly(name, blocks):
    det = create_detector(name, grid=4, image_size=64, freeze_backbone=True, head="pooled")
    det.eval()
    x = torch.rand(2, 3, 64, 64)
    whole = det.features(x)
    det.freeze_backbone(True, trainable_blocks=blocks)
    trainable = {n for n, p in det.backbone.named_parameters() if p.requires_grad}
    assert trainable and len(trainable) < len(list(det.backbone.parameters()))
    assert torch.allclose(det.logits_from_frozen(det.frozen_features(x)), det(x))
    assert torch.allclose(det.features(x), whole, atol=1e-5)
    det.train()
    assert det.head.training and not det._parts[0].training and det._parts[1].training


def test_partial_freezing_errors():
    with pytest.raises(ConfigError, match="resnet50 cannot be partly frozen"):
        create_detector("resnet50", weights=None, freeze_backbone=True, trainable_blocks=1)
    with pytest.raises(ConfigError, match="trainable_blocks must be in 1..3, got 4"):
        create_detector("test_tiny", freeze_backbone=True, trainable_blocks=4)
    with pytest.raises(ConfigError, match="needs frozen=True"):
        create_detector("test_tiny", head="pooled").freeze_backbone(False, trainable_blocks=1)
    with pytest.raises(ConfigError, match="dense head .* not a partly frozen one"):
        create_detector("test_tiny", freeze_backbone=True, trainable_blocks=1)
