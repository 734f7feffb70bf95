"""abs_ray.staging: attempts, commits (local renames, S3 copies) and their crash recovery."""

from __future__ import annotations

import json

import pytest

import abs_ray.staging as staging
from abs_ray.io import exists, join, list_files, read_text, write_text
from abs_ray.staging import (
    commit,
    committed_manifest,
    finish_interrupted_commits,
    list_attempts,
    mark_failed,
    start_attempt,
)


def _files(root, s3=None) -> dict[str, str]:
    out = {}
    for uri in list_files(root, s3=s3):
        out[uri[len(root) :].lstrip("/")] = read_text(uri, s3)
    return out


def _previous(out, s3=None):
    """A committed output: detector, data, errors, preview, manifest."""
    for name, text in {
        "detector/detector.pt": "old detector",
        "data/a.parquet": "old a",
        "data/b.parquet": "old b",
        "errors/e.parquet": "old errors",
        "swap_preview.png": "old preview",
    }.items():
        write_text(join(out, *name.split("/")), text, s3)
    write_text(join(out, "manifest.json"), json.dumps({"state": "complete", "n": 1}), s3)


def _where(kind, request, tmp_path):
    if kind == "local":
        return str(tmp_path / "out"), None
    s3 = request.getfixturevalue("s3_server")
    return f"{request.getfixturevalue('bucket')}/runs/out", s3


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    return _where(request.param, request, tmp_path)


def test_commit_replaces_everything_and_drops_what_the_run_did_not_make(where):
    out, s3 = where
    _previous(out, s3)
    attempt = start_attempt(out, {"config": {"x": 1}}, s3)
    write_text(attempt.path("data", "new.parquet"), "new rows", s3)
    write_text(attempt.path("errors", "e2.parquet"), "new errors", s3)
    # Nothing is visible before the commit.
    assert _files(join(out, "data"), s3) == {"a.parquet": "old a", "b.parquet": "old b"}
    commit(attempt, {"n": 2}, s3)
    assert _files(join(out, "data"), s3) == {"new.parquet": "new rows"}
    assert _files(join(out, "errors"), s3) == {"e2.parquet": "new errors"}
    # The new run made no detector and no preview: the old ones do not stay beside it.
    assert not exists(join(out, "detector"), s3) and not exists(join(out, "swap_preview.png"), s3)
    assert committed_manifest(out, s3) == {"n": 2, "state": "complete"}
    assert list_attempts(out, s3) == [] and not exists(join(out, "_staging"), s3)


# Local commits rename (a crash can only come between renames); S3 commits copy, then delete.
@pytest.mark.parametrize("kind, crash_at", [("local", "delete"), ("s3", "delete"), ("s3", "copy")])
def test_a_crash_mid_commit_is_finished_from_the_attempt(
    kind, crash_at, request, tmp_path, monkeypatch
):
    out, s3 = _where(kind, request, tmp_path)
    _previous(out, s3)
    attempt = start_attempt(out, {}, s3)
    for i in range(3):
        write_text(attempt.path("data", f"part-{i}.parquet"), f"new {i}", s3)
    write_text(attempt.path("errors", "e.parquet"), "new errors", s3)
    real_delete, real_copy = staging.delete, staging.copy_tree

    def flaky_delete(uri, s3=None, missing_ok=True):
        # S3: crash while deleting the attempt's data/ after it was copied; local: while
        # removing the old errors/ (after data/ was renamed in).
        target = attempt.path("data") if s3 is not None else join(out, "errors")
        if crash_at == "delete" and uri == target:
            raise OSError("crash")
        return real_delete(uri, s3, missing_ok)

    def flaky_copy(src, dst, s3=None):
        if crash_at == "copy" and src == attempt.path("errors"):
            real_copy(src, dst, s3)  # half way: copied, not yet recorded
            raise OSError("crash")
        return real_copy(src, dst, s3)

    monkeypatch.setattr(staging, "delete", flaky_delete)
    monkeypatch.setattr(staging, "copy_tree", flaky_copy)
    with pytest.raises(OSError, match="crash"):
        commit(attempt, {"n": 2}, s3)
    marker = committed_manifest(out, s3)
    assert marker["state"] == "replacing" and marker["replacing_with"] == attempt.root
    monkeypatch.undo()

    assert finish_interrupted_commits(out, s3) == [attempt.run_id]
    assert _files(join(out, "data"), s3) == {f"part-{i}.parquet": f"new {i}" for i in range(3)}
    assert _files(join(out, "errors"), s3) == {"e.parquet": "new errors"}
    assert committed_manifest(out, s3) == {"n": 2, "state": "complete"}
    assert list_attempts(out, s3) == []


def test_attempts_newest_first_and_failures_recorded(tmp_path):
    out = str(tmp_path / "out")
    first = start_attempt(out, {"config": {"a": 1}})
    second = start_attempt(out, {"config": {"a": 2}})
    assert second.run_id > first.run_id
    mark_failed(first, ValueError("bad thing"))
    found = list_attempts(out)
    assert [a.run_id for a, _ in found] == [second.run_id, first.run_id]
    assert found[1][1]["state"] == "failed" and found[1][1]["error"] == "ValueError: bad thing"
    assert found[0][1]["state"] == "running"
    # A newer commit supersedes the older attempts.
    write_text(second.path("data", "x.parquet"), "x")
    commit(second, {})
    assert list_attempts(out) == []
