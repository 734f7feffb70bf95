"""What a person running abs-ray sees: logging set-up and progress reporting.

- :mod:`abs_ray.console.logs`: :func:`setup_logging` and :func:`add_logging_args`
  (``--log-level``, ``-q``, ``-v``) for every CLI.
- :mod:`abs_ray.console.progress`: :class:`Progress` (a bar on a terminal, throttled lines
  otherwise); :mod:`abs_ray.console.board`: the :class:`ProgressSink` protocol and
  :class:`ProgressBoard`; :mod:`abs_ray.console.remote`: :class:`RemoteProgress` (progress
  reported from Ray tasks, actors and Train workers to the driver).

Importing this package imports neither Ray nor torch nor tqdm.
"""

from abs_ray.console.board import NULL_PROGRESS, ProgressBoard, ProgressSink
from abs_ray.console.logs import (
    THIRD_PARTY_LOGGERS,
    LoggingOptions,
    add_logging_args,
    logging_kwargs,
    logging_options,
    setup_logging,
    setup_worker_logging,
    strip_ansi,
    worker_runtime_env,
)
from abs_ray.console.progress import Progress, format_duration, progress
from abs_ray.console.remote import ProgressHandle, RemoteProgress

__all__ = [
    "NULL_PROGRESS",
    "THIRD_PARTY_LOGGERS",
    "LoggingOptions",
    "Progress",
    "ProgressBoard",
    "ProgressHandle",
    "ProgressSink",
    "RemoteProgress",
    "add_logging_args",
    "format_duration",
    "logging_kwargs",
    "logging_options",
    "progress",
    "setup_logging",
    "setup_worker_logging",
    "strip_ansi",
    "worker_runtime_env",
]
