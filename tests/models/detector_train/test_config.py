"""DetectorTrainConfig: validated when built (backbone name, weights and freezing included),
round-trips through JSON."""

import json

import pytest

from abs_ray.errors import ConfigError
from abs_ray.models.detector_train import DetectorTrainConfig


def test_config_validation(geometry_only):
    with pytest.raises(ConfigError, match="patch grid 15 must divide image size 224"):
        DetectorTrainConfig(grid=15)
    with pytest.raises(ConfigError, match="unknown detector"):
        DetectorTrainConfig(backbone="vit")
    cfg = DetectorTrainConfig(backbone="test_tiny", augment=geometry_only)
    assert DetectorTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown detector training settings: colour"):
        DetectorTrainConfig.from_dict({"colour": 1})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"backbone": "test_tiny", "weights": "imagenet"}, "test_tiny has no pretrained weights"),
        (
            {"backbone": "resnet50", "freeze_backbone": True, "trainable_blocks": 1},
            "resnet50 cannot be partly frozen",
        ),
        (
            {"backbone": "test_tiny", "freeze_backbone": True, "trainable_blocks": 4},
            "trainable_blocks must be in 1..3, got 4",
        ),
        ({"backbone": "test_tiny", "weights": ""}, "weights must be"),
    ],
)
def test_backbone_choice_fails_when_the_config_is_built(overrides, match):
    """What the backbone's registry entry declares is checked before any image is read."""
    with pytest.raises(ConfigError, match=match):
        DetectorTrainConfig(**overrides)


def test_trainable_blocks_count_only_under_a_frozen_backbone():
    unfrozen = DetectorTrainConfig(backbone="resnet50", freeze_backbone=False, trainable_blocks=4)
    assert unfrozen.freezing == (False, 0)
    frozen = DetectorTrainConfig(
        backbone="test_tiny", head="pooled", freeze_backbone=True, trainable_blocks=2
    )
    assert frozen.freezing == (True, 2)
