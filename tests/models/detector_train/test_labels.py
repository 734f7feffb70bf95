"""Patch labels from masks and from an info,mask CSV agree; the seeded train/val split."""

import pytest
import torch

from abs_ray.errors import DatasetError
from abs_ray.io import decode_image, read_bytes
from abs_ray.models.detector_train import (
    csv_labels_for_manifest,
    load_labelled_images,
    split_train_val,
)
from abs_ray.ops import PatchLabel, format_patch_label_csv, mask_to_patch_labels


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


def test_split_train_val():
    train, val = split_train_val(200, 0.2, seed=0)
    assert (len(train), len(val)) == (160, 40) and not set(train) & set(val)
    assert split_train_val(200, 0.2, seed=0) == (train, val)


def test_loading_labels_warns_nothing(synthetic):
    """Decoded pixels are read-only: handing them to torch as they are warned ("The given
    NumPy array is not writable") in every demo run's output. torch warns once per process,
    so this runs in a fresh one."""
    import subprocess
    import sys

    root, _ = synthetic
    code = (
        "import sys\n"
        "from abs_ray.data import load_dataset\n"
        "from abs_ray.models.detector_train import load_labelled_images\n"
        "m = load_dataset(sys.argv[1])\n"
        "d = load_labelled_images(m[m['split'] == 'train'].head(2), image_size=64, grid=8)\n"
        "assert d.masks is not None\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", code, root],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
