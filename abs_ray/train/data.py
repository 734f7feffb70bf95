"""The disentangled data set as training input: scan it, stream it through Ray Data, decode.

Input: the ``disentangle`` stage's Parquet rows (``<out>/data/*.parquet``, see
:mod:`abs_ray.pipeline`): ``id, image_uri, label, split, group, place, mask_uri,
foreground_png`` (RGBA: the image and the tight foreground alpha), ``background_png`` (the
inpainted background), ``patch_prob, detector, inpainter, code_version``.

Training reads them with ``ray.data.read_parquet`` and decodes the PNGs in a Ray Data
``map_batches`` (CPU tasks, before the trainer), so workers receive fixed-size uint8 arrays:

================ ===================== ===================================================
column           shape, dtype          meaning
================ ===================== ===================================================
image            (H, W, 3) uint8       the original image
alpha            (H, W) uint8 {0, 255} tight foreground (train only)
background       (H, W, 3) uint8       inpainted background (train only)
label            () int64              class
group            () int64              spurious group, -1 when the data set has none
split_code       () int64              0 = val, 1 = test (evaluation only)
================ ===================== ===================================================

**True masks for** ``oracle``: the swap then cuts the object out with the true mask instead
of the detector's. The reader takes it, in this order of preference, from

1. an inline ``mask_png`` column (a PNG, 255 = foreground), as
   :func:`write_disentangled_from_samples` writes;
2. the foreground alpha itself when the set was disentangled with true masks (the pipeline
   with ``mask_source="truth"``, rows with ``detector == "truth"``; backgrounds are then
   inpainted from the true hole too);
3. ``mask_uri``, the source data set's mask file, which the pipeline copies into every row
   when the layout has masks (Waterbirds layout with ``mask_filename``, e.g. the synthetic
   demo and the birds benchmark): true masks on the detector-made backgrounds.

So, to get an ``oracle`` data set: run the pipeline on a data set with masks (either mask
source), or write one from generated samples with :func:`write_disentangled_from_samples`
(which can also stand in for the detector with patch-level masks).

Example:
    >>> from abs_ray.data import SyntheticConfig, generate_synthetic
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> samples = generate_synthetic(SyntheticConfig(n_train=4, n_val=2, n_test=4, size=32))
    >>> _ = write_disentangled_from_samples(samples, out)
    >>> info = scan_disentangled(out)
    >>> info.counts, info.num_classes, info.image_size, info.true_mask_column
    ({'test': 4, 'train': 4, 'val': 2}, 2, 32, 'mask_png')
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from abs_ray.errors import AbsRayError, ConfigError, DatasetError, StorageNotFoundError
from abs_ray.io import (
    S3Options,
    decode_image,
    encode_png,
    exists,
    join,
    list_files,
    read_bytes,
    resolve,
    write_bytes,
    write_text,
)

logger = logging.getLogger(__name__)

__all__ = [
    "REQUIRED_COLUMNS",
    "SPLIT_CODES",
    "TRUTH_DETECTOR",
    "DatasetInfo",
    "build_datasets",
    "decode_rows",
    "eval_dataset_name",
    "scan_disentangled",
    "write_disentangled_from_samples",
]

#: Columns training needs in every disentangled row.
REQUIRED_COLUMNS: tuple[str, ...] = (
    "id",
    "label",
    "split",
    "foreground_png",
    "background_png",
)
_META_COLUMNS = ("id", "label", "split", "group", "detector", "code_version")
#: ``detector`` value of rows the pipeline cut out with the data set's true masks
#: (``PipelineConfig(mask_source="truth")``): their foreground alpha is the true mask.
TRUTH_DETECTOR = "truth"
#: ``split_code`` of the evaluated splits.
SPLIT_CODES: dict[str, int] = {"val": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the driver learns about a disentangled data set before training.

    Attributes:
        uri: the folder holding the Parquet files.
        root: the pipeline output folder (``uri``'s parent when ``uri`` ends in ``data``).
        files: the Parquet file URIs, sorted.
        counts: rows per split.
        num_classes: ``max(label) + 1``.
        groups: per split, ``{group: rows}`` over rows with a group label.
        image_size: side of the stored images (from the first row).
        columns: every column name in the files.
        true_mask_column: where ``oracle`` finds true masks: ``"mask_png"`` or ``"mask_uri"``
            (every train row has one there), ``"foreground"`` (the set was disentangled with
            true masks: ``detector == "truth"``), else None.
        detectors: distinct ``detector`` values (the checkpoint that made the masks).
        code_versions: distinct ``code_version`` values.
        rows_sha256: hash of the sorted ``(id, label, split, group)`` rows.
        manifest_sha256: hash of ``<root>/manifest.json`` when present.
    """

    uri: str
    root: str
    files: tuple[str, ...]
    counts: dict[str, int]
    num_classes: int
    groups: dict[str, dict[int, int]]
    image_size: int
    columns: tuple[str, ...]
    true_mask_column: str | None
    detectors: tuple[str, ...]
    code_versions: tuple[str, ...]
    rows_sha256: str
    manifest_sha256: str | None

    def has_groups(self, split: str) -> bool:
        """True when every row of ``split`` has a group label."""
        return (
            self.counts.get(split, 0) > 0
            and sum(self.groups.get(split, {}).values()) == (self.counts[split])
        )

    def tags(self) -> dict[str, str]:
        """Provenance tags for MLflow."""
        return {
            "abs_ray.data": self.root,
            "abs_ray.data_rows_sha256": self.rows_sha256,
            "abs_ray.data_manifest_sha256": self.manifest_sha256 or "none",
            "abs_ray.detector_checkpoint": ",".join(self.detectors) or "unknown",
            "abs_ray.data_code_version": ",".join(self.code_versions) or "unknown",
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (for ``report.json``)."""
        d = dataclasses.asdict(self)
        d["files"] = len(self.files)
        d["groups"] = {s: {str(g): c for g, c in v.items()} for s, v in self.groups.items()}
        return d


def _data_folder(uri: str, s3: S3Options | None) -> tuple[str, str]:
    """``(folder with the Parquet files, pipeline root)``."""
    inner = join(uri, "data")
    if exists(inner, s3):
        return inner, uri
    stripped = uri.rstrip("/")
    root = stripped.rsplit("/", 1)[0] if stripped.endswith("/data") else stripped
    return uri, root


def _read_table(files: Iterable[str], s3: S3Options | None, columns: list[str]) -> pa.Table:
    fs, _ = resolve(next(iter(files)), s3)
    paths = [resolve(f, s3)[1] for f in files]
    import pyarrow.dataset as pads

    dataset = pads.dataset(paths, filesystem=fs, format="parquet")
    present = [c for c in columns if c in dataset.schema.names]
    return dataset.to_table(columns=present)


def scan_disentangled(uri: str, s3: S3Options | None = None) -> DatasetInfo:
    """Read the light columns of a disentangled data set and check it can be trained on.

    Args:
        uri: the pipeline output folder (with ``data/``) or the Parquet folder itself.
        s3: S3 settings; default from the environment.

    Returns:
        A :class:`DatasetInfo`.

    Raises:
        StorageNotFoundError: nothing at ``uri``.
        DatasetError: no Parquet files, a required column missing, no train rows, labels
            below 0, or an unreadable first image.
    """
    folder, root = _data_folder(uri, s3)
    try:
        files = tuple(list_files(folder, suffixes=[".parquet"], s3=s3))
    except StorageNotFoundError as exc:
        raise StorageNotFoundError(f"no disentangled data set at {uri}: {exc}") from exc
    if not files:
        raise DatasetError(f"no Parquet files under {folder}: expected the pipeline's data/")
    fs, _ = resolve(files[0], s3)
    schema_names: set[str] = set()
    for f in files:
        with fs.open_input_file(resolve(f, s3)[1]) as handle:
            schema_names |= set(pq.read_schema(handle).names)
    missing = [c for c in REQUIRED_COLUMNS if c not in schema_names]
    if missing:
        raise DatasetError(
            f"{folder}: missing column(s) {', '.join(missing)}; a disentangled data set has "
            f"{', '.join(REQUIRED_COLUMNS)} (and group, mask_uri, detector, ...)"
        )
    mask_cols = [c for c in ("mask_png", "mask_uri") if c in schema_names]
    table = _read_table(files, s3, [*_META_COLUMNS, "height"])
    masks = _read_table(files, s3, ["split", *mask_cols]) if mask_cols else None
    if table.num_rows == 0:
        raise DatasetError(f"{folder}: the data set has no rows")
    split = table["split"].to_numpy(zero_copy_only=False).astype(str)
    labels = table["label"].to_numpy(zero_copy_only=False)
    if labels.dtype.kind not in "iu" or labels.min() < 0:
        raise DatasetError(f"{folder}: labels must be integers >= 0, got dtype {labels.dtype}")
    counts = {s: int((split == s).sum()) for s in sorted(set(split.tolist()))}
    if not counts.get("train"):
        raise DatasetError(f"{folder}: no train rows (splits found: {counts})")
    groups_col = (
        table["group"].to_numpy(zero_copy_only=False) if "group" in table.column_names else None
    )
    groups: dict[str, dict[int, int]] = {}
    for s in counts:
        sel = split == s
        if groups_col is None:
            groups[s] = {}
            continue
        g = np.asarray(groups_col[sel], dtype=np.float64)
        g = g[~np.isnan(g)].astype(np.int64)
        values, n = np.unique(g, return_counts=True)
        groups[s] = {int(v): int(c) for v, c in zip(values, n, strict=True) if v >= 0}

    def distinct(name: str) -> tuple[str, ...]:
        if name not in table.column_names:
            return ()
        return tuple(sorted({str(v) for v in table[name].to_pylist() if v is not None}))

    def complete(col: str) -> bool:  # every train row has a non-empty value
        if masks is None or col not in masks.column_names:
            return False
        values = masks[col].filter(pc.equal(masks["split"], "train"))
        if values.null_count or pa.types.is_null(values.type):
            return False
        return bool(pc.all(pc.greater(pc.binary_length(values), 0)).as_py())

    detectors = distinct("detector")
    if complete("mask_png"):
        true_mask = "mask_png"
    elif detectors == (TRUTH_DETECTOR,):  # the pipeline run with mask_source="truth"
        true_mask = "foreground"
    elif complete("mask_uri"):
        true_mask = "mask_uri"
    else:
        true_mask = None

    if "height" in table.column_names and table["height"].null_count == 0:
        size = int(table["height"][0].as_py())
    else:
        first = _read_table(files[:1], s3, ["foreground_png"])["foreground_png"][0].as_py()
        try:
            size = int(decode_image(first).shape[0])
        except AbsRayError as exc:
            raise DatasetError(f"{files[0]}: first foreground_png is unreadable: {exc}") from exc

    rows = sorted(
        zip(
            table["id"].cast(pa.string()).to_pylist(),
            labels.tolist(),
            split.tolist(),
            (groups_col.tolist() if groups_col is not None else [None] * len(split)),
            strict=True,
        )
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\t".join(map(str, row)) + "\n").encode())
    manifest_uri = join(root, "manifest.json")
    manifest_sha = (
        hashlib.sha256(read_bytes(manifest_uri, s3)).hexdigest()
        if exists(manifest_uri, s3)
        else None
    )
    return DatasetInfo(
        uri=folder,
        root=root,
        files=files,
        counts=counts,
        num_classes=int(labels.max()) + 1,
        groups=groups,
        image_size=size,
        columns=tuple(sorted(schema_names)),
        true_mask_column=true_mask,
        detectors=detectors,
        code_versions=distinct("code_version"),
        rows_sha256=digest.hexdigest(),
        manifest_sha256=manifest_sha,
    )


# --- decoding (Ray Data map_batches) ----------------------------------------------------------


def _resized(pixels: np.ndarray, size: int, mask: bool) -> np.ndarray:
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    img = Image.fromarray(pixels)
    return np.asarray(img.resize((size, size), Image.NEAREST if mask else Image.BILINEAR))


def _true_mask(batch: dict[str, np.ndarray], i: int, source: str, s3: S3Options | None):
    if source == "mask_png":
        data = batch["mask_png"][i]
    else:
        data = read_bytes(str(batch["mask_uri"][i]), s3)
    pixels = decode_image(bytes(data))[..., 0]
    return np.where(pixels >= 128, 255, 0).astype(np.uint8)


def _shard_of(ids: np.ndarray, world: int) -> np.ndarray:
    return np.array([zlib.crc32(str(i).encode()) % world for i in ids], dtype=np.int64)


def decode_rows(
    batch: dict[str, np.ndarray],
    *,
    size: int,
    train: bool,
    mask_source: str = "foreground",
    rank: int = 0,
    world: int = 1,
    s3: S3Options | None = None,
) -> dict[str, np.ndarray]:
    """Decode a batch of disentangled rows to fixed-size arrays (a Ray Data batch function).

    Args:
        batch: numpy batch with ``id, label, foreground_png`` (and ``background_png`` when
            ``train``, ``group`` if the data set has one, the true-mask column for oracle).
        size: output side; other sizes are resized (bilinear, masks nearest).
        train: also decode ``alpha`` and ``background`` (for the swap).
        mask_source: ``"foreground"`` (the PNG's alpha: the detector's tight mask),
            ``"mask_png"`` or ``"mask_uri"`` (true masks, for ``oracle``).
        rank: keep only the rows of this evaluation shard (``crc32(id) % world == rank``).
        world: number of evaluation shards (1 keeps every row).
        s3: S3 settings to read ``mask_uri`` files.

    Returns:
        The columns of the module table for the kept rows (``split_code`` when not
        ``train``); a row whose PNG cannot be decoded is dropped with a warning.

    Raises:
        ConfigError: unknown ``mask_source``.
    """
    if mask_source not in ("foreground", "mask_png", "mask_uri"):
        raise ConfigError(
            f"mask_source must be foreground, mask_png or mask_uri, got {mask_source!r}"
        )
    ids = np.asarray(batch["id"])
    keep = np.arange(len(ids))
    if world > 1:
        keep = keep[_shard_of(ids[keep], world) == rank]
    images, alphas, backgrounds, labels, groups, codes = [], [], [], [], [], []
    group_col = batch.get("group")
    split_col = batch.get("split")
    for i in keep:
        try:
            rgba = decode_image(bytes(batch["foreground_png"][i]), alpha=True)
            image = _resized(np.ascontiguousarray(rgba[..., :3]), size, mask=False)
            if train:
                if mask_source == "foreground":
                    alpha = np.where(rgba[..., 3] >= 128, 255, 0).astype(np.uint8)
                else:
                    alpha = _true_mask(batch, int(i), mask_source, s3)
                alpha = _resized(alpha, size, mask=True)
                background = _resized(
                    decode_image(bytes(batch["background_png"][i])), size, mask=False
                )
        except (AbsRayError, OSError) as exc:
            logger.warning("dropping row %s: %s", ids[i], exc)
            continue
        images.append(image)
        if train:
            alphas.append(alpha)
            backgrounds.append(background)
        labels.append(int(batch["label"][i]))
        g = group_col[i] if group_col is not None else None
        groups.append(-1 if g is None or (isinstance(g, float) and np.isnan(g)) else int(g))
        codes.append(SPLIT_CODES.get(str(split_col[i]), -1) if split_col is not None else -1)
    out = {
        "image": np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8),
        "label": np.asarray(labels, dtype=np.int64),
        "group": np.asarray(groups, dtype=np.int64),
    }
    if not train:
        out["split_code"] = np.asarray(codes, dtype=np.int64)
    if train:
        out["alpha"] = np.stack(alphas) if alphas else np.zeros((0, size, size), np.uint8)
        out["background"] = (
            np.stack(backgrounds) if backgrounds else np.zeros((0, size, size, 3), np.uint8)
        )
    return out


def eval_dataset_name(rank: int) -> str:
    """Name of a worker's evaluation dataset (its share of val and test), e.g. ``eval_1``."""
    return f"eval_{rank}"


def build_datasets(
    info: DatasetInfo,
    *,
    size: int,
    world: int,
    mask_source: str = "foreground",
    decode_num_cpus: float = 0.25,
    seed: int = 0,
    s3: S3Options | None = None,
) -> dict[str, Any]:
    """Ray Data pipelines for the trainer: ``train`` (split over the workers by Ray Train) and,
    per worker ``r``, ``eval_r``: that worker's share of the val and test rows.

    Evaluation shards are made by id hash rather than by Ray's equal split, which may drop
    rows to equalise the shards: every val/test row is evaluated exactly once. Workers decode
    their share once and keep it in memory for the following epochs.

    Args:
        info: from :func:`scan_disentangled`.
        size: decoded image side.
        world: number of training workers.
        mask_source: see :func:`decode_rows`.
        decode_num_cpus: logical CPUs per decoding task.
        seed: block-order shuffle seed of the train set.
        s3: S3 settings.

    Returns:
        ``{name: ray.data.Dataset}``.
    """
    import ray
    from ray.data.expressions import col

    fs, _ = resolve(info.files[0], s3)
    paths = [resolve(f, s3)[1] for f in info.files]
    light = [c for c in ("id", "label", "split", "group") if c in info.columns]

    def read(split: str | tuple[str, ...], columns: list[str]):
        # Reads are I/O: a fraction of a CPU each, like the decoding, so that on a small box
        # they run beside the training workers instead of queueing for a whole CPU.
        ds = ray.data.read_parquet(paths, filesystem=fs, num_cpus=decode_num_cpus)
        ds = ds.select_columns([*light, *columns])
        splits = (split,) if isinstance(split, str) else split
        return ds.filter(expr=col("split").is_in(list(splits)), num_cpus=decode_num_cpus)

    train_cols = ["foreground_png", "background_png"]
    if mask_source != "foreground":
        train_cols.append(mask_source)
    datasets = {
        "train": read("train", train_cols)
        .randomize_block_order(seed=seed)
        .map_batches(
            decode_rows,
            fn_kwargs={"size": size, "train": True, "mask_source": mask_source, "s3": s3},
            batch_size=32,
            num_cpus=decode_num_cpus,
        )
    }
    for rank in range(world):
        datasets[eval_dataset_name(rank)] = read(("val", "test"), ["foreground_png"]).map_batches(
            decode_rows,
            fn_kwargs={"size": size, "train": False, "rank": rank, "world": world},
            batch_size=64,
            num_cpus=decode_num_cpus,
        )
    return datasets


# --- writing a disentangled set from generated samples ------------------------------------------


def _patch_alpha(mask: np.ndarray, grid: int, coverage: float) -> np.ndarray:
    import torch

    from abs_ray.ops import mask_to_patch_labels, upsample_patch_grid

    m = torch.from_numpy(mask >= 128).float()[None, None]
    labels = mask_to_patch_labels(m, grid, coverage)
    up = upsample_patch_grid(labels, tuple(mask.shape))
    return (up[0, 0].numpy() * 255).astype(np.uint8)


def write_disentangled_from_samples(
    samples: Iterable[Any],
    out: str,
    s3: S3Options | None = None,
    *,
    alpha: str = "true",
    grid: int = 8,
    coverage: float = 0.25,
    rows_per_file: int = 256,
) -> dict[str, Any]:
    """Write generated samples as a disentangled data set, without detector or inpainter.

    Each :class:`~abs_ray.data.Sample` (e.g. from :func:`abs_ray.data.generate_synthetic`)
    becomes one row of the pipeline's schema: ``foreground_png`` = the image with ``alpha``
    as its alpha channel, ``background_png`` = the sample's clean background (an oracle
    inpainting), plus ``mask_png`` = the true mask, which ``oracle`` training reads.

    Args:
        samples: samples with ``image``, ``mask`` and ``background``.
        out: output folder; rows go to ``<out>/data/part-NNNNN.parquet`` and a small
            ``<out>/manifest.json`` is written.
        s3: S3 settings.
        alpha: ``"true"`` (the true mask) or ``"patch"``: the true mask coarsened to a
            ``grid x grid`` patch grid at ``coverage`` (what a perfect patch detector gives).
        grid: patch grid for ``alpha="patch"``.
        coverage: foreground coverage threshold for ``alpha="patch"``.
        rows_per_file: rows per Parquet file.

    Returns:
        The summary written to ``manifest.json`` (counts per split, alpha mode).

    Raises:
        ConfigError: unknown ``alpha``, or a sample without a background.
    """
    if alpha not in ("true", "patch"):
        raise ConfigError(f"alpha must be 'true' or 'patch', got {alpha!r}")
    detector = "true-mask" if alpha == "true" else f"patch-grid-{grid}-coverage-{coverage}"
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    part = 0

    def flush() -> None:
        nonlocal part
        if rows:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows), buf)
            write_bytes(join(out, "data", f"part-{part:05d}.parquet"), buf.getvalue(), s3)
            part += 1
            rows.clear()

    for s in samples:
        if s.background is None:
            raise ConfigError(f"sample {s.name!r} has no background")
        a = s.mask if alpha == "true" else _patch_alpha(s.mask, grid, coverage)
        h, w = s.image.shape[:2]
        rows.append(
            {
                "id": s.name,
                "image_uri": "",
                "label": int(s.y),
                "split": s.split,
                "group": int(s.group),
                "place": int(s.place),
                "mask_uri": None,
                "foreground_png": encode_png(np.concatenate([s.image, a[..., None]], axis=-1)),
                "background_png": encode_png(s.background),
                "mask_png": encode_png(s.mask),
                "patch_prob": None,
                "detector": detector,
                "inpainter": "clean-background",
                "code_version": "",
                "height": h,
                "width": w,
            }
        )
        counts[s.split] = counts.get(s.split, 0) + 1
        if len(rows) >= rows_per_file:
            flush()
    flush()
    summary = {
        "generator": "write_disentangled_from_samples",
        "alpha": alpha,
        "detector_checkpoint": detector,
        "counts": counts,
    }
    write_text(join(out, "manifest.json"), json.dumps(summary, indent=2, sort_keys=True), s3)
    return summary
