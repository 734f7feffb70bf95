"""Progress from other processes (Ray tasks, actors, Train workers), shown by the driver:
a counter actor, a picklable :class:`ProgressHandle` and :class:`RemoteProgress`."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from abs_ray.console.board import ProgressBoard
from abs_ray.console.progress import Progress
from abs_ray.errors import ConfigError

__all__ = ["ProgressHandle", "RemoteProgress"]

logger = logging.getLogger("abs_ray.progress")


class _Counter:
    """The Ray actor behind :class:`RemoteProgress`: counts per stage since the last poll."""

    def __init__(self) -> None:
        self._added: dict[str, int] = {}
        self._totals: dict[str, int | None] = {}
        self._finished: list[str] = []

    def add(self, stage: str, n: int) -> None:
        self._added[stage] = self._added.get(stage, 0) + n

    def set_total(self, stage: str, total: int | None) -> None:
        self._totals[stage] = total
        self._added.setdefault(stage, 0)

    def finish(self, stage: str) -> None:
        self._finished.append(stage)

    def drain(self) -> tuple[dict[str, int], dict[str, int | None], list[str]]:
        """Counts added, totals set and stages finished since the last call (then reset)."""
        out = (self._added, self._totals, self._finished)
        self._added, self._totals, self._finished = {}, {}, []
        return out


class ProgressHandle:
    """A picklable :class:`ProgressSink` for code in Ray tasks, actors and Train workers.

    Every call is one fire-and-forget actor call (no waiting, nothing raised when the driver
    has already gone): report per batch, not per row.

    Args:
        actor: the counter actor of a :class:`RemoteProgress`.
    """

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def add(self, stage: str, n: int = 1) -> None:
        if n:
            self._actor.add.remote(stage, int(n))

    def set_total(self, stage: str, total: int | None) -> None:
        self._actor.set_total.remote(stage, None if total is None else int(total))

    def finish(self, stage: str) -> None:
        self._actor.finish.remote(stage)

    def __reduce__(self) -> tuple[Any, tuple[Any]]:
        return (ProgressHandle, (self._actor,))


class RemoteProgress:
    """Progress from other processes, shown by this one (the driver).

    Starts a counter actor (``num_cpus=0``: it never takes a CPU a stage needs) and a daemon
    thread that drains it every ``poll_s`` seconds into a :class:`ProgressBoard`. Pass
    :attr:`handle` to remote code; stages it reports appear on the board by name. The driver
    may declare a stage first (``remote.progress("detect", total=n)``) and may also report
    to the board itself: remote counts are added, not set.

    Needs a running Ray (``ray.init``) when entered.

    Args:
        board: where the stages are shown (default: a new :class:`ProgressBoard`).
        poll_s: seconds between two polls.
        name: the actor's name (default ``abs_ray-progress-<random>``), so that code can also
            find it with ``ray.get_actor(name)``.

    Example (driver)::

        with RemoteProgress() as remote:
            remote.progress("detect", total=n, unit="img")
            ds.map_batches(Detect, fn_constructor_kwargs={"progress": remote.handle}, ...)
            ds.write_parquet(...)
    """

    def __init__(
        self, board: ProgressBoard | None = None, poll_s: float = 0.5, name: str | None = None
    ) -> None:
        if not poll_s > 0:
            raise ConfigError(f"poll_s must be > 0, got {poll_s}")
        self.board = board if board is not None else ProgressBoard()
        self.poll_s = poll_s
        self.name = name or f"abs_ray-progress-{uuid.uuid4().hex[:8]}"
        self._actor: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def handle(self) -> ProgressHandle:
        """The sink to pass to remote code."""
        if self._actor is None:
            raise RuntimeError("RemoteProgress.handle is only available inside `with`")
        return ProgressHandle(self._actor)

    def progress(self, stage: str, total: int | None = None, **kwargs: Any) -> Progress:
        """Declare (or update) a stage on the board, e.g. with its total and unit."""
        return self.board.progress(stage, total, **kwargs)

    def poll(self, timeout_s: float = 30.0) -> None:
        """Drain the actor once into the board (the thread does this every ``poll_s``)."""
        import ray

        self._apply(*ray.get(self._actor.drain.remote(), timeout=timeout_s))

    def _short_of_total(self) -> bool:
        """Whether a stage with a known total is still open below it."""
        steps = (self.board[stage] for stage in self.board.stages)
        return any(p.total is not None and not p.closed and p.n < p.total for p in steps)

    def _settle(self, quiet_s: float = 0.5, limit_s: float = 10.0, complete: bool = True) -> None:
        """Drain until nothing arrives for ``quiet_s`` (at most ``limit_s``); with
        ``complete``, also until every open stage with a total has reached it.

        A worker's calls are fire-and-forget: one made just before its task returned can
        still be on its way to the actor when the driver gets here, and on a loaded machine
        for longer than any quiet spell. Waiting for the totals makes a finished run's counts
        exact; ``limit_s`` bounds the wait for a stage that really ended short.
        """
        import ray

        deadline = time.monotonic() + limit_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            added, totals, finished = ray.get(self._actor.drain.remote(), timeout=limit_s)
            if added or totals or finished:
                self._apply(added, totals, finished)
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s and not (
                complete and self._short_of_total()
            ):
                return
            time.sleep(0.05)

    def _apply(
        self, added: dict[str, int], totals: dict[str, int | None], finished: list[str]
    ) -> None:
        for stage, total in totals.items():
            self.board.set_total(stage, total)
        for stage, n in added.items():
            self.board.add(stage, n)
        for stage in finished:
            self.board.finish(stage)
        self.board.tick()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll(timeout_s=max(10.0, 10 * self.poll_s))
            except Exception as exc:  # noqa: BLE001 - a progress display never stops a run
                logger.debug("progress poll failed: %s", exc)

    def __enter__(self) -> RemoteProgress:
        import ray

        actor_cls = ray.remote(num_cpus=0, max_restarts=0)(_Counter)
        self._actor = actor_cls.options(name=self.name).remote()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        import ray

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._settle(complete=exc_type is None)
        except Exception as exc:  # noqa: BLE001
            logger.debug("last progress poll failed: %s", exc)
        self.board.close(failed=exc_type is not None)
        try:
            ray.kill(self._actor)
        except Exception as exc:  # noqa: BLE001
            logger.debug("could not stop the progress actor: %s", exc)
        self._actor = None
