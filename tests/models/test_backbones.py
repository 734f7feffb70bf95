"""The one backbone registry: every entry builds what it declares (pooled feature, feature
maps at its strides, split), families see their names, and a config can check a choice
before any I/O."""

import math

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.models import (
    BACKBONES,
    backbone_names,
    backbone_spec,
    check_backbone,
    create_backbone,
    detector_names,
)


def test_names_by_family():
    assert backbone_names() == (
        "efficientnet_b0",
        "efficientnet_lite0",
        "resnet18",
        "resnet50",
        "test_tiny",
    )
    assert backbone_names("detector") == detector_names()
    with pytest.raises(ConfigError, match="unknown classifier 'efficientnet_b0'; known: "):
        backbone_spec("efficientnet_b0", "classifier")
    with pytest.raises(ConfigError, match="unknown model family 'segmenter'"):
        backbone_spec("test_tiny", "segmenter")
    with pytest.raises(ConfigError, match="unknown backbone 'vit'; known: efficientnet_b0"):
        create_backbone("vit")


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_entry_builds_what_it_declares(name):
    spec = backbone_spec(name)
    net = create_backbone(name, weights=None).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pooled, maps = net(x), net.feature_maps(x)
    assert net.feature_dim == spec.feature_dim and pooled.shape == (2, spec.feature_dim)
    assert tuple(net.feature_channels) == spec.feature_channels
    assert tuple(net.feature_strides) == spec.feature_strides
    assert [tuple(m.shape) for m in maps] == [
        (2, c, math.ceil(64 / s), math.ceil(64 / s))
        for c, s in zip(spec.feature_channels, spec.feature_strides, strict=True)
    ]
    assert hasattr(net, "split") == (spec.split_blocks > 0)
    if spec.split_blocks:
        prefix, tail = net.split(spec.split_blocks)
        with torch.no_grad():
            assert torch.allclose(tail(prefix(x)), pooled, atol=1e-5)


@pytest.mark.parametrize("name", ["test_tiny", "efficientnet_lite0", "resnet18"])
def test_the_last_feature_map_is_what_the_pooled_feature_pools(name):
    """The taps sit where the names say: pooling the stride-32 (tiny: stride-8) map the way
    forward does gives forward's feature."""
    net = create_backbone(name, weights=None).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        last = net.feature_maps(x)[-1]
        if name == "test_tiny":
            pooled = net.pool(last).flatten(1)
        elif name == "efficientnet_lite0":
            pooled = net.model.head(last).mean(dim=(2, 3))
        else:
            pooled = last.mean(dim=(2, 3))
        assert torch.allclose(pooled, net(x), atol=1e-5)


def test_declared_needs():
    assert backbone_spec("resnet50").needs_download("default")
    assert not backbone_spec("resnet50").needs_download(None)
    assert not backbone_spec("efficientnet_lite0").needs_download("imagenet")
    assert backbone_spec("test_tiny").pretrained_source is None
    assert check_backbone("efficientnet_lite0", "detector", trainable_blocks=16).split_blocks == 16
    with pytest.raises(ConfigError, match="trainable_blocks must be in 1..16, got 17"):
        check_backbone("efficientnet_lite0", trainable_blocks=17)
    with pytest.raises(ConfigError, match="trainable_blocks must be an int >= 0"):
        check_backbone("test_tiny", trainable_blocks=-1)
    with pytest.raises(ConfigError, match="test_tiny has no pretrained weights"):
        check_backbone("test_tiny", "classifier", weights="imagenet")
    with pytest.raises(ConfigError, match="weights must be 'default', 'imagenet', None"):
        check_backbone("resnet18", weights=3)
