"""Layout readers on real local folders and a real S3 server (moto, loopback)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from abs_ray.data import (
    load_dataset,
    read_class_folders,
    read_waterbirds,
    validate_manifest,
    write_manifest,
)
from abs_ray.errors import LayoutError, ManifestRowError, StorageNotFoundError
from abs_ray.io import encode_png, join, list_files, read_bytes, write_bytes, write_text

METADATA = (
    "img_id,img_filename,y,split,place,place_filename,mask_filename\n"
    "1,001.Albatross/a1.png,1,0,1,/o/ocean.jpg,masks/a1.png\n"
    "2,001.Albatross/a2.png,1,2,0,/f/forest.jpg,\n"
    "3,002.Crow/c1.png,0,1,0,/f/forest.jpg,masks/c1.png\n"
    "4,002.Crow/c2.png,0,2,1,/o/lake.jpg,masks/c2.png\n"
)


def _png(seed: int) -> bytes:
    return encode_png(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8))


def _waterbirds(root: str, metadata: str = METADATA) -> str:
    write_text(join(root, "metadata.csv"), metadata)
    for i, name in enumerate(
        ("001.Albatross/a1.png", "001.Albatross/a2.png", "002.Crow/c1.png", "002.Crow/c2.png")
    ):
        write_bytes(join(root, name), _png(i))
    return root


def _class_folders(root: str, with_splits: bool) -> str:
    files = ["cat/1.jpg", "cat/2.PNG", "dog/1.png", "ant/x.webp"]
    if with_splits:
        files = [
            "train/cat/1.png",
            "train/dog/1.png",
            "val/dog/2.png",
            "test/ant/3.png",
            "test/cat/4.png",
        ]
    for i, name in enumerate(files):
        write_bytes(join(root, name), _png(i))
    write_text(join(root, "README.txt"), "not an image")
    write_bytes(join(root, ".hidden", "x", "y.png"), _png(9))
    return root


def _strip(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The manifest with ``prefix`` removed from URIs, to compare local and S3 reads."""
    out = df.copy()
    for column in ("image_uri", "mask_uri"):
        out[column] = (
            out[column]
            .map(lambda v: v[len(prefix) :] if isinstance(v, str) else v)
            .astype("string")
        )
    return out


def test_waterbirds_local_and_s3_identical(tmp_path, bucket):
    local = read_waterbirds(_waterbirds(str(tmp_path)))
    remote = read_waterbirds(_waterbirds(f"{bucket}/wb"))
    assert local["id"].tolist() == [
        "001.Albatross/a1.png",
        "001.Albatross/a2.png",
        "002.Crow/c1.png",
        "002.Crow/c2.png",
    ]
    assert local["split"].tolist() == ["train", "test", "val", "test"]
    assert local["label"].tolist() == [1, 1, 0, 0]
    assert local["place"].tolist() == [1, 0, 0, 1]
    assert local["group"].tolist() == [3, 2, 0, 1]
    assert local["mask_uri"].tolist() == [
        str(tmp_path / "masks/a1.png"),
        pd.NA,
        str(tmp_path / "masks/c1.png"),
        str(tmp_path / "masks/c2.png"),
    ]
    pd.testing.assert_frame_equal(_strip(local, str(tmp_path)), _strip(remote, f"{bucket}/wb"))
    assert read_bytes(remote["image_uri"][2]) == _png(2)


def test_waterbirds_without_mask_column(tmp_path):
    no_masks = "".join(line.rsplit(",", 1)[0] + "\n" for line in METADATA.splitlines())
    df = read_waterbirds(_waterbirds(str(tmp_path), no_masks))
    assert len(df) == 4
    assert df["mask_uri"].isna().all()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "002.Crow/c1.png,0,1,0",
            "002.Crow/c1.png,zero,1,0",
            r"row 3 .*column 'y' must be an integer, got 'zero'",
        ),
        (
            "001.Albatross/a2.png,1,2,0",
            "001.Albatross/a2.png,1,5,0",
            r"row 2 .*column 'split' must be one of \[0, 1, 2\], got '5'",
        ),
        (
            "002.Crow/c2.png,0,2,1",
            "002.Crow/c2.png,0,2,",
            r"row 4 .*column 'place' must not be empty",
        ),
        (
            "002.Crow/c2.png,0,2,1",
            "002.Crow/c2.png,0,2,1.5",
            r"row 4 .*column 'place' must be an integer, got '1.5'",
        ),
        (
            "002.Crow/c1.png,0,1",
            "001.Albatross/a1.png,0,1",
            r"row 3 .*duplicate id '001.Albatross/a1.png' \(first seen in row 1\)",
        ),
        ("4,002.Crow/c2.png", "4,", r"row 4 .*column 'img_filename' must not be empty"),
    ],
)
def test_waterbirds_bad_row_names_file_row_value(tmp_path, bucket, old, new, message):
    assert old in METADATA
    for root in (str(tmp_path), f"{bucket}/wb"):
        _waterbirds(root, METADATA.replace(old, new))
        with pytest.raises(
            ManifestRowError, match=re.escape(join(root, "metadata.csv")) + ": " + message
        ):
            load_dataset(root)


