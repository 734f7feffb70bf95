"""Progress a person can follow: one API for every long step, local or in Ray workers.

Three parts:

- :class:`Progress` — one named step (``with progress("disentangle", total=320) as p:
  p.update(16)``). On a terminal it draws a tqdm bar (done/total, rate, ETA); redirected
  (CI, ``ray job submit`` logs, ``kubectl logs``, ``> file``) it logs one plain line per
  ``interval`` while the count moves, and a last line when it closes::

      disentangle: 120/320 (38 %) 4.1/s ETA 49 s
      disentangle: 320/320 (100 %) done in 1 min 18 s, 4.1/s

  Under ``-q`` (our logger above INFO) it prints nothing.
- :class:`~abs_ray.console.board.ProgressBoard` — the named steps of one process, created on first use; it is a
  *progress sink*: ``add(stage, n)``, ``set_total(stage, total)``, ``finish(stage)``.
- :class:`~abs_ray.console.remote.RemoteProgress` — the same sink for code that runs in other processes (Ray Data
  stage callables, Ray Train workers, a detector-training task): a small Ray actor that
  counts, a picklable :class:`ProgressHandle` whose calls are fire-and-forget, and a driver
  thread that polls the actor and feeds a board.

Code that reports progress takes an optional sink and stays callable without Ray (a unit
test calls a stage on a hand-made batch with ``progress=None`` or a :class:`ProgressBoard`)::

    class Detect:
        def __init__(self, ..., progress: ProgressSink | None = None):
            self.progress = progress or NULL_PROGRESS

        def __call__(self, batch):
            ...
            self.progress.add("detect", len(batch["id"]))
            return out

The interval between lines is 30 s, or ``ABS_RAY_PROGRESS_INTERVAL`` seconds.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Literal

from abs_ray.console.logs import is_terminal
from abs_ray.errors import ConfigError

__all__ = ["Progress", "default_interval", "format_duration", "progress"]

logger = logging.getLogger("abs_ray.progress")

Mode = Literal["auto", "bar", "lines", "off"]
DEFAULT_INTERVAL_S = 30.0
_ENV_INTERVAL = "ABS_RAY_PROGRESS_INTERVAL"


def default_interval() -> float:
    """Seconds between two plain progress lines: ``ABS_RAY_PROGRESS_INTERVAL`` or 20.

    Raises:
        ConfigError: the variable is set but not a positive number.
    """
    text = os.environ.get(_ENV_INTERVAL)
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise ConfigError(f"{_ENV_INTERVAL} must be a positive number of seconds, got {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """A short duration for people: ``49 s``, ``3 min 12 s``, ``2 h 05 min``.

    >>> format_duration(48.6), format_duration(192), format_duration(7500), format_duration(0.2)
    ('49 s', '3 min 12 s', '2 h 05 min', '0.2 s')
    """
    if not math.isfinite(seconds):
        return "?"
    if seconds < 1:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _format_rate(rate: float, unit: str) -> str:
    if not math.isfinite(rate):
        return "?/s"
    text = f"{rate:.3g}" if rate < 100 else f"{rate:.0f}"
    return f"{text}/s" if unit == "it" else f"{text} {unit}/s"


def _format_count(done: int, total: int | None) -> str:
    if total:
        return f"{done}/{total} ({100 * done / total:.0f} %)"
    return str(done)


class Progress:
    """One long step's progress: a tqdm bar on a terminal, throttled plain lines otherwise.

    Thread-safe (a driver thread may feed it while the main thread works).

    Args:
        name: the step, first word of each line (``disentangle``, ``detector epochs``).
        total: the count when done, or None when unknown (lines then show no percentage
            and no ETA).
        unit: what is counted (``it``: no unit is printed).
        interval: seconds between two plain lines (default :func:`default_interval`).
        stream: where a bar is drawn (default ``sys.stderr``); plain lines go through the
            ``abs_ray.progress`` logger, so they have the log format and obey ``-q``.
        mode: ``auto`` (``off`` when that logger is above INFO, else ``bar`` on a terminal
            and ``lines`` otherwise), or one of ``bar``, ``lines``, ``off``.
        clock: monotonic seconds (tests pass a fake one).

    Raises:
        ConfigError: negative total, non-positive interval, or unknown mode.

    Example:
        >>> import io
        >>> with Progress("demo", total=3, mode="off") as p:
        ...     p.update(2)
        ...     p.update()
        >>> p.n, p.closed
        (3, True)
    """

    def __init__(
        self,
        name: str,
        total: int | None = None,
        *,
        unit: str = "it",
        interval: float | None = None,
        stream: IO[str] | None = None,
        mode: Mode = "auto",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if total is not None and total < 0:
            raise ConfigError(f"progress total must be >= 0 or None, got {total}")
        interval = default_interval() if interval is None else float(interval)
        if not interval > 0:
            raise ConfigError(f"progress interval must be > 0 seconds, got {interval}")
        if mode not in ("auto", "bar", "lines", "off"):
            raise ConfigError(f"progress mode must be auto, bar, lines or off, got {mode!r}")
        self.name = name
        self.total = total
        self.unit = unit
        self.interval = interval
        self.stream = stream
        self.mode: Mode = self._resolve_mode(mode)
        self.n = 0
        self.closed = False
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._last_line = self._start
        self._last_line_n = 0
        # (time, count) points of the last few intervals, for a rate that follows the pace.
        self._points: collections.deque[tuple[float, int]] = collections.deque()
        self._bar = self._make_bar() if self.mode == "bar" else None

    def _resolve_mode(self, mode: Mode) -> Mode:
        if mode != "auto":
            return mode
        if not logger.isEnabledFor(logging.INFO):
            return "off"
        stream = self.stream if self.stream is not None else sys.stderr
        if is_terminal(stream):
            try:
                import tqdm  # noqa: F401
            except ImportError:
                return "lines"
            return "bar"
        return "lines"

    def _make_bar(self) -> Any:
        from tqdm import tqdm

        return tqdm(
            total=self.total,
            desc=self.name,
            unit=self.unit,
            file=self.stream if self.stream is not None else sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
            smoothing=0.1,
            leave=True,
        )

    # --- feeding ------------------------------------------------------------------------

    def update(self, n: int = 1) -> None:
        """Count ``n`` more done (ignored once closed)."""
        if n == 0:
            self.tick()
            return
        with self._lock:
            if self.closed:
                return
            self.n += int(n)
            now = self._clock()
            self._points.append((now, self.n))
            self._prune(now)
            if self._bar is not None:
                self._bar.update(int(n))
            self._maybe_line(now)

    def set_total(self, total: int | None) -> None:
        """Change the expected count (e.g. once a data set's size is known)."""
        if total is not None and total < 0:
            raise ConfigError(f"progress total must be >= 0 or None, got {total}")
        with self._lock:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()

    def tick(self) -> None:
        """Print a line if one is due (a polling thread calls this between updates)."""
        with self._lock:
            if not self.closed:
                self._maybe_line(self._clock())

    # --- reading -------------------------------------------------------------------------

    def _prune(self, now: float) -> None:
        # Keep the newest point at or before the window's start as the rate's anchor.
        start = now - 3 * self.interval
        while len(self._points) > 1 and self._points[1][0] <= start:
            self._points.popleft()

    def rate(self, now: float | None = None) -> float:
        """Items per second over about the last three intervals (the pace now, not the
        average since a slow start); the average since the start until there are two points.
        """
        now = self._clock() if now is None else now
        self._prune(now)
        if self._points:
            t0, n0 = self._points[0]
            if now - t0 > 1e-9 and self.n > n0:
                return (self.n - n0) / (now - t0)
        elapsed = now - self._start
        return self.n / elapsed if elapsed > 0 else math.nan

    def line(self, now: float | None = None) -> str:
        """The plain progress line: ``name: 120/320 (38 %) 4.1/s ETA 49 s``."""
        now = self._clock() if now is None else now
        rate = self.rate(now)
        text = f"{self.name}: {_format_count(self.n, self.total)} {_format_rate(rate, self.unit)}"
        if self.total and rate > 0 and math.isfinite(rate):
            text += f" ETA {format_duration(max(0, self.total - self.n) / rate)}"
        return text

    def _maybe_line(self, now: float) -> None:
        if self.mode != "lines" or now - self._last_line < self.interval:
            return
        if self.n == self._last_line_n:
            return  # nothing moved: say nothing rather than "0/?" again
        if self.total and self.n >= self.total:
            return  # finished: the closing line ("done in ...") says it once
        logger.info(self.line(now))
        self._last_line, self._last_line_n = now, self.n

    # --- closing -------------------------------------------------------------------------

    def close(self, failed: bool = False) -> None:
        """Finish: the bar stays on screen, or the last plain line says how it ended."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            now = self._clock()
            if self._bar is not None:
                self._bar.close()
            if self.mode != "lines":
                return
            elapsed = now - self._start
            rate = self.n / elapsed if elapsed > 0 else math.nan
            state = "stopped" if failed else "done"
            logger.info(
                "%s: %s %s in %s, %s",
                self.name,
                _format_count(self.n, self.total),
                state,
                format_duration(elapsed),
                _format_rate(rate, self.unit),
            )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(failed=exc_type is not None)


def progress(name: str, total: int | None = None, **kwargs: Any) -> Progress:
    """A :class:`Progress` (the ``with progress("step", total=N) as p:`` spelling)."""
    return Progress(name, total, **kwargs)
