"""The manifest: validation errors naming source and row, CSV/Parquet round trips, local and S3."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from abs_ray.data import MANIFEST_COLUMNS, read_manifest_file, validate_manifest, write_manifest
from abs_ray.errors import ConfigError, DatasetError, ManifestRowError, StorageNotFoundError
from abs_ray.io import join, read_text, write_bytes, write_text


def _frame(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"img{i}" for i in range(n)],
            "image_uri": [f"/data/img{i}.png" for i in range(n)],
            "label": [i % 2 for i in range(n)],
            "split": ["train", "val", "test"][:n] + ["train"] * max(0, n - 3),
            "group": [i % 4 for i in range(n)],
            "place": [None] + [1] * (n - 1),
            "mask_uri": [f"/data/mask{i}.png" for i in range(n - 1)] + [None],
        }
    )


def test_validate_gives_canonical_dtypes_and_keeps_extra_columns():
    df = _frame().assign(extra=["a", "b", "c"])[["extra", *reversed(MANIFEST_COLUMNS)]]
    out = validate_manifest(df, source="x")
    assert list(out.columns) == [*MANIFEST_COLUMNS, "extra"]
    assert {c: str(t) for c, t in out.dtypes.items()} == {
        "id": "string",
        "image_uri": "string",
        "label": "int64",
        "split": "string",
        "group": "Int64",
        "place": "Int64",
        "mask_uri": "string",
        "extra": df["extra"].dtype.name,
    }
    assert out["place"].isna().tolist() == [True, False, False]
    assert out["mask_uri"].isna().tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("column", "row", "value", "expected"),
    [
        ("label", 1, "cat", "column 'label' must be an integer, got 'cat'"),
        ("label", 2, -1, "column 'label' must be >= 0, got -1"),
        ("label", 0, None, "column 'label' must not be empty"),
        ("split", 2, "dev", "column 'split' must be one of ['train', 'val', 'test'], got 'dev'"),
        ("image_uri", 1, "", "column 'image_uri' must not be empty"),
        ("id", 2, 7, "column 'id' must be a string, got int 7"),
        ("group", 1, 1.5, "column 'group' must be an integer, got 1.5"),
        ("mask_uri", 0, 3.0, "column 'mask_uri' must be a string"),
    ],
)
def test_bad_value_names_source_row_and_value(column, row, value, expected):
    df = _frame().astype(object)
    df.loc[row, column] = value
    with pytest.raises(ManifestRowError) as info:
        validate_manifest(df, source="my.csv")
    assert str(info.value).startswith(f"my.csv: row {row + 1} (1-based data row, header excluded)")
    assert expected in str(info.value)


def test_duplicate_id_names_both_rows():
    df = _frame(4)
    df.loc[3, "id"] = "img1"
    with pytest.raises(
        ManifestRowError, match=r"m\.csv: row 4 .*duplicate id 'img1' \(first seen in row 2\)"
    ):
        validate_manifest(df, source="m.csv")


def test_missing_column_names_header_and_columns():
    with pytest.raises(
        ManifestRowError, match=r"m\.csv: header row: missing column\(s\) \['split'\]"
    ):
        validate_manifest(_frame().drop(columns="split"), source="m.csv")
    with pytest.raises(DatasetError, match="must be a pandas DataFrame"):
        validate_manifest([1, 2], source="m.csv")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_local_and_s3(tmp_path, bucket, suffix):
    df = validate_manifest(_frame(5))
    local = str(tmp_path / f"manifest{suffix}")
    remote = f"{bucket}/sets/manifest{suffix}"
    write_manifest(df, local)
    write_manifest(df, remote)
    pd.testing.assert_frame_equal(read_manifest_file(local), df)
    pd.testing.assert_frame_equal(read_manifest_file(remote), df)


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path, bucket):
    text = (
        "id,image_uri,label,split,group,place,mask_uri\n"
        "a,images/a.png,0,train,,,masks/a.png\n"
        "b,../other/b.png,1,test,3,1,\n"
        "c,s3://elsewhere/c.png,1,val,2,0,/abs/c.png\n"
    )
    write_text(str(tmp_path / "wb" / "manifest.csv"), text)
    write_text(f"{bucket}/wb/manifest.csv", text)
    local = read_manifest_file(str(tmp_path / "wb" / "manifest.csv"))
    remote = read_manifest_file(f"{bucket}/wb/manifest.csv")
    assert local["image_uri"].tolist() == [
        str(tmp_path / "wb" / "images" / "a.png"),
        str(tmp_path / "other" / "b.png"),
        "s3://elsewhere/c.png",
    ]
    assert local["mask_uri"].tolist() == [
        str(tmp_path / "wb" / "masks" / "a.png"),
        pd.NA,
        "/abs/c.png",
    ]
    assert remote["image_uri"].tolist() == [
        f"{bucket}/wb/images/a.png",
        f"{bucket}/other/b.png",
        "s3://elsewhere/c.png",
    ]
    assert remote["group"].tolist() == [pd.NA, 3, 2]


def test_write_relative_makes_a_relocatable_folder(tmp_path):
    folder = tmp_path / "set"
    df = validate_manifest(_frame()).assign(
        image_uri=[str(folder / f"images/{i}.png") for i in range(3)]
    )
    df["image_uri"] = df["image_uri"].astype("string")
    write_manifest(df, str(folder / "manifest.csv"), relative=True)
    assert "images/0.png" in read_text(str(folder / "manifest.csv"))
    assert str(folder) not in read_text(str(folder / "manifest.csv"))
    os.rename(folder, tmp_path / "moved")
    moved = read_manifest_file(str(tmp_path / "moved" / "manifest.csv"))
    assert moved["image_uri"].tolist() == [
        str(tmp_path / "moved" / f"images/{i}.png") for i in range(3)
    ]


def test_bad_row_in_a_file_names_the_file(tmp_path):
    uri = str(tmp_path / "manifest.csv")
    write_text(
        uri,
        "id,image_uri,label,split,group,place,mask_uri\na,/a.png,0,train,,,\nb,/b.png,one,train,,,\n",
    )
    with pytest.raises(
        ManifestRowError, match=rf"{uri}: row 2 .*'label' must be an integer, got 'one'"
    ):
        read_manifest_file(uri)


def test_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match=r"must end with one of \['.csv', '.parquet'\]"):
        read_manifest_file(str(tmp_path / "manifest.json"))
    with pytest.raises(StorageNotFoundError):
        read_manifest_file(str(tmp_path / "absent.csv"))
    write_bytes(str(tmp_path / "bad.parquet"), b"not parquet at all")
    with pytest.raises(DatasetError, match=r"bad\.parquet: cannot parse as parquet"):
        read_manifest_file(str(tmp_path / "bad.parquet"))
    write_bytes(str(tmp_path / "empty.csv"), b"")
    with pytest.raises(DatasetError, match=r"empty\.csv: cannot parse as csv"):
        read_manifest_file(str(tmp_path / "empty.csv"))
    with pytest.raises(ConfigError):
        write_manifest(_frame(), join(str(tmp_path), "m.txt"))


def test_optional_columns_may_be_absent():
    df = _frame().drop(columns=["group", "place", "mask_uri"])
    out = validate_manifest(df, source="m.csv")
    assert list(out.columns) == list(MANIFEST_COLUMNS)
    assert out[["group", "place", "mask_uri"]].isna().all().all()


@pytest.mark.parametrize("missing", ["all", "some"])
def test_manifest_to_arrow_gets_through_ray_data_batches(missing):
    """What failed every data set without masks: pd.NA reaching Ray Data's numpy batches.

    A class-folder manifest has group/place/mask_uri all missing (pandas ``Int64``/``string``
    with ``pd.NA``); as Arrow with explicit types they become nulls that Ray converts."""
    import pyarrow as pa
    from ray.data.block import BlockAccessor

    from abs_ray.data import MANIFEST_SCHEMA, manifest_to_arrow

    df = _frame(4)
    if missing == "all":
        df["group"], df["place"], df["mask_uri"] = pd.NA, pd.NA, pd.NA
    df["class_name"] = ["a", None, "b", "a"]
    df["nothing"] = [None] * 4
    table = manifest_to_arrow(df)
    for field in MANIFEST_SCHEMA:
        assert table.schema.field(field.name).type == field.type
    assert table.schema.field("nothing").type == pa.string()
    assert table.column("mask_uri").null_count == (4 if missing == "all" else 1)
    batch = BlockAccessor.for_block(table).to_batch_format("numpy")
    block = BlockAccessor.batch_to_block(batch)  # raised ArrowInvalid on pd.NA before
    assert block.num_rows == 4
    assert all(v is None or isinstance(v, str) for v in batch["mask_uri"])


def test_hash_val_split_is_stable_and_keeps_train():
    from abs_ray.data import hash_val_split

    df = pd.DataFrame({"id": [f"photo {i}.jpg" for i in range(200)], "split": ["train"] * 200})
    out, moved = hash_val_split(df, 0.2)
    val = set(out.loc[out["split"] == "val", "id"])
    assert len(val) == moved and 20 < moved < 60
    # The same id lands in the same split with other rows around it, in any order.
    shuffled, _ = hash_val_split(df.sample(frac=1, random_state=1).iloc[:120], 0.2)
    assert set(shuffled.loc[shuffled["split"] == "val", "id"]) == val & set(shuffled["id"])
    tiny, moved = hash_val_split(df.iloc[:2], 0.01)
    assert moved == 1 and sorted(tiny["split"]) == ["train", "val"]
    with pytest.raises(ConfigError):
        hash_val_split(df, 1.0)
