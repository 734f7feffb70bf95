"""Fixtures of the pipeline tests: data sets shaped like a stranger's, tiny settings.

``stranger(root, layout, masks)`` writes a data set in any layout the pipeline reads.

Odd file names (spaces, brackets, ``#``, accents, several dots, upper-case suffixes), mixed
sizes and formats (JPEG, PNG, WebP), grayscale images among colour ones, one file that is not
an image at all. Each image has a bright blob on a textured background, and (when the layout
carries masks) its mask.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from abs_ray.io import join, write_bytes, write_text

SIZE, GRID = 32, 8
CLASSES = ("Class A", "dog_ö")
PREFIXES = ("Bird (", "ünï cøde ", "with space ", "hash#", "dots.in.name.", "UPPER_")
SUFFIXES = (".jpg", ".PNG", ".webp", ".jpeg")
SHAPES = ((32, 32), (48, 40), (30, 52), (64, 64))
SPLITS = ["train"] * 12 + ["val"] * 3 + ["test"] * 3
BROKEN = "broken file.jpg"
LAYOUTS = ("waterbirds", "class_flat", "class_split", "manifest_csv", "manifest_parquet")


def _encode(pixels: np.ndarray, suffix: str) -> bytes:
    buf = io.BytesIO()
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP"}[suffix.lower()]
    Image.fromarray(pixels).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def samples(seed: int = 0) -> list[dict]:
    """18 images (12 train, 3 val, 3 test), both classes in every split, plus a broken file."""
    rng = np.random.default_rng(seed)
    out = []
    for i, split in enumerate(SPLITS):
        h, w = SHAPES[i % len(SHAPES)]
        suffix = SUFFIXES[i % len(SUFFIXES)]
        label = i % 2
        texture = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        cy, cx = h // 2 + int(rng.integers(-3, 4)), w // 2 + int(rng.integers(-3, 4))
        ry, rx = h // 4, w // 4
        mask[cy - ry : cy + ry, cx - rx : cx + rx] = 255
        pixels = texture.copy()
        pixels[mask > 0] = (230, 200, 40) if label else (60, 220, 240)
        gray = i % 4 == 3
        if gray:
            pixels = np.asarray(Image.fromarray(pixels).convert("L"))
        out.append(
            {
                "name": f"{PREFIXES[i % len(PREFIXES)]}{i}{suffix}",
                "split": split,
                "label": label,
                "place": int(rng.integers(0, 2)),
                "image": _encode(pixels, suffix),
                "mask": _encode(mask, ".png"),
                "gray": gray,
            }
        )
    out.append(
        {
            "name": BROKEN,
            "split": "test",
            "label": 0,
            "place": 0,
            "image": b"this is not an image at all",
            "mask": out[0]["mask"],
            "gray": False,
        }
    )
    return out


def _stem(name: str) -> str:
    return os.path.splitext(name)[0]


def write_layout(root: str, layout: str, masks: bool, s3=None, seed: int = 0) -> dict:
    """Write the stranger's data set at ``root`` in ``layout``; return what a run should give.

    Returns:
        ``{"ids": all ids, "broken": the broken file's id, "masks": bool, "labels_csv": URI of
        an info,mask CSV for the train images (keyed by file name), "flat": no val split}``.
    """
    rows = samples(seed)
    flat = layout == "class_flat"
    ids = []
    for r in rows:
        cls = CLASSES[r["label"]]
        if layout == "waterbirds" or layout.startswith("manifest"):
            rel = f"images/{r['name']}"
        elif flat:
            rel = f"{cls}/{r['name']}"
        else:
            rel = f"{r['split']}/{cls}/{r['name']}"
        r["rel"] = rel
        r["mask_rel"] = f"masks/{_stem(r['name'])}.png"
        write_bytes(join(root, *rel.split("/")), r["image"], s3)
        if masks:
            write_bytes(join(root, *r["mask_rel"].split("/")), r["mask"], s3)
        ids.append(rel)
    if layout == "waterbirds":
        meta = pd.DataFrame(
            {
                "img_filename": [r["rel"] for r in rows],
                "y": [r["label"] for r in rows],
                "split": [("train", "val", "test").index(r["split"]) for r in rows],
                "place": [r["place"] for r in rows],
            }
        )
        if masks:
            meta["mask_filename"] = [r["mask_rel"] for r in rows]
        write_bytes(join(root, "metadata.csv"), meta.to_csv(index=False).encode(), s3)
    elif layout == "manifest_csv":
        df = pd.DataFrame(
            {
                "id": [r["rel"] for r in rows],
                "image_uri": [r["rel"] for r in rows],
                "label": [r["label"] for r in rows],
                "split": [r["split"] for r in rows],
            }
        )
        if masks:  # without masks: no group, place or mask_uri column at all
            df["group"] = [r["label"] * 2 + r["place"] for r in rows]
            df["place"] = [r["place"] for r in rows]
            df["mask_uri"] = [r["mask_rel"] for r in rows]
        df["note"] = ["" if i % 3 else 'odd, "quoted" note' for i in range(len(rows))]
        write_bytes(join(root, "manifest.csv"), df.to_csv(index=False).encode("utf-8"), s3)
    elif layout == "manifest_parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Present but empty where there are no masks; group/place partly missing.
        table = pa.table(
            {
                "id": [r["rel"] for r in rows],
                "image_uri": [r["rel"] for r in rows],
                "label": pa.array([r["label"] for r in rows], pa.int32()),
                "split": [r["split"] for r in rows],
                "group": pa.array(
                    [
                        None if i % 5 == 0 else r["label"] * 2 + r["place"]
                        for i, r in enumerate(rows)
                    ],
                    pa.int64(),
                ),
                "place": pa.array(
                    [None if i % 5 == 0 else r["place"] for i, r in enumerate(rows)], pa.int64()
                ),
                "mask_uri": pa.array([r["mask_rel"] if masks else None for r in rows], pa.string()),
                "source": pa.array([None] * len(rows), pa.null()),
            }
        )
        buf = io.BytesIO()
        pq.write_table(table, buf)
        write_bytes(join(root, "manifest.parquet"), buf.getvalue(), s3)
    # Patch labels for the train images, keyed by file name (as a hand-labelling tool writes).
    lines = ["info,mask"]
    for r in rows:
        if r["split"] == "train" or flat:
            m = np.asarray(Image.open(io.BytesIO(r["mask"])).resize((GRID, GRID), Image.BOX))
            lines.append(f'"{r["name"]}",' + "".join("1" if v >= 64 else "0" for v in m.flatten()))
    labels = join(root, "labels", "patch_labels.csv")
    write_text(labels, "\n".join(lines) + "\n", s3)
    return {
        "ids": ids,
        "broken": next(r["rel"] for r in rows if r["name"] == BROKEN),
        "masks": masks,
        "labels_csv": labels,
        "flat": flat,
    }


@pytest.fixture
def stranger():
    """:func:`write_layout`."""
    return write_layout


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A ``test_tiny`` detector checkpoint at 32 px, G = 8 (random weights: no training)."""
    import torch

    from abs_ray.models import create_detector, save_detector

    torch.manual_seed(0)
    uri = str(tmp_path_factory.mktemp("ckpt") / "detector.pt")
    save_detector(create_detector("test_tiny", grid=GRID, image_size=SIZE, weights=None), uri)
    return uri


