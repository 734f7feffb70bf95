"""The one manifest every data set layout is read into.

A manifest is a pandas DataFrame with one row per image and these columns
(:data:`MANIFEST_COLUMNS`):

========== ================ ===============================================================
column     dtype            meaning
========== ================ ===============================================================
id         string           unique sample id (Waterbirds: ``img_filename``)
image_uri  string           full URI of the image: absolute local path or ``s3://...``
label      int64            class index, ``>= 0``
split      string           ``train``, ``val`` or ``test``
group      Int64 (nullable) spurious-correlation group (Waterbirds: ``y * 2 + place``)
place      Int64 (nullable) background type (Waterbirds: 0 = land, 1 = water)
mask_uri   string, nullable foreground mask PNG (255 = foreground), same size as the image
========== ================ ===============================================================

Extra columns are kept after these. Manifests are stored as CSV or Parquet (chosen by the
file suffix), locally or in object storage; URIs in a stored manifest may be relative to
the manifest's folder, which makes a data set folder relocatable.

Example:
    >>> import os, tempfile
    >>> df = pd.DataFrame({"id": ["a"], "image_uri": ["/data/a.png"], "label": [1],
    ...                    "split": ["train"], "group": [None], "place": [None],
    ...                    "mask_uri": [None]})
    >>> df = validate_manifest(df, source="example")
    >>> [str(t) for t in df.dtypes]
    ['string', 'string', 'int64', 'string', 'Int64', 'Int64', 'string']
    >>> uri = os.path.join(tempfile.mkdtemp(), "manifest.parquet")
    >>> write_manifest(df, uri)
    >>> read_manifest_file(uri).equals(df)
    True
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import os
import posixpath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from abs_ray.data._parse import parse_int_column, parse_str_column, require_columns, row_error
from abs_ray.errors import ConfigError, DatasetError
from abs_ray.io import S3Options, is_remote, read_bytes, write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_SCHEMA",
    "MANIFEST_SUFFIXES",
    "SPLITS",
    "hash_val_split",
    "manifest_to_arrow",
    "read_manifest_file",
    "resolve_relative",
    "validate_manifest",
    "write_manifest",
]

#: Columns of every manifest, in order.
MANIFEST_COLUMNS: tuple[str, ...] = (
    "id",
    "image_uri",
    "label",
    "split",
    "group",
    "place",
    "mask_uri",
)
#: Arrow types of the manifest columns: what enters Ray Data and what the outputs store. The
#: optional columns keep their type when every value is missing (Arrow cannot infer a type
#: from nulls alone, and pandas' ``pd.NA`` is not convertible at all).
MANIFEST_SCHEMA: pa.Schema = pa.schema(
    [
        ("id", pa.string()),
        ("image_uri", pa.string()),
        ("label", pa.int64()),
        ("split", pa.string()),
        ("group", pa.int64()),
        ("place", pa.int64()),
        ("mask_uri", pa.string()),
    ]
)
#: Columns a stored manifest must have; the others of :data:`MANIFEST_COLUMNS` are optional
#: (a missing one is all missing values).
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "image_uri", "label", "split")
#: Allowed values of the ``split`` column.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: File suffixes a manifest can be stored as.
MANIFEST_SUFFIXES: tuple[str, ...] = (".csv", ".parquet")


def validate_manifest(df: pd.DataFrame, source: str = "<DataFrame>") -> pd.DataFrame:
    """Check a manifest and return it with canonical column order and dtypes.

    Args:
        df: DataFrame with at least :data:`REQUIRED_COLUMNS` (``group``, ``place`` and
            ``mask_uri`` are optional: all missing when absent); integer columns may hold
            integer-valued strings or floats (as read from CSV).
        source: file name or description used in error messages.

    Returns:
        A new DataFrame: :data:`MANIFEST_COLUMNS` first (dtypes as in the module table),
        then any extra columns unchanged, with a fresh ``RangeIndex``.

    Raises:
        DatasetError: ``df`` is not a DataFrame.
        ManifestRowError: a column is missing (the message says "header row"), or a row has
            a wrong type, an empty required value, a negative label, a split other than
            train/val/test, or a duplicate id; rows are 1-based data rows, header excluded.

    >>> validate_manifest(pd.DataFrame({"id": ["a"], "image_uri": ["/a.png"], "label": [0],
    ...     "split": ["dev"], "group": [None], "place": [None], "mask_uri": [None]}), "m.csv")
    Traceback (most recent call last):
    ...
    abs_ray.errors.ManifestRowError: m.csv: row 1 (1-based data row, header excluded): column 'split' must be one of ['train', 'val', 'test'], got 'dev'
    """
    if not isinstance(df, pd.DataFrame):
        raise DatasetError(
            f"{source}: a manifest must be a pandas DataFrame, got {type(df).__name__}"
        )
    require_columns(df.columns, REQUIRED_COLUMNS, source)
    df = df.reset_index(drop=True)
    for column in MANIFEST_COLUMNS:
        if column not in df.columns:
            df[column] = None
    out = pd.DataFrame(
        {
            "id": parse_str_column(df["id"], "id", source),
            "image_uri": parse_str_column(df["image_uri"], "image_uri", source),
            "label": parse_int_column(df["label"], "label", source, minimum=0).astype("int64"),
            "split": parse_str_column(df["split"], "split", source, allowed=SPLITS),
            "group": parse_int_column(df["group"], "group", source, nullable=True, minimum=0),
            "place": parse_int_column(df["place"], "place", source, nullable=True, minimum=0),
            "mask_uri": parse_str_column(df["mask_uri"], "mask_uri", source, nullable=True),
        }
    )
    duplicated = out["id"].duplicated(keep="first")
    if duplicated.any():
        row = int(duplicated.to_numpy().nonzero()[0][0])
        first = int((out["id"] == out["id"][row]).to_numpy().nonzero()[0][0])
        raise row_error(
            source, row, f"duplicate id {out['id'][row]!r} (first seen in row {first + 1})"
        )
    for column in df.columns:
        if column not in MANIFEST_COLUMNS:
            out[column] = df[column]
    return out


def _manifest_format(uri: str) -> str:
    lowered = str(uri).lower()
    for suffix in MANIFEST_SUFFIXES:
        if lowered.endswith(suffix):
            return suffix
    raise ConfigError(f"manifest file must end with one of {list(MANIFEST_SUFFIXES)}, got {uri!r}")


def _folder_of(uri: str) -> str:
    uri = str(uri)
    if is_remote(uri):
        return uri.rsplit("/", 1)[0]
    return os.path.dirname(os.path.abspath(uri))


def _is_relative(path: str) -> bool:
    return not (is_remote(path) or path.startswith("file:") or os.path.isabs(path))


def resolve_relative(path: str, folder: str) -> str:
    """Resolve a possibly relative path against a local folder or an ``s3://`` prefix.

    Absolute local paths and ``s3://`` URIs are returned unchanged.

    >>> resolve_relative("images/a.png", "s3://bucket/wb")
    's3://bucket/wb/images/a.png'
    >>> resolve_relative("../x/a.png", "/data/wb")
    '/data/x/a.png'
    >>> resolve_relative("/abs/a.png", "/data/wb")
    '/abs/a.png'
    """
    if not _is_relative(path):
        return path
    if is_remote(folder):
        bucket, _, key = folder[len("s3://") :].partition("/")
        joined = posixpath.normpath(posixpath.join("/", key, path)).lstrip("/")
        return f"s3://{bucket}/{joined}"
    return os.path.normpath(os.path.join(folder, path))


def read_manifest_file(uri: str, s3: S3Options | None = None) -> pd.DataFrame:
    """Read a manifest stored as CSV or Parquet.

    Relative ``image_uri`` / ``mask_uri`` values are resolved against the manifest's folder.

    Args:
        uri: local path or ``s3://`` URI ending in ``.csv`` or ``.parquet``.
        s3: S3 settings; default from the environment.

    Returns:
        The validated manifest (see :func:`validate_manifest`).

    Raises:
        ConfigError: the suffix is neither ``.csv`` nor ``.parquet``.
        StorageNotFoundError: the file does not exist.
        DatasetError: the file cannot be parsed as CSV / Parquet.
        ManifestRowError: a column is missing or a row is invalid (file and row named).
    """
    fmt = _manifest_format(uri)
    data = read_bytes(uri, s3)
    try:
        if fmt == ".csv":
            df = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
        else:
            df = pq.read_table(io.BytesIO(data)).to_pandas()
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        pa.ArrowException,
        UnicodeDecodeError,
    ) as exc:
        raise DatasetError(f"{uri}: cannot parse as {fmt[1:]}: {exc}") from exc
    df = validate_manifest(df, source=str(uri))
    folder = _folder_of(uri)
    for column in ("image_uri", "mask_uri"):
        df[column] = (
            df[column]
            .map(lambda v: resolve_relative(v, folder) if isinstance(v, str) else v)
            .astype("string")
        )
    logger.info("read manifest %s: %d rows", uri, len(df))
    return df


def write_manifest(
    df: pd.DataFrame, uri: str, s3: S3Options | None = None, *, relative: bool = False
) -> None:
    """Validate and write a manifest as CSV or Parquet (by the suffix of ``uri``).

    Args:
        df: manifest DataFrame (see :func:`validate_manifest`).
        uri: destination, local or ``s3://``, ending in ``.csv`` or ``.parquet``.
        s3: S3 settings; default from the environment.
        relative: store ``image_uri`` / ``mask_uri`` under the manifest's folder as paths
            relative to it, so the folder can be moved or copied to another store.

    Raises:
        ConfigError: unsupported suffix.
        ManifestRowError: ``df`` is not a valid manifest.
        StorageError: the write fails.
    """
    fmt = _manifest_format(uri)
    df = validate_manifest(df, source="manifest to write")
    if relative:
        prefix = _folder_of(uri).rstrip("/") + "/"
        for column in ("image_uri", "mask_uri"):
            df[column] = (
                df[column]
                .map(
                    lambda v: v[len(prefix) :] if isinstance(v, str) and v.startswith(prefix) else v
                )
                .astype("string")
            )
    if fmt == ".csv":
        data = df.to_csv(index=False).encode("utf-8")
    else:
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf)
        data = buf.getvalue()
    write_bytes(uri, data, s3)
    logger.info("wrote manifest %s: %d rows", uri, len(df))


def _missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _plain(values: pd.Series) -> list:
    """Python values with every kind of missing value (None, NaN, ``pd.NA``) as None."""
    return [None if _missing(v) else v for v in values.astype(object).tolist()]


def _extra_array(values: pd.Series) -> pa.Array:
    """An extra (user) column: its inferred type; all missing → string; mixed → strings."""
    plain = _plain(values)
    try:
        array = pa.array(plain)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return pa.array([None if v is None else str(v) for v in plain], pa.string())
    return array.cast(pa.string()) if pa.types.is_null(array.type) else array


def manifest_to_arrow(df: pd.DataFrame) -> pa.Table:
    """The manifest as an Arrow table with explicit types, ready for Ray Data.

    Missing values become nulls (never ``pd.NA``, which neither Arrow nor Ray Data can
    convert); :data:`MANIFEST_SCHEMA` types the manifest columns even when every value is
    missing (a data set without masks or groups); extra columns keep their inferred type, a
    column with no values becomes strings, one with mixed types strings too.

    Args:
        df: a manifest (:func:`validate_manifest` is applied).

    Returns:
        A ``pa.Table``: :data:`MANIFEST_SCHEMA` columns first, then the extra columns.

    Raises:
        ManifestRowError: ``df`` is not a valid manifest.

    >>> df = pd.DataFrame({"id": ["a"], "image_uri": ["/a.png"], "label": [0], "split": ["train"],
    ...                    "group": [pd.NA], "place": [None], "mask_uri": [pd.NA], "note": [None]})
    >>> t = manifest_to_arrow(df)
    >>> [str(f.type) for f in t.schema], t.column("mask_uri").null_count
    (['string', 'string', 'int64', 'string', 'int64', 'int64', 'string', 'string'], 1)
    """
    df = validate_manifest(df)
    arrays = [pa.array(_plain(df[f.name]), f.type) for f in MANIFEST_SCHEMA]
    names = list(MANIFEST_SCHEMA.names)
    for column in df.columns:
        if column not in MANIFEST_SCHEMA.names:
            arrays.append(_extra_array(df[column]))
            names.append(str(column))
    return pa.Table.from_arrays(arrays, names=names)


def hash_val_split(df: pd.DataFrame, fraction: float) -> tuple[pd.DataFrame, int]:
    """Move a stable share of the ``train`` rows to ``val`` (for data sets without a val split).

    A row goes to val when the first 8 bytes of ``sha256(id)``, read as a fraction of
    ``2**64``, fall below ``fraction``: the same id always lands in the same split, whatever
    the other rows, the row order or the machine. At least one row moves when there are two
    train rows or more, and at least one stays in train.

    Args:
        df: a manifest.
        fraction: share of the train rows to move, in ``(0, 1)``.

    Returns:
        ``(manifest, moved)``: a copy with the new splits, and how many rows moved.

    Raises:
        ConfigError: ``fraction`` outside ``(0, 1)``.

    >>> df = pd.DataFrame({"id": [f"img{i}.jpg" for i in range(10)], "split": ["train"] * 10})
    >>> out, moved = hash_val_split(df, 0.2)
    >>> moved, sorted(out.loc[out["split"] == "val", "id"]) == sorted(
    ...     hash_val_split(df.iloc[::-1], 0.2)[0].query("split == 'val'")["id"])
    (3, True)
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"val fraction must be in (0, 1), got {fraction}")
    out = df.copy()
    train = (out["split"].astype(str) == "train").to_numpy()
    keys = np.array(
        [
            int.from_bytes(hashlib.sha256(str(i).encode("utf-8")).digest()[:8], "big") / 2.0**64
            for i in out["id"]
        ]
    )
    to_val = train & (keys < fraction)
    n_train = int(train.sum())
    if n_train >= 2 and not to_val.any():  # tiny sets: the lowest hash goes to val
        to_val[np.flatnonzero(train)[np.argmin(keys[train])]] = True
    if n_train and to_val.sum() == n_train:  # keep one train row
        to_val[np.flatnonzero(train)[np.argmax(keys[train])]] = False
    split = out["split"].astype(object).to_numpy().copy()
    split[to_val] = "val"
    out["split"] = pd.array(split, dtype="string")
    return out, int(to_val.sum())
