"""The dense head's training on the tiny backbone, the epoch-bounded schedule (same seed, same
weights) and the quality floor."""

import os

import pytest
import torch

from abs_ray.errors import ConfigError, WeakDetectorError
from abs_ray.models import create_detector
from abs_ray.models.detector_train import (
    DetectorTrainConfig,
    fit_detector,
    load_labelled_images,
    split_train_val,
    train_detector,
)

DENSE = dict(head="dense", optimizer="adamw", schedule="onecycle", lr=1e-2, backbone_lr=1e-2)


def test_defaults_are_the_dense_recipe_bounded_by_epochs():
    cfg = DetectorTrainConfig()
    assert (cfg.head, cfg.optimizer, cfg.schedule) == ("dense", "adamw", "onecycle")
    assert cfg.freeze_backbone and cfg.trainable_blocks == 0 and cfg.feature_cache_views == 4
    assert cfg.max_train_seconds is None  # a wall-clock cap only as an explicit opt-in
    assert cfg.min_balanced_accuracy == 0.6 and not cfg.allow_weak_detector
    assert cfg.optimizer_settings == (1e-2, 1e-4)
    assert DetectorTrainConfig(optimizer="sgd").optimizer_settings == (1e-5, 1e-2)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"optimizer": "adam"}, "unknown optimizer 'adam'; known: adamw, sgd"),
        ({"schedule": "cosine"}, "unknown schedule 'cosine'; known: onecycle, plateau"),
        ({"head": "mlp"}, "unknown detector head 'mlp'"),
        ({"trainable_blocks": 2}, "dense head .* not a partly frozen one"),
        ({"min_balanced_accuracy": 1.5}, "min_balanced_accuracy"),
        ({"allow_weak_detector": "yes"}, "allow_weak_detector must be a bool"),
    ],
)
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        DetectorTrainConfig(backbone="test_tiny", **overrides)


@pytest.mark.parametrize("frozen", [False, True])
def test_dense_head_learns_patch_labels_on_the_tiny_backbone(synthetic, tmp_path, tiny_cfg, frozen):
    root, manifest = synthetic
    cfg = tiny_cfg(str(tmp_path / "run"), data=root, freeze_backbone=frozen, **DENSE)
    metrics = train_detector(cfg, manifest)
    assert metrics["detector"]["head"] == "dense"
    assert metrics["held_out"]["balanced_patch_accuracy"] > 0.65  # chance = 0.5
    assert metrics["held_out"]["mask_iou"] > 0.2


def _fit_weights(manifest, tiny_cfg, seed: int, head: str) -> dict[str, torch.Tensor]:
    data = load_labelled_images(manifest[manifest["split"] == "train"].head(24), 64, 8)
    train_idx, val_idx = split_train_val(len(data), 0.2, 0)
    recipe = DENSE if head == "dense" else {}
    cfg = tiny_cfg("unused", epochs=3, seed=seed, freeze_backbone=True, **recipe)
    torch.manual_seed(seed)
    model = create_detector("test_tiny", grid=8, image_size=64, head=head)
    fit_detector(model, data.subset(train_idx), data.subset(val_idx), cfg)
    return model.state_dict()


@pytest.mark.parametrize("head", ["dense", "pooled"])
def test_same_seed_gives_the_same_weights(synthetic, tiny_cfg, head):
    """Training is bounded by epochs, not time: two runs with one seed give equal weights."""
    _, manifest = synthetic
    first = _fit_weights(manifest, tiny_cfg, 5, head)
    second = _fit_weights(manifest, tiny_cfg, 5, head)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = _fit_weights(manifest, tiny_cfg, 6, head)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_quality_floor_refuses_a_weak_detector_and_the_override_lets_it_through(
    synthetic, tmp_path, tiny_cfg
):
    root, manifest = synthetic
    weak = dict(epochs=1, min_balanced_accuracy=0.999, data=root, **DENSE)
    out = str(tmp_path / "refused")
    with pytest.raises(WeakDetectorError, match=r"below the floor min_balanced_accuracy=0\.999"):
        train_detector(tiny_cfg(out, **weak), manifest)
    assert not os.path.exists(os.path.join(out, "detector.pt"))  # nothing written
    out = str(tmp_path / "allowed")
    metrics = train_detector(tiny_cfg(out, allow_weak_detector=True, **weak), manifest)
    assert metrics["val"]["balanced_patch_accuracy"] < 0.999
    assert os.path.exists(os.path.join(out, "detector.pt"))
