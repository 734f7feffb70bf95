"""Reading a disentangled data set: scan, decode (detector alpha or true masks), eval shards."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abs_ray.errors import ConfigError, DatasetError, StorageNotFoundError
from abs_ray.io import encode_png, write_bytes
from abs_ray.train import scan_disentangled, write_disentangled_from_samples
from abs_ray.train.data import decode_rows


def _rows(root: str) -> dict[str, np.ndarray]:
    """Every row of a local disentangled set as a numpy batch (what map_batches gets)."""
    import pyarrow.dataset as pads

    table = pads.dataset(f"{root}/data", format="parquet").to_table()
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def test_scan(tiny_set, tiny_samples, tmp_path):
    info = scan_disentangled(tiny_set)
    assert info.counts == {"test": 16, "train": 32, "val": 8}
    assert info.groups["train"] == {0: 16, 3: 16}  # 100 % correlated
    assert info.groups["test"] == {0: 4, 1: 4, 2: 4, 3: 4}
    assert info.has_groups("val") and info.num_classes == 2 and info.image_size == 32
    assert info.true_mask_column == "mask_png" and len(info.files) == 3
    assert info.detectors == ("patch-grid-8-coverage-0.25",)
    assert info.manifest_sha256 is not None
    assert scan_disentangled(f"{tiny_set}/data").rows_sha256 == info.rows_sha256
    other = str(tmp_path / "other")
    write_disentangled_from_samples(tiny_samples[1:], other)
    assert scan_disentangled(other).rows_sha256 != info.rows_sha256
    tags = info.tags()
    assert tags["abs_ray.detector_checkpoint"] == "patch-grid-8-coverage-0.25"
    assert len(tags["abs_ray.data_rows_sha256"]) == 64


def test_scan_rejects_what_cannot_be_trained(tmp_path):
    with pytest.raises(StorageNotFoundError):
        scan_disentangled(str(tmp_path / "missing"))
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["a"], "label": [0], "split": ["train"]}), buf)
    write_bytes(str(tmp_path / "bad" / "data" / "x.parquet"), buf.getvalue())
    with pytest.raises(DatasetError, match="missing column.*foreground_png"):
        scan_disentangled(str(tmp_path / "bad"))


def test_decode_train_rows_with_detector_alpha_and_true_masks(tiny_set, tiny_samples):
    batch = _rows(tiny_set)
    by_id = {s.name: s for s in tiny_samples}
    out = decode_rows(batch, size=32, train=True)
    n = len(batch["id"])
    assert out["image"].shape == (n, 32, 32, 3) and out["background"].shape == (n, 32, 32, 3)
    assert out["alpha"].dtype == np.uint8 and set(np.unique(out["alpha"])) <= {0, 255}
    i = 0
    sample = by_id[str(batch["id"][i])]
    assert np.array_equal(out["image"][i], sample.image)
    assert np.array_equal(out["background"][i], sample.background)
    assert (out["label"][i], out["group"][i]) == (sample.y, sample.group)
    patch = out["alpha"][i] > 0
    true = sample.mask > 0
    assert (patch & true).sum() >= 0.8 * true.sum()  # a patch-level cut-out of the object
    assert not np.array_equal(patch, true)  # the patch alpha is coarser than the object

    oracle = decode_rows(batch, size=32, train=True, mask_source="mask_png")
    assert np.array_equal(oracle["alpha"][i] > 0, true)
    resized = decode_rows(batch, size=16, train=True, mask_source="mask_png")
    assert resized["image"].shape[1:] == (16, 16, 3) and resized["alpha"].shape[1:] == (16, 16)
    with pytest.raises(ConfigError, match="mask_source"):
        decode_rows(batch, size=32, train=True, mask_source="guess")


def test_oracle_reads_true_masks_from_mask_uri(tiny_set, tiny_samples, tmp_path):
    batch = _rows(tiny_set)
    by_id = {s.name: s for s in tiny_samples}
    uris = []
    for ident in batch["id"]:
        uri = str(tmp_path / "masks" / f"{ident}.png")
        write_bytes(uri, encode_png(by_id[str(ident)].mask))
        uris.append(uri)
    batch["mask_uri"] = np.asarray(uris, dtype=object)
    out = decode_rows(batch, size=32, train=True, mask_source="mask_uri")
    for i, ident in enumerate(batch["id"]):
        assert np.array_equal(out["alpha"][i] > 0, by_id[str(ident)].mask > 0)


def test_eval_shards_cover_every_row_once(tiny_set):
    batch = _rows(tiny_set)
    seen = []
    for rank in range(3):
        out = decode_rows(batch, size=32, train=False, rank=rank, world=3)
        assert "alpha" not in out and set(out["split_code"]) <= {-1, 0, 1}
        seen.append(len(out["label"]))
    assert sum(seen) == len(batch["id"]) and min(seen) > 0
    full = decode_rows(batch, size=32, train=False)
    codes = dict(zip(batch["split"], full["split_code"], strict=True))
    assert codes == {"train": -1, "val": 0, "test": 1}


def test_a_corrupt_row_is_dropped_not_fatal(tiny_set):
    batch = _rows(tiny_set)
    batch["foreground_png"] = batch["foreground_png"].copy()
    batch["foreground_png"][0] = b"\x89PNG\r\n\x1a\n broken"
    out = decode_rows(batch, size=32, train=True)
    assert len(out["label"]) == len(batch["id"]) - 1


def test_oracle_finds_true_masks_in_a_truth_disentangled_set(tiny_samples, tmp_path):
    """A set the pipeline cut out with the true masks (detector "truth", no mask columns):
    its foreground alpha is the true mask; without any true mask oracle has none."""
    import pyarrow.compute as pc

    root = str(tmp_path / "truth")
    write_disentangled_from_samples(tiny_samples, root, alpha="true")
    path = tmp_path / "truth" / "data" / "part-00000.parquet"
    table = pq.read_table(path).drop_columns(["mask_png"])
    table = table.set_column(
        table.column_names.index("detector"), "detector", pa.array(["truth"] * table.num_rows)
    )
    pq.write_table(table, path)
    assert scan_disentangled(root).true_mask_column == "foreground"
    table = table.set_column(
        table.column_names.index("detector"),
        "detector",
        pc.cast(pa.array(["s3://b/detector.pt"] * table.num_rows), pa.string()),
    )
    pq.write_table(table, path)
    assert scan_disentangled(root).true_mask_column is None
