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
    exists,
    join,
    list_files,
    read_bytes,
    resolve,
)
from abs_ray.train.from_samples import write_disentangled_from_samples

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
    files = _parquet_files(uri, folder, s3)
    schema_names = _check_columns(folder, files, s3)
    table = _read_table(files, s3, [*_META_COLUMNS, "height"])
    if table.num_rows == 0:
        raise DatasetError(f"{folder}: the data set has no rows")
    split, labels, counts = _split_counts(folder, table)
    groups = (
        table["group"].to_numpy(zero_copy_only=False) if "group" in table.column_names else None
    )
    detectors = _distinct(table, "detector")
    return DatasetInfo(
        uri=folder,
        root=root,
        files=files,
        counts=counts,
        num_classes=int(labels.max()) + 1,
        groups=_group_counts(split, groups, counts),
        image_size=_image_size(table, files, s3),
        columns=tuple(sorted(schema_names)),
        true_mask_column=_true_mask_column(files, s3, schema_names, detectors),
        detectors=detectors,
        code_versions=_distinct(table, "code_version"),
        rows_sha256=_rows_digest(table, labels, split, groups),
        manifest_sha256=_manifest_digest(root, s3),
    )


def _parquet_files(uri: str, folder: str, s3: S3Options | None) -> tuple[str, ...]:
    """The Parquet file URIs under ``folder``, sorted; raises if there are none."""
    try:
        files = tuple(list_files(folder, suffixes=[".parquet"], s3=s3))
    except StorageNotFoundError as exc:
        raise StorageNotFoundError(f"no disentangled data set at {uri}: {exc}") from exc
    if not files:
        raise DatasetError(f"no Parquet files under {folder}: expected the pipeline's data/")
    return files


