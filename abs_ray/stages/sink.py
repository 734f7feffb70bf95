"""One streaming pass, two outputs: good rows to ``data/``, failed rows to ``errors/``.

Ray Data cannot fork a stream into two writes, so this datasink splits each block itself.
Every file is written whole under its final name or not at all (:func:`abs_ray.io.write_bytes`),
so an interrupted run leaves only complete files and ``--resume`` can trust every id it reads.

Writes are idempotent: a file's rows are sorted by id and its name is a hash of those ids
(:func:`part_name`), so a write task that Ray runs again (its node died during or after the
write, and the task was retried or its output reconstructed) rewrites the same objects under
the same names instead of adding a second copy of its rows.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from abs_ray.errors import StorageNotFoundError
from abs_ray.io import S3Options, delete, exists, join, list_files, read_bytes, write_bytes
from abs_ray.stages.disentangle import TIMING_PREFIX

logger = logging.getLogger(__name__)

#: Columns of an ``errors/`` record.
ERROR_RECORD_COLUMNS = ("id", "uri", "stage", "error_type", "message")
_INTERNAL = ("error_stage", "error_type", "error_message")


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def _strings(column) -> pa.Array:
    """Any column as plain Arrow strings.

    Ray Data may hand an object column back as its tensor extension type (seen for the error
    message on re-runs); ``str`` of each element is what every reader expects.
    """
    return pa.array([None if v is None else str(v) for v in column.to_pylist()], pa.string())


def _portable(table: pa.Table) -> pa.Table:
    """Replace Ray's tensor extension columns by plain fixed-size lists (readable anywhere)."""
    for i, name in enumerate(table.column_names):
        col = table[name]
        if isinstance(col.type, pa.ExtensionType) and col.num_chunks:
            arr = np.asarray(col.combine_chunks().to_numpy(zero_copy_only=False))
            arr = arr.reshape(len(arr), -1)
            flat = pa.array(arr.ravel())
            table = table.set_column(i, name, pa.FixedSizeListArray.from_arrays(flat, arr.shape[1]))
    return table


def _as_type(column: pa.ChunkedArray, wanted: pa.DataType) -> pa.Array:
    """One column as ``wanted``: numpy's NaN (how Ray Data hands back a null integer) and
    any other missing value become null; a column Ray stored as Python objects is rebuilt."""
    if column.type == wanted:
        return column.combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(len(column), wanted)
    try:
        if pa.types.is_floating(column.type) and not pa.types.is_floating(wanted):
            # NaN is how numpy (and so Ray Data) carries a missing value: null, never "nan".
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        return column.cast(wanted).combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        values = [
            None if v is None or (isinstance(v, float) and v != v) else v
            for v in column.to_pylist()
        ]
        if pa.types.is_string(wanted):
            values = [None if v is None else str(v) for v in values]
        return pa.array(values, wanted)