def tiny_config(data: str, out: str, **kw):
    """A :class:`PipelineConfig` with tiny settings: test_tiny detector (2 epochs), telea,
    one actor per model stage, a 1-epoch test_tiny classifier for the train stage."""
    import dataclasses

    from abs_ray.models.detector_train import DetectorTrainConfig
    from abs_ray.pipeline import PipelineConfig, PoolConfig
    from abs_ray.train import TrainConfig

    train = DetectorTrainConfig(
        backbone="test_tiny",
        weights=None,
        image_size=SIZE,
        grid=GRID,
        epochs=2,
        num_labelled=8,
        eval_max=4,
        sheet_samples=2,
        num_workers=2,
        device="cpu",
        min_balanced_accuracy=0.0,  # a 2-epoch plumbing detector; the floor: tests/models
    )
    if "labels_csv" in kw:
        train = dataclasses.replace(train, labels=kw.pop("labels_csv"))
    kw.setdefault("stages", ("detector", "disentangle"))
    kw.setdefault(
        "train",
        TrainConfig(
            data="-",
            method="abs",
            backbone="test_tiny",
            weights=None,
            epochs=1,
            batch_size=8,
            # One worker: the train stage's wiring is what is tested here (tests/train has
            # the 2-worker runs); fewer processes on a shared 2-core machine.
            num_workers=1,
            cpus_per_worker=0.5,
        ),
    )
    kw.setdefault("inpainter", "telea")
    kw.setdefault("preview_samples", 2)
    kw.setdefault("load", PoolConfig(batch_size=8, num_cpus=0.25))
    kw.setdefault("detect", PoolConfig(min_size=1, max_size=1, batch_size=16, num_cpus=0.25))
    kw.setdefault("inpaint", PoolConfig(min_size=1, max_size=1, batch_size=8, num_cpus=0.5))
    kw.setdefault("rows_per_file", 6)
    return PipelineConfig(data=data, out=out, detector=train, **kw)


@pytest.fixture
def tiny():
    """:func:`tiny_config`."""
    return tiny_config
