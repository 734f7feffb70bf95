"""Run attempts and their commit: a new output replaces the old one only once it is complete.

A run of the pipeline writes everything it produces into its own attempt folder::

    <out>/_staging/<run_id>/
        manifest.json      the attempt's record: state, config, then the summary
        detector/  data/  errors/  swap_preview.png

and only when the run has succeeded does :func:`commit` move those into place
(:data:`COMPONENTS` under ``<out>``, the stable paths every reader uses) and write
``<out>/manifest.json``. So ``<out>/manifest.json`` always describes what is on disk: the
previous output until a commit starts, ``"state": "replacing"`` (naming the attempt) while
one runs, the new output after.

A commit records its progress in the attempt's ``manifest.json`` after every step, and each
step can be redone: a crash in the middle leaves the attempt folder intact enough for
:func:`finish_interrupted_commits` (called by the next run) to complete it. Locally a
component is moved with one directory rename (atomic); on S3 it is copied server-side, marked
``copied``, and only then deleted from the attempt.

Attempt states: ``running`` (being written, or killed while written), ``failed`` (the run
raised; ``error`` says why), ``committing``. An unfinished (running or failed) attempt is what
``--resume`` continues; a later successful commit deletes older attempts.

Example:
    >>> import json, os, tempfile
    >>> from abs_ray.io import write_text
    >>> out = tempfile.mkdtemp()
    >>> attempt = start_attempt(out, {"config": {}})
    >>> write_text(attempt.path("data", "part-0.parquet"), "rows")
    >>> commit(attempt, {"counts": {"ok": 1}})
    >>> sorted(os.listdir(out)), json.load(open(os.path.join(out, "manifest.json")))["state"]
    (['data', 'manifest.json'], 'complete')
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import time
import uuid
from typing import Any

import pyarrow.fs as pafs

from abs_ray.errors import AbsRayError, StorageError
from abs_ray.io import (
    S3Options,
    copy_tree,
    delete,
    exists,
    is_remote,
    join,
    read_text,
    resolve,
    write_text,
)

logger = logging.getLogger(__name__)

__all__ = [
    "COMPONENTS",
    "STAGING",
    "Attempt",
    "commit",
    "committed_manifest",
    "finish_interrupted_commits",
    "list_attempts",
    "mark_failed",
    "start_attempt",
]

#: Folder under ``<out>`` holding the attempts.
STAGING = "_staging"
#: What a run produces under ``<out>``; a commit replaces all of them (a component the new
#: run did not produce is removed, so nothing stale stays beside the new manifest).
COMPONENTS: tuple[str, ...] = ("detector", "data", "errors", "swap_preview.png")
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One run's staging folder ``<out>/_staging/<run_id>``."""

    out: str
    run_id: str

    @property
    def root(self) -> str:
        return join(self.out, STAGING, self.run_id)

    def path(self, *parts: str) -> str:
        """A location inside the attempt, e.g. ``attempt.path("data")``."""
        return join(self.root, *parts)


def _new_run_id() -> str:
    """Sortable by start time (UTC, microseconds): ``20261201T080439123456-3f2a``."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%f")
    return f"{stamp}-{uuid.uuid4().hex[:4]}"


def _dump(record: dict) -> str:
    return json.dumps(record, indent=2, sort_keys=True, default=str)


def read_record(attempt: Attempt, s3: S3Options | None = None) -> dict | None:
    """The attempt's ``manifest.json``; None when missing or unreadable."""
    try:
        return json.loads(read_text(attempt.path(MANIFEST), s3))
    except (AbsRayError, ValueError):
        return None


def write_record(attempt: Attempt, record: dict, s3: S3Options | None = None) -> None:
    write_text(attempt.path(MANIFEST), _dump(record), s3)


def start_attempt(out: str, record: dict[str, Any], s3: S3Options | None = None) -> Attempt:
    """Create a new attempt folder with its record (``state: running``)."""
    attempt = Attempt(out, _new_run_id())
    write_record(
        attempt,
        {**record, "state": "running", "run_id": attempt.run_id, "started": time.time()},
        s3,
    )
    logger.info("run %s: writing into %s until it completes", attempt.run_id, attempt.root)
    return attempt