def with_types(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Give the columns named in ``types`` those Arrow types (the others stay as they are).

    Every output file then has one schema, whatever a block held: a block whose optional
    column (``mask_uri``, ``group``) was all missing would otherwise be written as Arrow
    ``null`` or ``double``, and readers of several files disagree about the column.

    >>> t = pa.table({"group": [float("nan"), 3.0], "mask_uri": [float("nan")] * 2,
    ...               "place": pa.nulls(2)})
    >>> with_types(t, {"group": pa.int64(), "mask_uri": pa.string(), "place": pa.int64()}).to_pydict()
    {'group': [None, 3], 'mask_uri': [None, None], 'place': [None, None]}
    """
    for i, name in enumerate(table.column_names):
        if name in types:
            table = table.set_column(i, name, _as_type(table[name], types[name]))
    return table


def error_table(table: pa.Table) -> pa.Table:
    """The ``errors/`` records of a block's failed rows (all columns strings)."""
    return pa.table(
        {
            "id": _strings(table["id"]),
            "uri": _strings(table["image_uri"]),
            "stage": _strings(table["error_stage"]),
            "error_type": _strings(table["error_type"]),
            "message": _strings(table["error_message"]),
        }
    )


def part_name(ids: Iterable) -> str:
    """The file name of an output part: a hash of its ids, independent of their order.

    >>> part_name(["b", "a"]) == part_name(["a", "b"]) != part_name(["a"])
    True
    >>> part_name(["a", "b"])
    'part-7e18f737311b2dc3b2f269dd.parquet'
    """
    digest = hashlib.sha256("\n".join(sorted(str(i) for i in ids)).encode()).hexdigest()
    return f"part-{digest[:24]}.parquet"


def empty_error_table() -> pa.Table:
    return pa.table({c: pa.array([], pa.string()) for c in ERROR_RECORD_COLUMNS})


class SplitParquetSink(Datasink):
    """Write good rows to ``<out>/data/`` and failed rows to ``<out>/errors/`` as Parquet.

    Args:
        out: output URI (local folder or ``s3://``).
        s3: S3 settings.
        constant_columns: columns added to every good row (e.g. detector and code version).
        rows_per_file: most rows in one Parquet file; each file is the unit a resume skips.
        column_types: Arrow types of input columns (the manifest's,
            :func:`abs_ray.data.manifest_to_arrow`), kept in every file (see :func:`with_types`).

    Each write task returns ``{"ok": n, "errors": n, "seconds": {stage: sum}, "rows": {stage:
    rows it processed}}``; the totals are in :attr:`result` after the write.
    """

    def __init__(
        self,
        out: str,
        s3: S3Options | None = None,
        constant_columns: dict[str, str] | None = None,
        rows_per_file: int = 512,
        column_types: dict[str, pa.DataType] | None = None,
    ):
        self.out = out
        self.rows_per_file = max(1, int(rows_per_file))
        self.s3 = s3
        self.constant_columns = dict(constant_columns or {})
        self.column_types = dict(column_types or {})
        self.result: dict = {"ok": 0, "errors": 0, "seconds": {}, "rows": {}}

    def write(self, blocks: Iterable[Block], ctx) -> dict:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        stats: dict = {"ok": 0, "errors": 0, "seconds": {}, "rows": {}}
        if not tables:
            return stats
        tables = [with_types(t, self.column_types) for t in tables]
        table = pa.concat_tables(tables, promote_options="default")
        for name in table.column_names:
            if name.startswith(TIMING_PREFIX):
                # NaN: the row did not go through that stage (it had failed before).
                values = table[name].to_numpy().astype(np.float64)
                done = ~np.isnan(values)
                stats["seconds"][name[len(TIMING_PREFIX) :]] = float(values[done].sum())
                stats["rows"][name[len(TIMING_PREFIX) :]] = int(done.sum())
        failed = pc.not_equal(_strings(table["error_type"]), "")
        bad, good = table.filter(failed), table.filter(pc.invert(failed))
        if good.num_rows:
            keep = [
                c
                for c in good.column_names
                if not c.startswith(TIMING_PREFIX) and c not in _INTERNAL
            ]
            good = _portable(good.select(keep))
            for key, value in self.constant_columns.items():
                good = good.append_column(key, pa.array([value] * good.num_rows, pa.string()))
            self._write_files("data", good)
        if bad.num_rows:
            self._write_files("errors", error_table(bad))
        stats["ok"], stats["errors"] = good.num_rows, bad.num_rows
        return stats

    def _write_files(self, folder: str, table: pa.Table) -> None:
        # Sorted by id first, so a re-executed task cuts the same parts whatever the row order.
        table = table.take(pc.sort_indices(_strings(table["id"])))
        for start in range(0, table.num_rows, self.rows_per_file):
            chunk = table.slice(start, self.rows_per_file)
            name = part_name(chunk["id"].to_pylist())
            write_bytes(join(self.out, folder, name), _parquet_bytes(chunk), self.s3)

    def on_write_complete(self, write_result) -> None:
        for r in write_result.write_returns:
            self.result["ok"] += r["ok"]
            self.result["errors"] += r["errors"]
            for stage, s in r["seconds"].items():
                self.result["seconds"][stage] = self.result["seconds"].get(stage, 0.0) + s
            for stage, n in r.get("rows", {}).items():
                self.result["rows"][stage] = self.result["rows"].get(stage, 0) + n


def read_ids(folder: str, s3: S3Options | None = None, drop_unreadable: bool = True) -> list[str]:
    """Ids in every Parquet file under ``folder`` (empty when it does not exist).

    A file that cannot be read (e.g. copied in by hand and cut short) is deleted when
    ``drop_unreadable``, so its rows are redone, and logged.
    """
    return read_columns(folder, ("id",), s3, drop_unreadable)["id"]


def read_columns(
    folder: str, columns: Sequence[str], s3: S3Options | None = None, drop_unreadable: bool = True
) -> dict[str, list]:
    """Some columns of every Parquet file under ``folder``, each file read once.

    A column a file lacks (written by an older version) adds nothing for that file.
    Unreadable files: as :func:`read_ids`.
    """
    out: dict[str, list] = {c: [] for c in columns}
    if not exists(folder, s3):
        return out
    try:
        files = list_files(folder, suffixes=[".parquet"], s3=s3)
    except StorageNotFoundError:
        return out
    for uri in files:
        try:
            parquet = pq.ParquetFile(io.BytesIO(read_bytes(uri, s3)))
            present = [c for c in columns if c in parquet.schema_arrow.names]
            table = parquet.read(columns=present)
        except (pa.ArrowException, OSError) as exc:
            if not drop_unreadable:
                raise
            logger.warning(
                "dropping unreadable output file %s (%s); its rows will be redone", uri, exc
            )
            delete(uri, s3)
            continue
        for c in present:
            out[c].extend(table[c].to_pylist())
    return out


def write_empty_errors(out: str, s3: S3Options | None = None) -> None:
    """An empty ``errors/`` table with the schema, so readers always find one."""
    write_bytes(join(out, "errors", "empty.parquet"), _parquet_bytes(empty_error_table()), s3)


def unique_count(ids: Sequence[str]) -> int:
    return int(np.unique(np.asarray(ids, dtype=object).astype(str)).size) if len(ids) else 0
