"""train_detector: the recipe learns on synthetic data, and the run writes checkpoint,
metrics, config and sheet to any URI."""

import json

import pandas as pd
import pytest

from abs_ray.errors import DatasetError
from abs_ray.io import decode_image, read_bytes, read_text, write_text
from abs_ray.models import load_detector
from abs_ray.models.detector_train import (
    LabelledImages,
    evaluate_detector,
    load_labelled_images,
    train_detector,
)
from abs_ray.ops import PatchLabel, format_patch_label_csv


def test_training_learns_patch_labels(synthetic, tmp_path, tiny_cfg):
    """test_tiny on 51 synthetic images: held-out balanced patch accuracy well above chance."""
    root, manifest = synthetic
    out = str(tmp_path / "run")
    metrics = train_detector(tiny_cfg(out, data=root), manifest)
    history = [h["val_balanced_accuracy"] for h in metrics["history"]]
    assert metrics["val"]["balanced_patch_accuracy"] == pytest.approx(max(history))
    assert metrics["held_out"]["n"] == 32
    assert metrics["held_out"]["balanced_patch_accuracy"] > 0.65  # chance = 0.5
    assert metrics["held_out"]["mask_iou"] > 0.2
    # The checkpoint rebuilds the same model and records config and label source.
    det = load_detector(f"{out}/detector.pt")
    assert det.config.grid == 8 and det.meta["label_source"]["kind"] == "masks"
    assert det.meta["label_source"]["coverage_threshold"] == 0.25
    held_rows = manifest[manifest["id"].isin(metrics["mask_sheet_ids"])]
    held = load_labelled_images(held_rows, image_size=64, grid=8)
    again = evaluate_detector(det, held)
    assert isinstance(held, LabelledImages) and 0.0 <= again["mask_iou"] <= 1.0
    assert json.loads(read_text(f"{out}/metrics.json"))["best_epoch"] == metrics["best_epoch"]
    sheet = decode_image(read_bytes(f"{out}/mask_sheet.png"))
    assert sheet.shape[0] > 2 * 64 and sheet.shape[1:] == (4 * 2 * 64, 3)
    legend = sheet[2 * 64 :]  # under the tiles: what the colours mean
    assert (legend == (0, 255, 0)).all(axis=-1).sum() > 50  # the true-outline swatch
    assert (legend < 60).all(axis=-1).sum() > 50  # its text


def test_training_from_csv_with_frozen_cached_backbone_on_s3(synthetic, bucket, tiny_cfg):
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
    cfg = tiny_cfg(
        f"{bucket}/runs/tiny",
        labels=csv_uri,
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
    assert json.loads(read_text(f"{bucket}/runs/tiny/config.json"))["labels"] == csv_uri


def test_train_detector_rejects_bad_input(synthetic, tmp_path, tiny_cfg):
    _, manifest = synthetic
    with pytest.raises(DatasetError, match="at least 2 labelled images"):
        train_detector(tiny_cfg(str(tmp_path), label_split="nope"), manifest)
    with pytest.raises(DatasetError, match="no 'image_uri' column"):
        train_detector(tiny_cfg(str(tmp_path)), pd.DataFrame({"id": [], "split": []}))
