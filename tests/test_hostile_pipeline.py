"""The hostile corpus (tests/hostile.py) through the pipeline, every layout, local and S3.

Each run must account for every input exactly once: ``input = ok + errors``, every id in
``data/`` or ``errors/`` (never both, never twice), each refused file with its expected typed
error, and no error message quoting a file's bytes or the secret behind an escaping link.
Links, pipes, directories and sparse files exist only in the local runs.
"""

from __future__ import annotations

import io
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abs_ray.io import join, list_files, read_bytes, read_text, write_bytes
from abs_ray.pipeline import PipelineConfig, PoolConfig, read_disentangled, run
from tests.hostile import MAX_PIXELS, OK, SECRET, echoes_content, write_entry, write_outside
from tests.hostile import corpus as hostile_corpus

pytestmark = pytest.mark.slow

LAYOUTS = ("class_flat", "class_split", "waterbirds", "manifest_csv", "manifest_parquet")
CLASSES = ("cls_a", "cls_b")


@pytest.fixture(scope="module")
def detector_checkpoint(tmp_path_factory):
    """A tiny 32-px detector (random weights: which pixels are foreground does not matter
    here, only that every input is accounted for)."""
    import torch

    from abs_ray.models import create_detector, save_detector

    torch.manual_seed(0)
    model = create_detector("test_tiny", grid=8, image_size=32, weights=None).eval()
    path = str(tmp_path_factory.mktemp("detector") / "detector.pt")
    save_detector(model, path)
    return path


def _rows(layout: str, entries) -> list[dict]:
    """Where each entry goes in ``layout``: its relative path, id, label and split."""
    rows = []
    for i, entry in enumerate(entries):
        cls, split = CLASSES[i % 2], ("train", "val", "test")[i % 3]
        if layout == "class_flat":
            rel = f"{cls}/{entry.name}"
            rows.append({"rel": rel, "id": rel, "label": i % 2, "split": "train"})
        elif layout == "class_split":
            rel = f"{split}/{cls}/{entry.name}"
            rows.append({"rel": rel, "id": rel, "label": i % 2, "split": split})
        else:
            rel = f"images/{entry.name}"
            rows.append({"rel": rel, "id": rel, "label": i % 2, "split": split})
    return rows


def _write_layout(layout: str, root: str, entries, outside: str | None, s3) -> dict[str, object]:
    """Write the corpus in ``layout`` under ``root``; return ``{id: entry}``."""
    rows = _rows(layout, entries)
    for row, entry in zip(rows, entries, strict=True):
        if entry.local_only:
            write_entry(entry, os.path.join(root, row["rel"]), outside)
        else:
            write_bytes(join(root, *row["rel"].split("/")), entry.data, s3)
    codes = {"train": 0, "val": 1, "test": 2}
    if layout == "waterbirds":
        meta = pd.DataFrame(
            {
                "img_filename": [r["rel"] for r in rows],
                "y": [r["label"] for r in rows],
                "split": [codes[r["split"]] for r in rows],
                "place": [0] * len(rows),
            }
        )
        write_bytes(join(root, "metadata.csv"), meta.to_csv(index=False).encode(), s3)
    elif layout.startswith("manifest"):
        manifest = pd.DataFrame(
            {
                "id": [r["id"] for r in rows],
                "image_uri": [r["rel"] for r in rows],  # relative to the manifest's folder
                "label": [r["label"] for r in rows],
                "split": [r["split"] for r in rows],
                "group": [None] * len(rows),
                "place": [None] * len(rows),
                "mask_uri": [None] * len(rows),
            }
        )
        if layout == "manifest_csv":
            data = manifest.to_csv(index=False).encode()
            write_bytes(join(root, "manifest.csv"), data, s3)
        else:
            table = pa.Table.from_pandas(manifest, preserve_index=False)
            buf = io.BytesIO()
            pq.write_table(table, buf)
            write_bytes(join(root, "manifest.parquet"), buf.getvalue(), s3)
    return {r["id"]: e for r, e in zip(rows, entries, strict=True)}


def _errors(out: str, s3) -> pd.DataFrame:
    files = list_files(join(out, "errors"), suffixes=[".parquet"], s3=s3)
    frames = [pq.read_table(io.BytesIO(read_bytes(f, s3))).to_pandas() for f in files]
    return pd.concat(frames, ignore_index=True)


def _run_corpus(layout: str, root: str, out: str, checkpoint: str, s3, local: bool) -> dict:
    entries = [e for e in hostile_corpus() if local or not e.local_only]
    outside = write_outside(os.path.join(os.path.dirname(root), "outside")) if local else None
    by_id = _write_layout(layout, root, entries, outside, s3)
    cfg = PipelineConfig(
        data=root,
        out=out,
        stages=("disentangle",),
        detector_checkpoint=checkpoint,
        inpainter="telea",
        max_pixels=MAX_PIXELS,
        preview_samples=0,
        load=PoolConfig(batch_size=16, num_cpus=0.25),
        detect=PoolConfig(min_size=1, max_size=1, batch_size=32, num_cpus=0.25),
        inpaint=PoolConfig(min_size=1, max_size=1, batch_size=16, num_cpus=0.25),
    )
    summary = run(cfg, s3=s3)

    expected_ok = {i for i, e in by_id.items() if e.expected == OK}
    expected_err = {i: e.expected for i, e in by_id.items() if e.expected != OK}
    assert summary["counts"] == {
        "input": len(by_id),
        "ok": len(expected_ok),
        "errors": len(expected_err),
    }
    rows = read_disentangled(out, s3)
    errors = _errors(out, s3)
    assert rows["id"].is_unique and errors["id"].is_unique
    assert set(rows["id"]) == expected_ok
    got = dict(zip(errors["id"], errors["error_type"], strict=True))
    wrong = {i: (expected_err.get(i), got.get(i)) for i in set(got) | set(expected_err)}
    wrong = {i: pair for i, pair in wrong.items() if pair[0] != pair[1]}
    assert not wrong, wrong
    assert set(errors["stage"]) == {"load"}
    for row_id, message in zip(errors["id"], errors["message"], strict=True):
        assert message, row_id
        assert not echoes_content(message, by_id[row_id].data), (row_id, message)
    text = read_text(join(out, "manifest.json"), s3)
    assert SECRET.decode() not in text
    return json.loads(text)["counts"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hostile_corpus_local(layout, ray_cluster, tmp_path, detector_checkpoint):
    root = str(tmp_path / "data")
    os.makedirs(root)
    counts = _run_corpus(layout, root, str(tmp_path / "out"), detector_checkpoint, None, True)
    assert counts["input"] >= 60


@pytest.mark.parametrize("layout", LAYOUTS)
def test_hostile_corpus_s3(layout, ray_cluster, bucket, s3_server, detector_checkpoint):
    counts = _run_corpus(
        layout, f"{bucket}/data", f"{bucket}/out", detector_checkpoint, s3_server, False
    )
    assert counts["input"] >= 60
