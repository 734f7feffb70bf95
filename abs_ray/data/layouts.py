"""Data set layouts read into the one manifest (see :mod:`abs_ray.data.manifest`).

Layouts, local or in object storage:

- **Waterbirds** (Sagawa et al.): ``root/metadata.csv`` with columns ``img_filename, y,
  split, place`` (split 0/1/2 = train/val/test), image paths relative to ``root``; an
  optional ``mask_filename`` column gives foreground masks. Group = ``y * 2 + place``.
- **Manifest**: ``root/manifest.parquet`` or ``root/manifest.csv`` with the manifest columns.
- **Class folders**: ``root/<class>/<image>`` (all split ``train``) or
  ``root/<split>/<class>/<image>`` with split in train/val/test; class names sorted give the
  label indices.

:func:`load_dataset` detects which one a location holds. :func:`write_waterbirds` writes
generated samples (synthetic or birds benchmark) in the Waterbirds layout, with masks.

Example:
    >>> import tempfile
    >>> import numpy as np
    >>> root = tempfile.mkdtemp()
    >>> samples = [Sample("a", "train", 1, 1, np.zeros((8, 8, 3), np.uint8),
    ...                   np.zeros((8, 8), np.uint8))]
    >>> _ = write_waterbirds(root, samples)
    >>> df = load_dataset(root)
    >>> df[["id", "label", "split", "group", "place"]].values.tolist()
    [['images/a.png', 1, 'train', 3, 1]]
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from abs_ray.data._parse import parse_int_column, parse_str_column, require_columns
from abs_ray.data.files import list_image_files
from abs_ray.data.manifest import REQUIRED_COLUMNS, SPLITS, read_manifest_file, validate_manifest
from abs_ray.errors import ConfigError, DatasetError, LayoutError, StorageNotFoundError
from abs_ray.io import (
    S3Options,
    encode_jpeg,
    encode_png,
    exists,
    is_remote,
    join,
    read_bytes,
    write_bytes,
    write_text,
)

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "WATERBIRDS_COLUMNS",
    "Sample",
    "load_dataset",
    "read_class_folders",
    "read_waterbirds",
    "write_waterbirds",
]

#: Columns a Waterbirds ``metadata.csv`` must have.
WATERBIRDS_COLUMNS: tuple[str, ...] = ("img_filename", "y", "split", "place")
#: Image file suffixes recognised in class folders.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
)
_SPLIT_CODES = {0: "train", 1: "val", 2: "test"}
_MANIFEST_NAMES = ("manifest.parquet", "manifest.csv")


def _relative_parts(uri: str, root: str) -> list[str]:
    """Path parts of ``uri`` below ``root`` (both from :func:`list_files` / :func:`join`)."""
    if is_remote(root):
        rel = uri[len(root.rstrip("/")) + 1 :]
        return rel.split("/")
    return os.path.relpath(uri, root).split(os.sep)


def _root(uri: str) -> str:
    return str(uri).rstrip("/") if is_remote(uri) else os.path.abspath(os.path.expanduser(str(uri)))


def read_waterbirds(root_uri: str, s3: S3Options | None = None) -> pd.DataFrame:
    """Read a Waterbirds-layout folder into a manifest.

    Args:
        root_uri: folder (local or ``s3://``) holding ``metadata.csv``; ``img_filename``
            (and ``mask_filename``, when present) are relative to it.
        s3: S3 settings; default from the environment.

    Returns:
        Manifest with ``id = img_filename``, ``label = y``, ``place``, ``group = y * 2 +
        place``, split 0/1/2 mapped to train/val/test, ``mask_uri`` from ``mask_filename``
        (missing when the column is absent or the cell empty). Other columns are dropped.

    Raises:
        StorageNotFoundError: ``metadata.csv`` does not exist.
        DatasetError: ``metadata.csv`` is not parseable CSV.
        ManifestRowError: a required column is missing, or a row has a non-integer ``y`` /
            ``place``, a ``split`` other than 0/1/2, an empty or duplicate ``img_filename``;
            the message names the file, the 1-based data row and the value.
    """
    root = _root(root_uri)
    meta_uri = join(root, "metadata.csv")
    data = read_bytes(meta_uri, s3)
    try:
        meta = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{meta_uri}: cannot parse as CSV: {exc}") from exc
    meta.columns = [str(c).strip() for c in meta.columns]
    require_columns(meta.columns, WATERBIRDS_COLUMNS, meta_uri)
    names = parse_str_column(meta["img_filename"], "img_filename", meta_uri)
    y = parse_int_column(meta["y"], "y", meta_uri, minimum=0)
    place = parse_int_column(meta["place"], "place", meta_uri, minimum=0)
    split = parse_int_column(meta["split"], "split", meta_uri, allowed=tuple(_SPLIT_CODES))
    if "mask_filename" in meta.columns:
        masks = parse_str_column(meta["mask_filename"], "mask_filename", meta_uri, nullable=True)
        mask_uri = masks.map(lambda m: join(root, m) if isinstance(m, str) else pd.NA)
    else:
        mask_uri = pd.Series([pd.NA] * len(meta))
    df = pd.DataFrame(
        {
            "id": names,
            "image_uri": names.map(lambda n: join(root, n)),
            "label": y,
            "split": split.map(_SPLIT_CODES),
            "group": y * 2 + place,
            "place": place,
            "mask_uri": mask_uri,
        }
    )
    df = validate_manifest(df, source=meta_uri)
    logger.info("read Waterbirds layout %s: %d rows", root, len(df))
    return df


def read_class_folders(root_uri: str, s3: S3Options | None = None) -> pd.DataFrame:
    """Read ``root/<class>/<image>`` or ``root/<split>/<class>/<image>`` into a manifest.

    Class names, sorted, give label indices (the same across splits). Files whose names do
    not end in an image suffix (:data:`IMAGE_SUFFIXES`) or start with ``.`` are ignored.
    Locally, anything named like an image is a row, even a directory, pipe or link (reading
    it then gives a typed per-row error), and linked folders are not descended (see
    :mod:`abs_ray.data.files`).

    Args:
        root_uri: folder, local or ``s3://``.
        s3: S3 settings; default from the environment.

    Returns:
        Manifest with ``id`` = path relative to the root (``/``-separated), ``split`` =
        ``train`` for the two-level layout, ``group`` / ``place`` / ``mask_uri`` missing.
        Extra column ``class_name``.

    Raises:
        StorageNotFoundError: the folder does not exist.
        LayoutError: no images, images at mixed depths, images directly in the root, a
            three-level layout whose top folders are not train/val/test, or a two-level
            layout whose folders are all split names (images without class folders).
    """
    root = _root(root_uri)
    files = [
        f
        for f in list_image_files(root, IMAGE_SUFFIXES, s3=s3)
        if not any(p.startswith(".") for p in _relative_parts(f, root))
    ]
    if not files:
        raise LayoutError(
            f"{root}: no image files ({', '.join(IMAGE_SUFFIXES)}) found in class folders"
        )
    parts = [_relative_parts(f, root) for f in files]
    depths = sorted({len(p) for p in parts})
    if len(depths) != 1 or depths[0] not in (2, 3):
        examples = {d: "/".join(next(p for p in parts if len(p) == d)) for d in depths}
        raise LayoutError(
            f"{root}: class folders need every image at root/<class>/<image> or "
            f"root/<split>/<class>/<image>; found images at depths {examples}"
        )
    if depths[0] == 3:
        tops = sorted({p[0] for p in parts})
        if not set(tops) <= set(SPLITS):
            raise LayoutError(
                f"{root}: three-level class folders need split folders {list(SPLITS)} on top, got {tops}"
            )
        splits, classes = [p[0] for p in parts], [p[1] for p in parts]
    else:
        classes = [p[0] for p in parts]
        if set(classes) <= set(SPLITS):
            raise LayoutError(
                f"{root}: folders {sorted(set(classes))} look like splits with images directly "
                f"inside; expected root/<split>/<class>/<image>"
            )
        splits = ["train"] * len(parts)
    names = sorted(set(classes))
    index = {name: i for i, name in enumerate(names)}
    df = pd.DataFrame(
        {
            "id": ["/".join(p) for p in parts],
            "image_uri": files,
            "label": [index[c] for c in classes],
            "split": splits,
            "group": pd.array([pd.NA] * len(files), dtype="Int64"),
            "place": pd.array([pd.NA] * len(files), dtype="Int64"),
            "mask_uri": pd.array([pd.NA] * len(files), dtype="string"),
            "class_name": classes,
        }
    )
    df = validate_manifest(df, source=root)
    logger.info("read class folders %s: %d images, %d classes", root, len(df), len(names))
    return df


def load_dataset(uri: str, s3: S3Options | None = None) -> pd.DataFrame:
    """Read any supported layout into a manifest, detecting which one ``uri`` holds.

    Detection, in order: a ``.csv`` / ``.parquet`` file (``metadata.csv`` → Waterbirds,
    else a manifest file); a folder with ``metadata.csv`` → Waterbirds; with
    ``manifest.parquet`` or ``manifest.csv`` → manifest; with images in sub-folders → class
    folders.

    Args:
        uri: folder or file, local or ``s3://``.
        s3: S3 settings; default from the environment.

    Returns:
        The manifest (see :mod:`abs_ray.data.manifest`).

    Raises:
        StorageNotFoundError: nothing exists at ``uri``.
        LayoutError: no known layout; the message lists what was looked for.
        ManifestRowError: the layout's metadata has a missing column or a bad row.
    """
    uri = str(uri)
    lowered = uri.lower()
    if lowered.endswith((".csv", ".parquet")):
        if posixpath.basename(lowered.replace(os.sep, "/")) == "metadata.csv":
            return read_waterbirds(uri[: -len("metadata.csv")] or ".", s3)
        return read_manifest_file(uri, s3)
    root = _root(uri)
    if not exists(root, s3):
        raise StorageNotFoundError(f"{uri} does not exist")
    if exists(join(root, "metadata.csv"), s3):
        return read_waterbirds(root, s3)
    for name in _MANIFEST_NAMES:
        if exists(join(root, name), s3):
            return read_manifest_file(join(root, name), s3)
    try:
        return read_class_folders(root, s3)
    except LayoutError as exc:
        raise LayoutError(
            f"{uri}: no known data set layout. Looked for: metadata.csv (Waterbirds: "
            f"img_filename,y,split,place), {' / '.join(_MANIFEST_NAMES)} (manifest with columns "
            f"{','.join(REQUIRED_COLUMNS)}, optionally group,place,mask_uri), images in "
            f"<class>/ or <split>/<class>/ folders "
            f"(class folders: {exc})"
        ) from exc


@dataclasses.dataclass(frozen=True)
class Sample:
    """One generated sample, ready to write in the Waterbirds layout.

    Attributes:
        name: file stem, unique in the data set (e.g. ``"train_00012"``).
        split: ``train``, ``val`` or ``test``.
        y: class index (Waterbirds: 0 = landbird, 1 = waterbird).
        place: background type (Waterbirds: 0 = land, 1 = water).
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) uint8, 255 = foreground, 0 = background.
        background: (H, W, 3) uint8 RGB, the image without its foreground (an oracle
            inpainting), or None.
        meta: extra metadata columns (e.g. which photo, scale, position), JSON-able scalars.
    """

    name: str
    split: str
    y: int
    place: int
    image: np.ndarray
    mask: np.ndarray
    background: np.ndarray | None = None
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def group(self) -> int:
        """Waterbirds group ``y * 2 + place``."""
        return self.y * 2 + self.place


def write_waterbirds(
    root_uri: str,
    samples: Iterable[Sample],
    s3: S3Options | None = None,
    *,
    image_format: str = "png",
    jpeg_quality: int = 95,
    backgrounds: bool = True,
    config: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Write samples in the Waterbirds layout, with masks, readable by :func:`load_dataset`.

    Writes ``images/<name>.<ext>``, ``masks/<name>.png``, ``backgrounds/<name>.<ext>`` (when
    ``backgrounds`` and the sample has one), ``metadata.csv`` (``img_filename, y, split,
    place, mask_filename`` [, ``background_filename``], then the samples' ``meta`` keys)
    and, when given, ``config.json``.

    Args:
        root_uri: destination folder, local or ``s3://``.
        samples: samples with unique names.
        s3: S3 settings; default from the environment.
        image_format: ``"png"`` (lossless: image equals background outside the mask) or
            ``"jpg"`` (about 4x smaller).
        jpeg_quality: JPEG quality 1-100.
        backgrounds: also write each sample's clean background.
        config: the resolved generator config, written as ``config.json``.

    Returns:
        The metadata table as written.

    Raises:
        ConfigError: unknown ``image_format``, a duplicate name, or a sample whose arrays
            have the wrong shape or dtype.
        StorageError: a write fails.
    """
    if image_format not in ("png", "jpg"):
        raise ConfigError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    root = _root(root_uri)

    def encode(array: np.ndarray) -> bytes:
        return (
            encode_png(array) if image_format == "png" else encode_jpeg(array, quality=jpeg_quality)
        )

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.name in seen:
            raise ConfigError(f"duplicate sample name {sample.name!r}")
        seen.add(sample.name)
        if sample.split not in SPLITS:
            raise ConfigError(
                f"sample {sample.name!r}: split must be one of {list(SPLITS)}, got {sample.split!r}"
            )
        height, width = sample.image.shape[:2]
        if sample.image.shape != (height, width, 3) or sample.mask.shape != (height, width):
            raise ConfigError(
                f"sample {sample.name!r}: image must be (H, W, 3) and mask (H, W), got "
                f"{sample.image.shape} and {sample.mask.shape}"
            )
        row: dict[str, Any] = {
            "img_filename": f"images/{sample.name}.{image_format}",
            "y": int(sample.y),
            "split": {v: k for k, v in _SPLIT_CODES.items()}[sample.split],
            "place": int(sample.place),
            "mask_filename": f"masks/{sample.name}.png",
        }
        write_bytes(join(root, row["img_filename"]), encode(sample.image), s3)
        write_bytes(join(root, row["mask_filename"]), encode_png(sample.mask), s3)
        if backgrounds and sample.background is not None:
            row["background_filename"] = f"backgrounds/{sample.name}.{image_format}"
            write_bytes(join(root, row["background_filename"]), encode(sample.background), s3)
        row.update(sample.meta)
        rows.append(row)
    meta = pd.DataFrame(rows)
    write_bytes(join(root, "metadata.csv"), meta.to_csv(index=False).encode("utf-8"), s3)
    if config is not None:
        write_text(
            join(root, "config.json"), json.dumps(dict(config), indent=2, sort_keys=True) + "\n", s3
        )
    logger.info("wrote %d samples in the Waterbirds layout to %s", len(rows), root)
    return meta
