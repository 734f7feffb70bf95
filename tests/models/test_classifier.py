"""Classifier registry: every backbone builds and predicts; weights from the offline package,
from a state-dict file at any URI, and a typed error when torchvision cannot download."""

import io
import urllib.error

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.io import write_bytes
from abs_ray.models import (
    WeightsMismatchError,
    WeightsUnavailableError,
    classifier_names,
    create_classifier,
)


def test_names_and_unknown_name():
    assert classifier_names() == ("efficientnet_lite0", "resnet18", "resnet50", "test_tiny")
    with pytest.raises(ConfigError, match="known: efficientnet_lite0, resnet18"):
        create_classifier("vit_h14", num_classes=2)
    with pytest.raises(ConfigError, match="num_classes"):
        create_classifier("test_tiny", num_classes=1, weights=None)
    with pytest.raises(ConfigError, match="no pretrained"):
        create_classifier("test_tiny", num_classes=2, weights="imagenet")


@pytest.mark.parametrize("name", ["test_tiny", "resnet18", "efficientnet_lite0"])
def test_classifiers_predict(name, device):
    weights = "default" if name == "efficientnet_lite0" else None  # lite0: packaged ImageNet
    model = create_classifier(name, num_classes=3, weights=weights).to(device).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64, device=device))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    with pytest.raises(ConfigError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(2, 64, 64, device=device))


def test_lite0_pretrained_features_differ_from_random():
    x = torch.rand(1, 3, 64, 64)
    pretrained = create_classifier("efficientnet_lite0", num_classes=2).eval()
    random = create_classifier("efficientnet_lite0", num_classes=2, weights=None).eval()
    with torch.no_grad():
        assert not torch.allclose(pretrained.features(x), random.features(x))


def test_frozen_backbone_trains_only_the_head():
    model = create_classifier("test_tiny", num_classes=2, weights=None, freeze_backbone=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]
    model.train()
    assert model.training and not model.backbone.training  # BatchNorm keeps its statistics
    running = model.backbone.body[0][1].running_mean.clone()
    model(torch.rand(4, 3, 16, 16)).sum().backward()
    assert torch.equal(model.backbone.body[0][1].running_mean, running)


def test_resnet_download_failure_is_a_typed_error(monkeypatch, tmp_path):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match="weights='<its local path or s3:// URI>'"):
        create_classifier("resnet18", num_classes=2, weights="imagenet")


def test_resnet_weights_from_a_file_at_any_uri(tmp_path, bucket, s3_server):
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)  # a torchvision .pth (with fc)
    buf = io.BytesIO()
    torch.save(source.state_dict(), buf)
    local = str(tmp_path / "resnet18.pth")
    write_bytes(local, buf.getvalue())
    model = create_classifier("resnet18", num_classes=2, weights=local)
    assert torch.equal(model.backbone.model.conv1.weight, source.conv1.weight)
    assert model.head.out_features == 2

    tiny = create_classifier("test_tiny", num_classes=2, weights=None)
    buf = io.BytesIO()
    torch.save(tiny.backbone.state_dict(), buf)
    uri = f"{bucket}/weights/tiny.pt"
    write_bytes(uri, buf.getvalue(), s3_server)
    loaded = create_classifier("test_tiny", num_classes=2, weights=uri, s3=s3_server)
    for a, b in zip(
        loaded.backbone.state_dict().values(), tiny.backbone.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)

    with pytest.raises(WeightsMismatchError, match="does not fit"):
        create_classifier("resnet50", num_classes=2, weights=local)