def _check_columns(folder: str, files: tuple[str, ...], s3: S3Options | None) -> set[str]:
    """Every column name in the files' schemas (footers only); raises if a required one is
    missing from all of them."""
    fs, _ = resolve(files[0], s3)
    names: set[str] = set()
    for f in files:
        with fs.open_input_file(resolve(f, s3)[1]) as handle:
            names |= set(pq.read_schema(handle).names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DatasetError(
            f"{folder}: missing column(s) {', '.join(missing)}; a disentangled data set has "
            f"{', '.join(REQUIRED_COLUMNS)} (and group, mask_uri, detector, ...)"
        )
    return names


def _split_counts(folder: str, table: pa.Table) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """``(split per row (str), label per row, rows per split)``; raises on labels below 0 or
    of a non-integer type, and when there are no train rows."""
    split = table["split"].to_numpy(zero_copy_only=False).astype(str)
    labels = table["label"].to_numpy(zero_copy_only=False)
    if labels.dtype.kind not in "iu" or labels.min() < 0:
        raise DatasetError(f"{folder}: labels must be integers >= 0, got dtype {labels.dtype}")
    counts = {s: int((split == s).sum()) for s in sorted(set(split.tolist()))}
    if not counts.get("train"):
        raise DatasetError(f"{folder}: no train rows (splits found: {counts})")
    return split, labels, counts


def _group_counts(
    split: np.ndarray, groups: np.ndarray | None, counts: dict[str, int]
) -> dict[str, dict[int, int]]:
    """Per split, ``{group: rows}`` over the rows with a group label (not null, ``>= 0``)."""
    out: dict[str, dict[int, int]] = {}
    for s in counts:
        if groups is None:
            out[s] = {}
            continue
        g = np.asarray(groups[split == s], dtype=np.float64)
        g = g[~np.isnan(g)].astype(np.int64)
        values, n = np.unique(g, return_counts=True)
        out[s] = {int(v): int(c) for v, c in zip(values, n, strict=True) if v >= 0}
    return out


def _distinct(table: pa.Table, name: str) -> tuple[str, ...]:
    """The sorted distinct non-null values of column ``name`` as strings (``()`` if absent)."""
    if name not in table.column_names:
        return ()
    return tuple(sorted({str(v) for v in table[name].to_pylist() if v is not None}))


def _true_mask_column(
    files: tuple[str, ...], s3: S3Options | None, names: set[str], detectors: tuple[str, ...]
) -> str | None:
    """Where ``oracle`` finds true masks (see :attr:`DatasetInfo.true_mask_column`): an inline
    ``mask_png`` every train row has, the foreground itself when the pipeline cut with true
    masks, a ``mask_uri`` every train row has, else None."""
    mask_cols = [c for c in ("mask_png", "mask_uri") if c in names]
    masks = _read_table(files, s3, ["split", *mask_cols]) if mask_cols else None

    def complete(col: str) -> bool:  # every train row has a non-empty value
        if masks is None or col not in masks.column_names:
            return False
        values = masks[col].filter(pc.equal(masks["split"], "train"))
        if values.null_count or pa.types.is_null(values.type):
            return False
        return bool(pc.all(pc.greater(pc.binary_length(values), 0)).as_py())

    if complete("mask_png"):
        return "mask_png"
    if detectors == (TRUTH_DETECTOR,):  # the pipeline run with mask_source="truth"
        return "foreground"
    if complete("mask_uri"):
        return "mask_uri"
    return None


def _image_size(table: pa.Table, files: tuple[str, ...], s3: S3Options | None) -> int:
    """The stored images' side: the ``height`` column, else the first foreground decoded."""
    if "height" in table.column_names and table["height"].null_count == 0:
        return int(table["height"][0].as_py())
    first = _read_table(files[:1], s3, ["foreground_png"])["foreground_png"][0].as_py()
    try:
        return int(decode_image(first).shape[0])
    except AbsRayError as exc:
        raise DatasetError(f"{files[0]}: first foreground_png is unreadable: {exc}") from exc


def _rows_digest(
    table: pa.Table, labels: np.ndarray, split: np.ndarray, groups: np.ndarray | None
) -> str:
    """SHA-256 of the sorted ``(id, label, split, group)`` rows, one tab-separated line each."""
    rows = sorted(
        zip(
            table["id"].cast(pa.string()).to_pylist(),
            labels.tolist(),
            split.tolist(),
            (groups.tolist() if groups is not None else [None] * len(split)),
            strict=True,
        )
    )
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\t".join(map(str, row)) + "\n").encode())
    return digest.hexdigest()


def _manifest_digest(root: str, s3: S3Options | None) -> str | None:
    """SHA-256 of ``<root>/manifest.json``, or None when there is none."""
    uri = join(root, "manifest.json")
    return hashlib.sha256(read_bytes(uri, s3)).hexdigest() if exists(uri, s3) else None


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
    columns: dict[str, list] = {k: [] for k in ("image", "alpha", "background")}
    labels, groups, codes = [], [], []
    group_col = batch.get("group")
    split_col = batch.get("split")
    for i in keep:
        try:
            pixels = _decode_row(batch, int(i), size, train, mask_source, s3)
        except (AbsRayError, OSError) as exc:
            logger.warning("dropping row %s: %s", ids[i], exc)
            continue
        for name, array in pixels.items():
            columns[name].append(array)
        labels.append(int(batch["label"][i]))
        g = group_col[i] if group_col is not None else None
        groups.append(-1 if g is None or (isinstance(g, float) and np.isnan(g)) else int(g))
        codes.append(SPLIT_CODES.get(str(split_col[i]), -1) if split_col is not None else -1)
    shapes = {"image": (size, size, 3), "alpha": (size, size), "background": (size, size, 3)}
    stacked = {
        k: np.stack(v) if v else np.zeros((0, *shapes[k]), np.uint8) for k, v in columns.items()
    }
    out = {
        "image": stacked["image"],
        "label": np.asarray(labels, dtype=np.int64),
        "group": np.asarray(groups, dtype=np.int64),
    }
    if not train:
        out["split_code"] = np.asarray(codes, dtype=np.int64)
    if train:
        out["alpha"], out["background"] = stacked["alpha"], stacked["background"]
    return out


def _decode_row(
    batch: dict[str, np.ndarray],
    i: int,
    size: int,
    train: bool,
    mask_source: str,
    s3: S3Options | None,
) -> dict[str, np.ndarray]:
    """Row ``i``'s pixels at ``size``: ``image`` ``(S, S, 3)`` and, when ``train``, ``alpha``
    ``(S, S)`` in ``{0, 255}`` and ``background`` ``(S, S, 3)``, all uint8.

    Raises:
        AbsRayError, OSError: a PNG or mask file that cannot be read or decoded.
    """
    rgba = decode_image(bytes(batch["foreground_png"][i]), alpha=True)
    out = {"image": _resized(np.ascontiguousarray(rgba[..., :3]), size, mask=False)}
    if train:
        if mask_source == "foreground":
            alpha = np.where(rgba[..., 3] >= 128, 255, 0).astype(np.uint8)
        else:
            alpha = _true_mask(batch, i, mask_source, s3)
        out["alpha"] = _resized(alpha, size, mask=True)
        background = decode_image(bytes(batch["background_png"][i]))
        out["background"] = _resized(background, size, mask=False)
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
