"""The disentangle datasink without Ray: split into data/errors, idempotent re-writes."""

from types import SimpleNamespace

import pyarrow as pa

from abs_ray.io import list_files
from abs_ray.stages.disentangle import TIMING_PREFIX
from abs_ray.stages.sink import SplitParquetSink, read_columns, read_ids


def _block(ids: list[str], failed: set[str]) -> pa.Table:
    """A block as the inpainting stage hands it to the sink (some rows failed earlier)."""
    return pa.table(
        {
            "id": ids,
            "image_uri": [f"s3://b/images/{i}.png" for i in ids],
            "label": [int(i[-1]) % 2 for i in ids],
            "foreground_png": [f"fg-{i}".encode() for i in ids],
            "error_stage": ["load" if i in failed else "" for i in ids],
            "error_type": ["NotAnImageError" if i in failed else "" for i in ids],
            "error_message": [f"{i}: bad" if i in failed else "" for i in ids],
            TIMING_PREFIX + "load": [0.5] * len(ids),
        }
    )


def test_a_retried_write_task_overwrites_instead_of_duplicating(tmp_path):
    """Ray re-runs a write task whose node died (during the write, or after it, to rebuild a
    lost output); the second run, even with its rows in another order, must leave each id once."""
    out = str(tmp_path / "out")
    ids = [f"id{i:02d}" for i in range(11)]
    block = _block(ids, failed={"id03", "id07"})
    sink = SplitParquetSink(out, constant_columns={"detector": "d.pt"}, rows_per_file=4)
    first = sink.write([block], SimpleNamespace(task_idx=0))
    files = sorted(list_files(f"{out}/data", suffixes=[".parquet"]))
    # The retry: same rows, reversed, under another task index.
    again = sink.write([block.take(list(range(len(ids)))[::-1])], SimpleNamespace(task_idx=5))

    assert first["ok"] == again["ok"] == 9 and first["errors"] == again["errors"] == 2
    assert sorted(list_files(f"{out}/data", suffixes=[".parquet"])) == files  # same 3 files
    good = read_ids(f"{out}/data")
    assert sorted(good) == sorted(set(ids) - {"id03", "id07"})  # each id once
    assert sorted(read_ids(f"{out}/errors")) == ["id03", "id07"]
    assert set(read_columns(f"{out}/data", ["detector"])["detector"]) == {"d.pt"}


def test_part_names_follow_the_ids_of_each_file(tmp_path):
    from abs_ray.stages.sink import part_name

    out = str(tmp_path / "out")
    ids = [f"x{i}" for i in range(5)]
    SplitParquetSink(out, rows_per_file=2).write([_block(ids, set())], SimpleNamespace(task_idx=0))
    names = {uri.rsplit("/", 1)[-1] for uri in list_files(f"{out}/data", suffixes=[".parquet"])}
    assert names == {part_name(["x0", "x1"]), part_name(["x2", "x3"]), part_name(["x4"])}
