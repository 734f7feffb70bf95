"""EfficientNet-Lite0: the packaged ImageNet weights map onto the module and classify real photos."""

import pytest
import torch
import torch.nn.functional as F

from abs_ray.errors import ConfigError
from abs_ray.models import WeightsMismatchError
from abs_ray.models.efficientnet_lite import (
    EfficientNetLite0,
    convert_lite0_state_dict,
    efficientnet_lite0,
    lite0_weights_path,
    load_lite0_state_dict,
)


@pytest.fixture(scope="module")
def packaged_state():
    return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def pretrained():
    return efficientnet_lite0(pretrained=True).eval()


def _photo(array) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, 224, 224) float in [0, 1], squashed to a square."""
    x = torch.from_numpy(array).permute(2, 0, 1).float()[None] / 255.0
    return F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)


def test_every_packaged_tensor_has_a_home(packaged_state):
    converted = convert_lite0_state_dict(packaged_state)
    own = EfficientNetLite0().state_dict()
    assert len(packaged_state) == 296
    assert set(converted) == set(own)
    assert all(converted[k].shape == v.shape for k, v in own.items())
    assert convert_lite0_state_dict(converted).keys() == converted.keys()  # idempotent


def test_classifies_real_photos(pretrained):
    from skimage import data

    x = torch.cat([_photo(data.coffee()), _photo(data.chelsea())])
    with torch.no_grad():
        prob = pretrained(x).softmax(dim=1)
    top5 = prob.topk(5, dim=1).indices.tolist()
    assert {967, 968} & set(top5[0])  # espresso / cup
    assert {281, 282, 285} & set(top5[1])  # tabby / tiger cat / Egyptian cat
    assert top5[0][0] == 967 and float(prob[0, 967]) > 0.5  # confidently espresso
    assert top5[1][0] in (281, 282, 285)


def test_features_are_1280d_and_padding_is_tf_same(pretrained):
    with torch.no_grad():
        feats = pretrained.forward_features(torch.rand(2, 3, 225, 197))
        stem = pretrained.stem(torch.rand(1, 3, 225, 197))
    assert feats.shape == (2, 1280)
    assert tuple(stem.shape[-2:]) == (113, 99)  # ceil(in / 2), as TF "same"
    assert float(feats.min()) >= 0.0 and float(feats.max()) <= 6.0  # after ReLU6


def test_wrong_state_dict_raises_typed_error(packaged_state):
    model = EfficientNetLite0()
    broken = dict(packaged_state)
    broken.pop("_blocks.4._bn1.running_var")
    with pytest.raises(WeightsMismatchError, match="1 missing: blocks.4.dw.bn.running_var"):
        load_lite0_state_dict(model, broken)
    with pytest.raises(WeightsMismatchError, match="unknown key"):
        convert_lite0_state_dict({"_mystery.weight": torch.zeros(1)})


def test_pretrained_needs_imagenet_classes():
    with pytest.raises(ConfigError, match="1000 classes"):
        efficientnet_lite0(pretrained=True, num_classes=10)
    headless = EfficientNetLite0(num_classes=0)
    with pytest.raises(ConfigError, match="no classifier"):
        headless(torch.rand(1, 3, 32, 32))
