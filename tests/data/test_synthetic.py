"""Synthetic benchmark: determinism, group counts, exact masks, Waterbirds-layout round trip."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from abs_ray.data import SyntheticConfig, generate_synthetic, load_dataset, write_synthetic
from abs_ray.data.synthetic import CLASS_SHAPES
from abs_ray.errors import ConfigError
from abs_ray.io import decode_image, list_files, read_bytes, read_text

SMALL = SyntheticConfig(n_train=24, n_val=8, n_test=16, size=32, seed=3)


def _counts(samples, split):
    return {g: sum(1 for s in samples if s.split == split and s.group == g) for g in range(4)}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_synthetic(
            str(tmp_path / name), SyntheticConfig(n_train=8, n_val=4, n_test=8, size=32, seed=seed)
        )
    files = sorted(os.path.relpath(f, tmp_path / "a") for f in list_files(str(tmp_path / "a")))
    assert len(files) == 3 * 20 + 2  # images, masks, backgrounds; metadata.csv, config.json
    assert files == sorted(
        os.path.relpath(f, tmp_path / "b") for f in list_files(str(tmp_path / "b"))
    )
    for rel in files:
        assert read_bytes(str(tmp_path / "a" / rel)) == read_bytes(str(tmp_path / "b" / rel)), rel
    image = "images/train_00000.png"
    assert read_bytes(str(tmp_path / "a" / image)) != read_bytes(str(tmp_path / "c" / image))


def test_correlation_one_and_balanced_test():
    samples = list(generate_synthetic(SMALL))
    assert [s.split for s in samples] == ["train"] * 24 + ["val"] * 8 + ["test"] * 16
    assert all(s.place == s.y for s in samples if s.split in ("train", "val"))
    assert _counts(samples, "train") == {0: 12, 1: 0, 2: 0, 3: 12}
    assert _counts(samples, "test") == {0: 4, 1: 4, 2: 4, 3: 4}
    train_y = [s.y for s in samples if s.split == "train"]
    assert train_y != sorted(train_y)  # shuffled, not grouped


def test_partial_correlation_and_balanced_val():
    samples = list(
        generate_synthetic(
            SyntheticConfig(n_train=40, n_val=8, n_test=8, correlation=0.9, val_correlation=0.5)
        )
    )
    assert _counts(samples, "train") == {0: 18, 1: 2, 2: 2, 3: 18}
    assert _counts(samples, "val") == {0: 2, 1: 2, 2: 2, 3: 2}


def test_masks_cover_exactly_what_differs_from_the_clean_background():
    for s in generate_synthetic(SMALL):
        assert s.image.shape == s.background.shape == (32, 32, 3) and s.image.dtype == np.uint8
        assert set(np.unique(s.mask)) == {0, 255}
        np.testing.assert_array_equal((s.image != s.background).any(axis=-1), s.mask == 255)
        assert s.meta["shape"] in CLASS_SHAPES[s.y]
        assert 0.02 < (s.mask == 255).mean() < 0.6


def test_backgrounds_look_like_their_place():
    samples = list(generate_synthetic(SMALL))
    water = np.stack([s.background for s in samples if s.place == 1]).reshape(-1, 3).mean(0)
    land = np.stack([s.background for s in samples if s.place == 0]).reshape(-1, 3).mean(0)
    assert water[2] > water[1] > water[0]  # blue
    assert land[1] > land[2] and land[0] > land[2]  # green / brown


def test_write_then_load_round_trip(tmp_path, bucket):
    cfg = SyntheticConfig(n_train=4, n_val=4, n_test=4, size=32, seed=1)
    samples = list(generate_synthetic(cfg))
    for root in (str(tmp_path / "syn"), f"{bucket}/syn"):
        returned = write_synthetic(root, cfg)
        manifest = load_dataset(root)
        pd.testing.assert_frame_equal(manifest, returned)
        assert manifest["id"].tolist() == [f"images/{s.name}.png" for s in samples]
        assert manifest["label"].tolist() == [s.y for s in samples]
        assert manifest["group"].tolist() == [s.group for s in samples]
        assert manifest["split"].tolist() == [s.split for s in samples]
        for row, s in zip(manifest.itertuples(), samples, strict=True):
            np.testing.assert_array_equal(decode_image(read_bytes(row.image_uri)), s.image)
            np.testing.assert_array_equal(decode_image(read_bytes(row.mask_uri))[..., 0], s.mask)
        assert '"generator": "synthetic"' in read_text(f"{root}/config.json")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_test": 6}, "n_test must be a multiple of 4"),
        ({"correlation": 1.5}, r"correlation must be in \[0, 1\], got 1.5"),
        ({"val_correlation": -0.1}, r"val_correlation must be in \[0, 1\]"),
        ({"size": 8}, "size must be an int >= 16, got 8"),
        ({"n_train": -1}, "n_train must be a non-negative int, got -1"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SyntheticConfig(**kwargs)
