"""The background bank: demo, pipeline output (local and S3), filters, bad banks."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abs_ray.errors import DatasetError, StorageNotFoundError
from abs_ray.io import encode_png, join, write_bytes
from abs_ray.serve.bank import BackgroundBank
from abs_ray.web.errors import BankSelectionError


def _write_output(root: str, rows_per_file: list[list[dict]], s3=None) -> None:
    for i, rows in enumerate(rows_per_file):
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buf)
        write_bytes(join(root, "data", f"part-{i}.parquet"), buf.getvalue(), s3)


def _row(i: int, label: int, group: int, png: bytes) -> dict:
    return {
        "id": f"img{i}",
        "label": label,
        "group": group,
        "background_png": png,
        "foreground_png": b"unused",
        "split": "train",
    }


def test_demo_bank_is_deterministic_and_balanced():
    a, b = BackgroundBank.demo(6, image_size=24), BackgroundBank.demo(6, image_size=24)
    assert a.fingerprint() == b.fingerprint()
    assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images, strict=True))
    assert a.info()["labels"] == {"0": 3, "1": 3} and a.info()["groups"] == {"0": 3, "3": 3}
    assert a.select(groups=[3]).tolist() == [3, 4, 5]
    with pytest.raises(BankSelectionError, match="groups"):
        a.select(labels=[0], groups=[3])


def test_reads_pipeline_output_skipping_bad_rows(tmp_path):
    rng = np.random.default_rng(0)
    png = [encode_png(rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)) for _ in range(4)]
    _write_output(
        str(tmp_path),
        [[_row(0, 0, 0, png[0]), _row(1, 1, 3, b"not a png")], [_row(2, 1, 2, png[2])]],
    )
    bank = BackgroundBank.from_pipeline_output(str(tmp_path))
    assert bank.ids == ["img0", "img2"] and bank.labels.tolist() == [0, 1]
    assert bank.images[0].shape == (16, 20, 3) and bank.source == str(tmp_path)
    assert len(BackgroundBank.from_pipeline_output(str(tmp_path), limit=1)) == 1


def test_reads_pipeline_output_from_s3(bucket, s3_server):
    png = encode_png(np.full((8, 8, 3), 7, dtype=np.uint8))
    _write_output(f"{bucket}/run", [[_row(0, 1, 2, png)]], s3_server)
    bank = BackgroundBank.from_pipeline_output(f"{bucket}/run", s3=s3_server)
    assert len(bank) == 1 and int(bank.images[0][0, 0, 0]) == 7


def test_not_a_pipeline_output(tmp_path):
    with pytest.raises(StorageNotFoundError):
        BackgroundBank.from_pipeline_output(str(tmp_path / "nowhere"))
    write_bytes(join(str(tmp_path), "data", "notes.txt"), b"x")
    with pytest.raises(DatasetError, match="no Parquet"):
        BackgroundBank.from_pipeline_output(str(tmp_path))
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["a"]}), buf)
    write_bytes(join(str(tmp_path), "data", "x.parquet"), buf.getvalue())
    with pytest.raises(DatasetError, match="lacks column"):
        BackgroundBank.from_pipeline_output(str(tmp_path))
