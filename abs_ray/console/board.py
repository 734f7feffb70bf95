"""Progress sinks of one process: the :class:`ProgressSink` protocol, :data:`NULL_PROGRESS`
and :class:`ProgressBoard` (the named :class:`~abs_ray.console.progress.Progress` steps of a
process, created on first use)."""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

from abs_ray.console.progress import Progress

__all__ = ["NULL_PROGRESS", "ProgressBoard", "ProgressSink"]


@runtime_checkable
class ProgressSink(Protocol):
    """What stage code reports to: a :class:`ProgressBoard`, a :class:`ProgressHandle`, or
    :data:`NULL_PROGRESS`."""

    def add(self, stage: str, n: int = 1) -> None: ...

    def set_total(self, stage: str, total: int | None) -> None: ...

    def finish(self, stage: str) -> None: ...


class _NullProgress:
    """A sink that drops everything (the default of code that reports progress)."""

    def add(self, stage: str, n: int = 1) -> None:
        pass

    def set_total(self, stage: str, total: int | None) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass

    def __repr__(self) -> str:
        return "NULL_PROGRESS"


#: The do-nothing sink: ``self.progress = progress or NULL_PROGRESS``.
NULL_PROGRESS: ProgressSink = _NullProgress()


class ProgressBoard:
    """The named steps of this process: a :class:`ProgressSink` that makes a
    :class:`Progress` per stage on first use.

    Args:
        **defaults: keyword arguments for every :class:`Progress` it makes (``interval``,
            ``stream``, ``mode``, ``clock``, ``unit``).

    Example:
        >>> board = ProgressBoard(mode="off")
        >>> board.set_total("detect", 4)
        >>> board.add("detect", 3); board.add("detect")
        >>> board["detect"].n, board["detect"].total
        (4, 4)
        >>> board.close()
    """

    def __init__(self, **defaults: Any) -> None:
        self._defaults = defaults
        self._steps: dict[str, Progress] = {}
        self._lock = threading.Lock()

    def progress(self, stage: str, total: int | None = None, **kwargs: Any) -> Progress:
        """The stage's :class:`Progress`, made now if new or finished (else its total is
        updated when given)."""
        with self._lock:
            step = self._steps.get(stage)
            if step is None or step.closed:
                step = Progress(stage, total, **{**self._defaults, **kwargs})
                self._steps[stage] = step
                return step
        if total is not None and total != step.total:
            step.set_total(total)
        return step

    def __getitem__(self, stage: str) -> Progress:
        return self._steps[stage]

    def __contains__(self, stage: str) -> bool:
        return stage in self._steps

    @property
    def stages(self) -> list[str]:
        """Stage names in the order they first reported."""
        return list(self._steps)

    def add(self, stage: str, n: int = 1) -> None:
        """Count ``n`` more for ``stage`` (made on first use; ignored once it finished)."""
        step = self._steps.get(stage)
        if step is None:
            step = self.progress(stage)
        step.update(n)

    def set_total(self, stage: str, total: int | None) -> None:
        """Set ``stage``'s total (made on first use; ignored once it finished)."""
        step = self._steps.get(stage)
        if step is None:
            self.progress(stage, total)
        elif not step.closed:
            step.set_total(total)

    def finish(self, stage: str) -> None:
        step = self._steps.get(stage)
        if step is not None:
            step.close()

    def tick(self) -> None:
        """Let every open stage print a line that is due."""
        for step in list(self._steps.values()):
            step.tick()

    def close(self, failed: bool = False) -> None:
        """Close every stage still open."""
        for step in list(self._steps.values()):
            step.close(failed=failed)

    def __enter__(self) -> ProgressBoard:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)
