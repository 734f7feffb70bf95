"""Detector training: augmentation keeps image and grid together, label sources, the recipe
learns on synthetic data, and the run writes checkpoint, metrics and sheet to any URI."""

import dataclasses
import json

import pandas as pd
import pytest
import torch

from abs_ray.errors import ConfigError, DatasetError
from abs_ray.io import decode_image, read_bytes, read_text, write_text
from abs_ray.models import load_detector
from abs_ray.models.detector_train import (
    AugmentConfig,
    DetectorTrainConfig,
    apply_augment,
    csv_labels_for_manifest,
    evaluate_detector,
    load_labelled_images,
    mask_sheet,
    sample_augment_params,
    split_train_val,
    train_detector,
)
from abs_ray.ops import PatchLabel, format_patch_label_csv, mask_to_patch_labels
from abs_ray.ops.patches import upsample_patch_grid

GEOMETRY_ONLY = dataclasses.replace(
    AugmentConfig(), brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, grayscale=0.0
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and spinning ones slow shared cores."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A small synthetic data set with exact masks: 64 train, 8 val, 32 test at 64 px."""
    from abs_ray.data import SyntheticConfig, load_dataset, write_synthetic

    root = str(tmp_path_factory.mktemp("synthetic"))
    write_synthetic(root, SyntheticConfig(n_train=64, n_val=8, n_test=32, size=64, seed=0))
    return root, load_dataset(root)


def _random_grids(b: int, g: int, seed: int) -> torch.Tensor:
    return (torch.rand(b, g, g, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


@pytest.mark.parametrize("fill", ["wrap", "zeros"])
def test_geometry_moves_image_and_grid_together(fill):
    """An image painted from its grid stays equal to its grid, upsampled, after augmentation."""
    labels = _random_grids(16, 8, seed=1)
    images = upsample_patch_grid(labels, (32, 32)).expand(-1, 3, -1, -1).contiguous()
    cfg = dataclasses.replace(GEOMETRY_ONLY, shift_fill=fill)
    params = sample_augment_params(16, cfg, torch.Generator().manual_seed(2))
    assert params.shift.abs().max() > 0 and params.rot90.unique().numel() > 1  # non-trivial draw
    out_img, out_lab = apply_augment(images, labels, params, fill)
    assert torch.equal(out_img, upsample_patch_grid(out_lab, (32, 32)).expand(-1, 3, -1, -1))
    changed = (out_lab != labels).flatten(1).any(dim=1)
    assert changed.sum() >= 8  # most samples did move
    if fill == "wrap":  # wrapping keeps every patch
        assert torch.equal(out_lab.sum(dim=(1, 2)), labels.sum(dim=(1, 2)))


def test_colour_jitter_changes_image_only_and_stays_in_range():
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = _random_grids(8, 4, seed=3)
    cfg = dataclasses.replace(AugmentConfig.none(), brightness=0.2, hue=0.02, grayscale=0.5)
    params = sample_augment_params(8, cfg, torch.Generator().manual_seed(4))
    out_img, out_lab = apply_augment(images, labels, params)
    assert torch.equal(out_lab, labels)
    assert not torch.allclose(out_img, images)
    assert float(out_img.min()) >= 0.0 and float(out_img.max()) <= 1.0
    gray = out_img[params.grayscale]
    assert params.grayscale.any() and torch.allclose(gray[:, 0], gray[:, 1])


def test_identity_params_and_reproducible_draws():
    images, labels = torch.rand(4, 3, 16, 16), _random_grids(4, 4, seed=5)
    none = sample_augment_params(4, AugmentConfig.none(), torch.Generator().manual_seed(0))
    out_img, out_lab = apply_augment(images, labels, none)
    assert torch.allclose(out_img, images, atol=1e-6) and torch.equal(out_lab, labels)
    a = sample_augment_params(4, AugmentConfig(), torch.Generator().manual_seed(9))
    b = sample_augment_params(4, AugmentConfig(), torch.Generator().manual_seed(9))
    assert all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    with pytest.raises(ConfigError, match="shift_fill"):
        AugmentConfig(shift_fill="reflect")
    with pytest.raises(ConfigError, match="G dividing S"):
        apply_augment(torch.rand(4, 3, 16, 16), _random_grids(4, 5, 0), none)


def test_labels_from_masks_and_from_csv_agree(synthetic):
    _, manifest = synthetic
    rows = manifest[manifest["split"] == "train"].head(6)
    from_masks = load_labelled_images(rows, image_size=64, grid=8, coverage_threshold=0.25)
    soft = torch.stack(
        [
            torch.from_numpy(decode_image(read_bytes(u))[..., 0]).float()[None] / 255
            for u in rows["mask_uri"]
        ]
    )
    assert torch.equal(from_masks.labels, mask_to_patch_labels(soft, 8, 0.25))
    assert from_masks.masks is not None and from_masks.images.dtype == torch.uint8
    # The published CSV format keyed by image file name resolves to the same ids and grids.
    records = [
        PatchLabel(uri.rsplit("/", 1)[-1], grid)
        for uri, grid in zip(rows["image_uri"], from_masks.labels, strict=True)
    ]
    csv = format_patch_label_csv(records) + "elsewhere/unknown.png," + "0" * 64 + "\n"
    labels = csv_labels_for_manifest(csv, manifest, grid=8)
    assert sorted(labels) == sorted(rows["id"])
    from_csv = load_labelled_images(rows, image_size=64, grid=8, labels=labels)
    assert torch.equal(from_csv.labels, from_masks.labels)
    with pytest.raises(DatasetError, match="none of the 1 patch-label records"):
        csv_labels_for_manifest("info,mask\nnope.png," + "0" * 64 + "\n", manifest)
    with pytest.raises(DatasetError, match="no patch label"):
        load_labelled_images(rows, image_size=64, grid=8, labels={})


def test_split_and_config_validation():
    train, val = split_train_val(200, 0.2, seed=0)
    assert (len(train), len(val)) == (160, 40) and not set(train) & set(val)
    assert split_train_val(200, 0.2, seed=0) == (train, val)
    with pytest.raises(ConfigError, match="patch grid 15 must divide image size 224"):
        DetectorTrainConfig(grid=15)
    with pytest.raises(ConfigError, match="unknown detector"):
        DetectorTrainConfig(detector="vit")
    cfg = DetectorTrainConfig(detector="test_tiny", augment=GEOMETRY_ONLY)
    assert DetectorTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ConfigError, match="unknown detector training settings: colour"):
        DetectorTrainConfig.from_dict({"colour": 1})


def _tiny_cfg(out: str, **overrides) -> DetectorTrainConfig:
    values = dict(
        out=out,
        detector="test_tiny",
        grid=8,
        image_size=64,
        num_labelled=64,
        eval_max=32,
        epochs=40,
        batch_size=16,
        lr=1.0,
        backbone_lr=0.1,
        early_stop_patience=40,
        sheet_samples=6,
        log_every=20,
        seed=2,
    )
    return DetectorTrainConfig(**{**values, **overrides})


def test_training_learns_patch_labels(synthetic, tmp_path):
    """test_tiny on 51 synthetic images: held-out balanced patch accuracy well above chance."""
    root, manifest = synthetic
    out = str(tmp_path / "run")
    metrics = train_detector(_tiny_cfg(out, data=root), manifest)
    history = [h["val_balanced_accuracy"] for h in metrics["history"]]
    assert metrics["val"]["balanced_patch_accuracy"] == pytest.approx(max(history))
    assert metrics["held_out"]["n"] == 32
    assert metrics["held_out"]["balanced_patch_accuracy"] > 0.65  # chance = 0.5
    assert metrics["held_out"]["mask_iou"] > 0.2
    # The checkpoint rebuilds the same model and records config and label source.
    det = load_detector(f"{out}/detector.pt")
    assert det.config.grid == 8 and det.meta["label_source"]["kind"] == "masks"
    assert det.meta["label_source"]["coverage_threshold"] == 0.25
    from abs_ray.models.detector_train import LabelledImages

    held_rows = manifest[manifest["id"].isin(metrics["mask_sheet_ids"])]
    held = load_labelled_images(held_rows, image_size=64, grid=8)
    again = evaluate_detector(det, held)
    assert isinstance(held, LabelledImages) and 0.0 <= again["mask_iou"] <= 1.0
    assert json.loads(read_text(f"{out}/metrics.json"))["best_epoch"] == metrics["best_epoch"]
    sheet = decode_image(read_bytes(f"{out}/mask_sheet.png"))
    assert sheet.shape == (2 * 64, 4 * 2 * 64, 3)


def test_training_from_csv_with_frozen_cached_backbone_on_s3(synthetic, bucket):
    """Labels from an info,mask CSV in S3, frozen backbone with cached views, outputs in S3."""
    root, manifest = synthetic
    train_rows = manifest[manifest["split"] == "train"].head(24)
    fg = load_labelled_images(train_rows, image_size=64, grid=8).labels
    csv_uri = f"{bucket}/labels/patches.csv"
    write_text(
        csv_uri,
        format_patch_label_csv(
            [PatchLabel(i, g) for i, g in zip(train_rows["id"], fg, strict=True)]
        ),
    )
    cfg = _tiny_cfg(
        f"{bucket}/runs/tiny",
        labels_csv=csv_uri,
        freeze_backbone=True,
        trainable_blocks=1,
        feature_cache_views=2,
        epochs=3,
        eval_split=None,
    )
    metrics = train_detector(cfg, manifest)
    assert metrics["label_source"] == {
        "kind": "csv",
        "uri": csv_uri,
        "dataset": None,
        "split": "train",
        "grid": 8,
        "num_images": 24,
        "num_train": 19,
        "num_val": 5,
    }
    assert "held_out" not in metrics and metrics["epochs_run"] == 3
    assert metrics["seconds"]["features"] > 0
    det = load_detector(f"{bucket}/runs/tiny/detector.pt")
    assert det.meta["label_source"]["kind"] == "csv"
    assert json.loads(read_text(f"{bucket}/runs/tiny/config.json"))["labels_csv"] == csv_uri


def test_frozen_head_only_keeps_backbone_and_partial_unfreezing_trains_tail(synthetic, tmp_path):
    from abs_ray.models import create_detector
    from abs_ray.models.detector_train import fit_detector

    _, manifest = synthetic
    data = load_labelled_images(manifest[manifest["split"] == "train"].head(12), 64, 8)
    train, val = data.subset(range(8)), data.subset(range(8, 12))
    for blocks in (0, 1):
        torch.manual_seed(0)
        det = create_detector("test_tiny", grid=8, image_size=64)
        before = {k: v.clone() for k, v in det.backbone.state_dict().items()}
        cfg = _tiny_cfg(str(tmp_path), freeze_backbone=True, trainable_blocks=blocks, epochs=2)
        fit_detector(det, train, val, cfg)
        after = det.backbone.state_dict()
        first = all(torch.equal(before[k], after[k]) for k in before if k.startswith("body.0."))
        last = all(torch.equal(before[k], after[k]) for k in before if k.startswith("body.2."))
        assert first  # the frozen prefix never changes
        assert last == (blocks == 0)  # the last block trains only when left trainable


def test_mask_sheet_marks_prediction_and_truth():
    images = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    prob = torch.ones(2, 2, 2)
    prob[:, 0, 0] = 0.0  # top-left patch predicted foreground
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[:, :, 4:12, 4:12] = True
    sheet = mask_sheet(images, prob, masks, columns=2)
    assert sheet.shape == (16, 64, 3)
    assert tuple(sheet[1, 1]) == (200, 200, 200)  # predicted foreground: untouched
    assert sheet[1, 14, 0] > sheet[1, 14, 1]  # predicted background: darkened, red tint
    assert tuple(sheet[4, 8]) == (0, 255, 0)  # true-mask outline
    assert tuple(sheet[0, 20]) == (0, 0, 0) and tuple(sheet[12, 28]) == (255, 255, 255)
    with pytest.raises(ConfigError, match="mask_sheet needs"):
        mask_sheet(images[:0], prob[:0])


def test_train_detector_rejects_bad_input(synthetic, tmp_path):
    _, manifest = synthetic
    with pytest.raises(DatasetError, match="at least 2 labelled images"):
        train_detector(_tiny_cfg(str(tmp_path), label_split="nope"), manifest)
    with pytest.raises(DatasetError, match="no 'image_uri' column"):
        train_detector(_tiny_cfg(str(tmp_path)), pd.DataFrame({"id": [], "split": []}))
