"""Users' own data gets through: every layout, with and without masks, local and S3.

Each case runs the real pipeline on the session's Ray cluster with tiny settings (32 px,
``test_tiny`` detector, telea, one actor per model stage) on a stranger's data set (odd file
names, mixed sizes and formats, grayscale images, one file that is no image), and checks what
every reader downstream needs: one Arrow schema in every Parquet file (optional columns typed
even when all missing), Ray Data, the train stage's scan, the Serve bank.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abs_ray.errors import LabelsRequiredError
from abs_ray.io import (
    decode_image,
    exists,
    join,
    list_files,
    read_bytes,
    read_text,
    resolve,
    write_bytes,
)
from abs_ray.pipeline import read_disentangled, run
from abs_ray.stages.disentangle import SALIENCY_DETECTOR

#: (layout, masks, where the detector comes from, also run the train stage)
LOCAL_CASES = [
    ("waterbirds", True, "masks", True),
    ("waterbirds", False, "labels", False),
    ("class_flat", False, "checkpoint", True),
    ("class_split", False, "labels", False),
    ("manifest_csv", True, "checkpoint", True),
    ("manifest_csv", False, "labels", False),
    ("manifest_parquet", True, "masks", False),
    ("manifest_parquet", False, "checkpoint", False),
]
S3_CASES = [
    ("waterbirds", False, "checkpoint"),
    ("class_flat", False, "labels"),
    ("class_split", False, "checkpoint"),
    ("manifest_csv", True, "masks"),
    ("manifest_parquet", False, "checkpoint"),
]


def _source(source, info, checkpoint):
    if source == "labels":
        return {"labels_csv": info["labels_csv"]}
    if source == "checkpoint":
        return {"detector_checkpoint": checkpoint}
    if source == "saliency":
        return {"mask_source": "saliency"}
    return {}


def check_output(out, info, s3=None, detector=None, mask_source="detector"):
    """What every reader of a pipeline output needs, checked on ``out``."""
    import ray

    from abs_ray.serve.bank import BackgroundBank
    from abs_ray.train.data import scan_disentangled

    n = len(info["ids"])
    summary = json.loads(read_text(join(out, "manifest.json"), s3))
    assert summary["state"] == "complete"
    assert summary["counts"] == {"input": n, "ok": n - 1, "errors": 1}
    assert summary["errors_by_type"] == {"NotAnImageError": 1}
    assert summary["mask_source"] == mask_source
    if detector is not None:
        assert summary["detector"] == detector
    assert not exists(join(out, "_staging"), s3)

    # One schema in every file, optional columns typed although (maybe) all missing.
    schemas = set()
    for uri in list_files(join(out, "data"), suffixes=[".parquet"], s3=s3):
        schema = pq.read_schema(pa.BufferReader(read_bytes(uri, s3)))
        schemas.add(schema.remove_metadata().to_string())
        assert schema.field("mask_uri").type == pa.string()
        assert schema.field("group").type == pa.int64() and schema.field("place").type == pa.int64()
    assert len(schemas) == 1, schemas

    rows = read_disentangled(out, s3)
    assert sorted(rows["id"]) == sorted(set(info["ids"]) - {info["broken"]})
    assert rows["mask_uri"].notna().all() if info["masks"] else rows["mask_uri"].isna().all()
    assert set(rows["mask_source"]) == {mask_source}
    fg = decode_image(rows["foreground_png"].iloc[0], alpha=True)
    assert fg.shape == (32, 32, 4) and len(rows["patch_prob"].iloc[0]) == 64

    fs, path = resolve(join(out, "data"), s3)
    assert ray.data.read_parquet(path, filesystem=fs).count() == n - 1
    scanned = scan_disentangled(out, s3)
    assert sum(scanned.counts.values()) == n - 1
    bank = BackgroundBank.from_pipeline_output(out, s3=s3)
    assert len(bank) == n - 1
    return summary


@pytest.mark.parametrize(
    "layout, masks, source, train",
    LOCAL_CASES,
    ids=[f"{c[0]}-{'masks' if c[1] else 'nomasks'}-{c[2]}" for c in LOCAL_CASES],
)
def test_local_layouts(
    ray_cluster, tmp_path, stranger, tiny, tiny_checkpoint, layout, masks, source, train
):
    data, out = str(tmp_path / "my data"), str(tmp_path / "out")
    info = stranger(data, layout, masks)
    stages = ("detector", "disentangle", "train") if train else ("detector", "disentangle")
    summary = run(tiny(data, out, stages=stages, **_source(source, info, tiny_checkpoint)))
    expected = tiny_checkpoint if source == "checkpoint" else join(out, "detector", "detector.pt")
    check_output(out, info, detector=expected)
    assert summary["detector_checkpoint"] == expected
    if source != "checkpoint":
        metrics = json.loads(read_text(join(out, "detector", "metrics.json")))
        assert metrics["label_source"]["kind"] == ("csv" if source == "labels" else "masks")
    if info["flat"]:
        # Only train images: a stable hash of the id made the val split, recorded.
        assert summary["val_split"]["rows"] > 0
        rows = read_disentangled(out)
        assert set(rows["split"]) == {"train", "val"}
    else:
        assert summary["val_split"] is None
    if train:
        report = json.loads(read_text(summary["train"]["report"]))
        assert report["epochs_completed"] == 1 and report["data"]["counts"]["val"] > 0
        committed = json.loads(read_text(join(out, "manifest.json")))
        assert committed["train"]["report"] == summary["train"]["report"]


@pytest.mark.parametrize(
    "layout, masks, source",
    S3_CASES,
    ids=[f"{c[0]}-{'masks' if c[1] else 'nomasks'}-{c[2]}" for c in S3_CASES],
)
def test_s3_layouts(
    ray_cluster, bucket, s3_server, stranger, tiny, tiny_checkpoint, layout, masks, source
):
    data, out = f"{bucket}/my data", f"{bucket}/runs/r1"
    info = stranger(data, layout, masks, s3_server)
    kw = _source(source, info, tiny_checkpoint)
    if source == "checkpoint":  # in the bucket too, as a user would keep it
        kw["detector_checkpoint"] = f"{bucket}/detectors/d.pt"
        with open(tiny_checkpoint, "rb") as f:
            write_bytes(kw["detector_checkpoint"], f.read(), s3_server)
    run(tiny(data, out, **kw), s3=s3_server)
    check_output(out, info, s3_server)


def test_saliency_source_needs_no_labels(ray_cluster, tmp_path, stranger, tiny):
    """--mask_source saliency: zero-shot masks, named untrained in the manifest and every row."""
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    info = stranger(data, "class_split", masks=False)
    summary = run(tiny(data, out, mask_source="saliency"))
    check_output(out, info, detector=SALIENCY_DETECTOR, mask_source="saliency")
    assert "untrained" in summary["detector"] and summary["detector_checkpoint"] is None
    assert not exists(join(out, "detector"))  # nothing was trained
    rows = read_disentangled(out)
    assert set(rows["detector"]) == {SALIENCY_DETECTOR}
    # It finds the blobs: most images get a foreground, not everything.
    assert 0.0 < rows["foreground_fraction"].mean() < 0.9


def test_no_masks_no_labels_stops_before_any_work(tmp_path, stranger, tiny):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    stranger(data, "class_flat", masks=False)
    with pytest.raises(LabelsRequiredError) as err:
        run(tiny(data, out))
    message = str(err.value)
    assert "\n" not in message
    for hint in ("abs-ray label", "--detector_checkpoint", "--mask_source saliency"):
        assert hint in message
    assert not exists(join(out, "_staging")) and not exists(join(out, "manifest.json"))