def test_waterbirds_missing_column(tmp_path):
    _waterbirds(str(tmp_path), METADATA.replace(",place,", ",location,"))
    with pytest.raises(
        ManifestRowError, match=r"metadata\.csv: header row: missing column\(s\) \['place'\]"
    ):
        read_waterbirds(str(tmp_path))


@pytest.mark.parametrize("with_splits", [False, True])
def test_class_folders_local_and_s3_identical(tmp_path, bucket, with_splits):
    local = read_class_folders(_class_folders(str(tmp_path), with_splits))
    remote = read_class_folders(_class_folders(f"{bucket}/cf", with_splits))
    pd.testing.assert_frame_equal(_strip(local, str(tmp_path)), _strip(remote, f"{bucket}/cf"))
    if with_splits:
        assert local["id"].tolist() == [
            "test/ant/3.png",
            "test/cat/4.png",
            "train/cat/1.png",
            "train/dog/1.png",
            "val/dog/2.png",
        ]
        assert local["split"].tolist() == ["test", "test", "train", "train", "val"]
        assert local["label"].tolist() == [0, 1, 1, 2, 2]
    else:
        assert local["id"].tolist() == ["ant/x.webp", "cat/1.jpg", "cat/2.PNG", "dog/1.png"]
        assert (local["split"] == "train").all()
        assert local["label"].tolist() == [0, 1, 1, 2]
    assert local["group"].isna().all() and local["mask_uri"].isna().all()


def test_class_folders_bad_layouts(tmp_path):
    write_bytes(str(tmp_path / "a" / "cat" / "1.png"), _png(0))
    write_bytes(str(tmp_path / "a" / "dog.png"), _png(1))
    with pytest.raises(
        LayoutError, match=r"found images at depths \{1: 'dog.png', 2: 'cat/1.png'\}"
    ):
        read_class_folders(str(tmp_path / "a"))
    write_bytes(str(tmp_path / "b" / "train" / "1.png"), _png(0))
    with pytest.raises(LayoutError, match=r"look like splits with images directly inside"):
        read_class_folders(str(tmp_path / "b"))
    write_bytes(str(tmp_path / "c" / "fold1" / "cat" / "1.png"), _png(0))
    with pytest.raises(
        LayoutError, match=r"need split folders \['train', 'val', 'test'\] on top, got \['fold1'\]"
    ):
        read_class_folders(str(tmp_path / "c"))


def test_load_dataset_detects_every_layout(tmp_path, bucket):
    wb = read_waterbirds(_waterbirds(str(tmp_path / "wb")))
    pd.testing.assert_frame_equal(load_dataset(str(tmp_path / "wb")), wb)
    pd.testing.assert_frame_equal(load_dataset(str(tmp_path / "wb" / "metadata.csv")), wb)
    for name in ("manifest.csv", "manifest.parquet"):
        write_manifest(wb, str(tmp_path / name.split(".")[1] / name))
        pd.testing.assert_frame_equal(load_dataset(str(tmp_path / name.split(".")[1])), wb)
        pd.testing.assert_frame_equal(load_dataset(str(tmp_path / name.split(".")[1] / name)), wb)
    cf = load_dataset(_class_folders(str(tmp_path / "cf"), with_splits=True))
    assert len(cf) == 5 and cf["class_name"].tolist()[:2] == ["ant", "cat"]
    remote = load_dataset(_class_folders(f"{bucket}/cf", with_splits=True))
    pd.testing.assert_frame_equal(_strip(remote, f"{bucket}/cf"), _strip(cf, str(tmp_path / "cf")))
    remote_wb = load_dataset(_waterbirds(f"{bucket}/wb"))
    assert validate_manifest(remote_wb).equals(remote_wb)


def test_unknown_layout_lists_what_was_looked_for(tmp_path, bucket):
    write_text(str(tmp_path / "notes.txt"), "hello")
    write_text(f"{bucket}/junk/notes.txt", "hello")
    for uri in (str(tmp_path), f"{bucket}/junk"):
        with pytest.raises(LayoutError) as info:
            load_dataset(uri)
        text = str(info.value)
        for looked_for in (
            "metadata.csv",
            "manifest.parquet",
            "manifest.csv",
            "<class>/",
            "<split>/<class>/",
        ):
            assert looked_for in text
    with pytest.raises(StorageNotFoundError):
        load_dataset(str(tmp_path / "absent"))
    with pytest.raises(StorageNotFoundError):
        load_dataset(f"{bucket}/absent")
    assert list_files(f"{bucket}/junk") == [f"{bucket}/junk/notes.txt"]