def list_attempts(out: str, s3: S3Options | None = None) -> list[tuple[Attempt, dict]]:
    """Every attempt under ``<out>/_staging`` with its record, newest first.

    An attempt whose record cannot be read counts as ``running`` (killed early).
    """
    staging = join(out, STAGING)
    if not exists(staging, s3):
        return []
    fs, base = resolve(staging, s3)
    try:  # one level: the attempt folders (S3: common prefixes), not every file in them
        entries = fs.get_file_info(pafs.FileSelector(base, recursive=False, allow_not_found=True))
    except OSError as exc:
        raise StorageError(f"cannot list {staging}: {exc}") from exc
    ids = {e.base_name for e in entries if e.type == pafs.FileType.Directory}
    found = []
    for run_id in sorted(ids, reverse=True):
        attempt = Attempt(out, run_id)
        found.append((attempt, read_record(attempt, s3) or {"state": "running"}))
    return found


def committed_manifest(out: str, s3: S3Options | None = None) -> dict | None:
    """``<out>/manifest.json``; None when there is none (or it cannot be parsed)."""
    uri = join(out, MANIFEST)
    if not exists(uri, s3):
        return None
    try:
        return json.loads(read_text(uri, s3))
    except ValueError:
        return None


def mark_failed(attempt: Attempt, error: BaseException, s3: S3Options | None = None) -> None:
    """Record why an attempt stopped (best effort: the original error matters more)."""
    try:
        record = read_record(attempt, s3) or {"run_id": attempt.run_id}
        if record.get("state") == "committing":  # the commit itself failed: finish it later
            return
        record.update(state="failed", error=f"{type(error).__name__}: {error}")
        write_record(attempt, record, s3)
    except (AbsRayError, OSError) as exc:
        logger.warning("could not record the failure of %s: %s", attempt.root, exc)


def commit(attempt: Attempt, summary: dict[str, Any], s3: S3Options | None = None) -> None:
    """Make a complete attempt the output: replace :data:`COMPONENTS`, write the manifest.

    Args:
        attempt: the finished attempt.
        summary: the new ``<out>/manifest.json`` (``state: complete`` is added).
        s3: S3 settings.

    Raises:
        StorageError: a step failed; the attempt stays ``committing`` and the next run (or
            :func:`finish_interrupted_commits`) completes it.
    """
    record = read_record(attempt, s3) or {"run_id": attempt.run_id}
    produced = [c for c in COMPONENTS if exists(attempt.path(c), s3)]
    record.update(state="committing", summary=summary, produced=produced, progress={})
    write_record(attempt, record, s3)
    _finish_commit(attempt, record, s3)


def _finish_commit(attempt: Attempt, record: dict, s3: S3Options | None) -> None:
    out = attempt.out
    previous = committed_manifest(out, s3) or {}
    if previous.get("replacing_with") != attempt.root:
        marker = {**previous, "state": "replacing", "replacing_with": attempt.root}
        write_text(join(out, MANIFEST), _dump(marker), s3)
    progress: dict[str, str] = record.setdefault("progress", {})
    local = not is_remote(out)
    for name in COMPONENTS:
        src, dst = attempt.path(name), join(out, name)
        if name not in record["produced"]:
            delete(dst, s3)
            continue
        if progress.get(name) == "moved":
            continue
        if progress.get(name) != "copied":
            if local:
                # One rename: either the attempt still has it (not moved yet) or it does not.
                if exists(src, s3):
                    delete(dst, s3)
                    _, src_path = resolve(src, s3)
                    _, dst_path = resolve(dst, s3)
                    try:
                        os.replace(src_path, dst_path)
                    except OSError as exc:
                        raise StorageError(f"cannot move {src} to {dst}: {exc}") from exc
                progress[name] = "moved"
                write_record(attempt, record, s3)
                continue
            delete(dst, s3)
            copy_tree(src, dst, s3)
            progress[name] = "copied"
            write_record(attempt, record, s3)
        delete(src, s3)
        progress[name] = "moved"
        write_record(attempt, record, s3)
    write_text(join(out, MANIFEST), _dump({**record["summary"], "state": "complete"}), s3)
    delete(attempt.root, s3)
    others = list_attempts(out, s3)
    for other, _ in others:  # older attempts are superseded by this output
        if other.run_id < attempt.run_id:
            delete(other.root, s3)
    if not any(o.run_id > attempt.run_id for o, _ in others):
        delete(join(out, STAGING), s3)  # the empty folder (no newer attempt in it)
    logger.info("run %s committed to %s", attempt.run_id, out)


def finish_interrupted_commits(out: str, s3: S3Options | None = None) -> list[str]:
    """Complete every commit a crash left half done (oldest first); return their run ids."""
    done = []
    for attempt, record in reversed(list_attempts(out, s3)):
        if record.get("state") == "committing" and "summary" in record:
            logger.warning("finishing the interrupted commit of run %s", attempt.run_id)
            _finish_commit(attempt, record, s3)
            done.append(attempt.run_id)
    return done
