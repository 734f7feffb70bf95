"""One logging set-up for every entrypoint: our format, quiet third parties, no ANSI in files.

:func:`setup_logging` is what a CLI calls once, first thing, with the levels that
:func:`add_logging_args` put on its parser. What it does:

- one handler on the root logger, ``%(asctime)s %(levelname)s %(name)s: %(message)s``
  (seconds, no milliseconds), on stderr; while a progress bar is drawn, log lines go
  through ``tqdm.write`` so they print above the bars instead of through them;
- ANSI escape codes are stripped from every message when the stream is not a terminal
  (CI logs, ``ray job submit`` logs, ``kubectl logs``, a ``> file`` redirect), and Ray's
  worker-log prefixes are printed without colour (``RAY_COLOR_PREFIX=0``);
- Ray, Ray Data, Ray Train, Ray Serve, MLflow, urllib3, filelock and friends log at WARNING
  (``-v``: INFO, ``-vv``: DEBUG) and through the same handler, so their lines read like ours;
- Ray Data's own progress output is off (it prints a 12-line block every 10 s when
  redirected, mostly ``Total Progress: 0/?``): :mod:`abs_ray.console.progress` reports each
  stage instead. ``ray_progress_bars=True`` keeps Ray's bars on a terminal.

Levels: ``--log-level`` sets ours exactly; otherwise INFO, one step down per ``-v`` and one
step up per ``-q`` (``-q``: warnings and errors only, progress included; ``-qq``: errors).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import re
import sys
from dataclasses import dataclass
from typing import IO, Any

from abs_ray.errors import ConfigError

__all__ = [
    "LOG_FORMAT",
    "AnsiStrippingStream",
    "THIRD_PARTY_LOGGERS",
    "LoggingOptions",
    "add_logging_args",
    "is_terminal",
    "logging_kwargs",
    "logging_options",
    "setup_logging",
    "setup_worker_logging",
    "strip_ansi",
    "worker_runtime_env",
]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

#: Loggers kept at WARNING unless ``-v`` (their INFO lines are for whoever debugs Ray or
#: MLflow, not for someone following a run).
THIRD_PARTY_LOGGERS = (
    "ray",
    "ray.data",
    "ray.train",
    "ray.tune",
    "ray.serve",
    "mlflow",
    "alembic",
    "urllib3",
    "botocore",
    "boto3",
    "s3transfer",
    "filelock",
    "matplotlib",
    "PIL",
    "httpx",
    "uvicorn",
    "selenium",
)
#: Loggers that say once that Ray Data's progress bars are off, which is on purpose here.
_PROGRESS_NOTICE_LOGGERS = ("ray.data._internal.progress",)
#: Ray modules that log under their file's path (``logging.getLogger(__file__)``), outside the
#: ``ray`` tree: neither ``ray.train``'s level nor Ray Train's ``LoggingConfig`` filter reaches
#: them, and the first prints "Reporting training result N: TrainingReport(...)" at INFO per
#: epoch and worker. Relative to the ``ray`` package folder.
_RAY_FILE_LOGGERS = ("train/v2/_internal/execution/context.py", "train/collective/collectives.py")
#: Loggers MLflow's import gives a stderr handler of its own and ``propagate = False``
#: (``mlflow.utils.logging_utils._configure_mlflow_loggers``): their lines then bypass ours.
_MLFLOW_CONFIGURED = ("mlflow", "alembic", "huey", "sqlalchemy.engine")
#: At INFO, SQLAlchemy echoes every SQL statement of MLflow's store: never below WARNING.
_SQL_LOGGERS = ("sqlalchemy", "huey")

_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def strip_ansi(text: str) -> str:
    """``text`` without ANSI escape sequences (colours, cursor moves, OSC links).

    >>> strip_ansi("View the dashboard at \\x1b[1m\\x1b[32mhttp://127.0.0.1:8265 \\x1b[39m\\x1b[22m")
    'View the dashboard at http://127.0.0.1:8265 '
    """
    return _ANSI.sub("", text)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (False for files, pipes, None)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


@dataclass(frozen=True)
class LoggingOptions:
    """Resolved logging levels of one process.

    Attributes:
        level: our loggers' level (``abs_ray``, ``__main__``, the root).
        third_party: the level of :data:`THIRD_PARTY_LOGGERS`.
        verbose: the ``-v`` count (0 when ``--log-level`` was given without ``-v``).
    """

    level: int = logging.INFO
    third_party: int = logging.WARNING
    verbose: int = 0


def logging_options(
    level: str | int | None = None, quiet: int = 0, verbose: int = 0
) -> LoggingOptions:
    """Resolve ``--log-level`` / ``-q`` / ``-v`` into levels.

    Args:
        level: a level name (``debug`` .. ``critical``, any case) or number; None = INFO
            moved by ``quiet``/``verbose``.
        quiet: ``-q`` count, each one step up (WARNING, ERROR, CRITICAL).
        verbose: ``-v`` count, each one step down for us (DEBUG) and for third parties
            (``-v``: INFO, ``-vv``: DEBUG).

    Raises:
        ConfigError: unknown level name, or negative counts.

    >>> logging_options(quiet=1).level == logging.WARNING
    True
    >>> o = logging_options(verbose=2)
    >>> (o.level, o.third_party) == (logging.DEBUG, logging.DEBUG)
    True
    >>> logging_options("loud")
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: unknown log level 'loud'; known: DEBUG, INFO, WARNING, ERROR, CRITICAL
    """
    if quiet < 0 or verbose < 0:
        raise ConfigError(f"-q/-v counts must be >= 0, got quiet={quiet}, verbose={verbose}")
    if level is None:
        ours = logging.INFO + 10 * quiet - 10 * verbose
    elif isinstance(level, int) and not isinstance(level, bool):
        ours = level
    elif isinstance(level, str) and level.upper() in _LEVELS:
        ours = getattr(logging, level.upper())
    else:
        raise ConfigError(f"unknown log level {level!r}; known: {', '.join(_LEVELS)}")
    ours = min(max(ours, logging.DEBUG), logging.CRITICAL)
    third = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    # -q silences third parties as much as us; never louder than our own level asks.
    third = max(third, ours) if ours > logging.WARNING else third
    return LoggingOptions(level=ours, third_party=third, verbose=verbose)


def add_logging_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--log-level``, ``-q/--quiet`` and ``-v/--verbose`` to ``parser`` (returned).

    Read them back with ``setup_logging(args.log_level, args.quiet, args.verbose)``, or
    ``setup_logging(**logging_kwargs(args))``.

    >>> p = add_logging_args(argparse.ArgumentParser())
    >>> a = p.parse_args(["-vv"])
    >>> (a.log_level, a.quiet, a.verbose)
    (None, 0, 2)
    """
    g = parser.add_argument_group("logging")
    g.add_argument(
        "--log-level",
        default=None,
        type=str.upper,
        choices=_LEVELS,
        help="our log level (default INFO; -q/-v move it); Ray, MLflow etc. stay at WARNING "
        "unless -v",
    )
    g.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        help="less output: -q warnings and errors only (no progress), -qq errors only",
    )
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more output: -v our DEBUG and Ray/MLflow INFO, -vv everything at DEBUG",
    )
    return parser


def logging_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``{"level", "quiet", "verbose"}`` from arguments parsed with :func:`add_logging_args`."""
    return {
        "level": getattr(args, "log_level", None),
        "quiet": getattr(args, "quiet", 0),
        "verbose": getattr(args, "verbose", 0),
    }


class _Formatter(logging.Formatter):
    """Our format; strips ANSI codes unless the stream is a terminal."""

    def __init__(self, keep_ansi: bool) -> None:
        super().__init__(LOG_FORMAT, DATE_FORMAT)
        self.keep_ansi = keep_ansi

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if self.keep_ansi else strip_ansi(text)


class AnsiStrippingStream:
    r"""A text stream that writes to ``stream`` without ANSI escape codes.

    >>> import io
    >>> out = io.StringIO()
    >>> AnsiStrippingStream(out).write("8.0 s\x1b[32m [repeated 2x across cluster]\x1b[0m\n")
    35
    >>> out.getvalue()
    '8.0 s [repeated 2x across cluster]\n'
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(strip_ansi(text))

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class _WorkerFormatter(logging.Formatter):
    """``LEVEL name: message`` without ANSI codes (the driver adds time and worker)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


class ConsoleHandler(logging.StreamHandler):
    """A stream handler that prints above live tqdm bars (``tqdm.write``) on a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        super().__init__(stream if stream is not None else sys.stderr)
        # Without a stream of its own it writes to whatever ``sys.stderr`` is at the time
        # (as :data:`logging.lastResort`): a caller (pytest, a CLI test) that swaps and closes
        # the one seen here must not leave a handler on a closed file.
        self._follows_stderr = stream is None
        self.terminal = is_terminal(self.stream)
        self.setFormatter(_Formatter(keep_ansi=self.terminal))

    def filter(self, record: logging.LogRecord) -> bool:
        # Ray Data marks records meant for its log file only with ``hide``.
        return not getattr(record, "hide", False) and super().filter(record)

    def emit(self, record: logging.LogRecord) -> None:
        if self._follows_stderr:
            self.stream = sys.stderr
        if not self.terminal or "tqdm" not in sys.modules:
            super().emit(record)
            return
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise (as StreamHandler)
            self.handleError(record)


_installed: list[tuple[str, logging.Handler]] = []


def _ray_file_loggers() -> list[str]:
    """The names of :data:`_RAY_FILE_LOGGERS` here (their modules' ``__file__``), without
    importing them; none when Ray is not installed."""
    spec = importlib.util.find_spec("ray")
    if spec is None or spec.origin is None:
        return []
    folder = os.path.dirname(spec.origin)
    return [os.path.join(folder, *p.split("/")) for p in _RAY_FILE_LOGGERS]


def _ray_installed() -> bool:
    return importlib.util.find_spec("ray") is not None


def _console_handlers(log: logging.Logger) -> list[logging.Handler]:
    return [
        h
        for h in log.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def _take_back(families: tuple[str, ...], keep: tuple[str, ...]) -> None:
    """Loggers in ``families`` (and ours) that others configured follow ours again.

    Libraries configure loggers of their own in the driver (Ray Train's controller and Ray
    Data run ``logging.config.dictConfig``: level DEBUG, a console handler, ``propagate =
    False``; ``dictConfig`` also resets or disables descendants): a descendant's own level,
    a console handler and ``propagate = False`` would bypass the levels set here. Every
    existing logger in these families, except those in ``keep`` (handled by
    :func:`_setup_ray`), loses its console handlers (file handlers stay), propagates and
    inherits its level; ours are re-enabled.
    """
    prefixes = tuple(f"{f}." for f in families)
    for name, log in list(logging.root.manager.loggerDict.items()):
        if not isinstance(log, logging.Logger):
            continue  # a placeholder: no logger made there yet
        if name in ("abs_ray", "__main__") or name.startswith("abs_ray."):
            log.disabled = False
            continue
        if name in keep or not (name in families or name.startswith(prefixes)):
            continue
        if not log.propagate:
            for h in _console_handlers(log):
                log.removeHandler(h)
            log.propagate = True
        if name not in families:
            log.setLevel(logging.NOTSET)
        log.disabled = False


def _install(name: str, handler: logging.Handler) -> None:
    logging.getLogger(name).addHandler(handler)
    _installed.append((name, handler))


def setup_logging(
    level: str | int | None = None,
    quiet: int = 0,
    verbose: int = 0,
    *,
    stream: IO[str] | None = None,
    ray: bool = True,
    ray_progress_bars: bool = False,
    strip_streams: bool = True,
) -> LoggingOptions:
    """Configure this process's logging (see the module docstring); safe to call again.

    Args:
        level: ``--log-level`` (a name or number); None = INFO moved by ``quiet``/``verbose``.
        quiet: ``-q`` count.
        verbose: ``-v`` count.
        stream: where log lines go (default ``sys.stderr``).
        ray: also set up Ray and Ray Data (imports them when installed; pass False in a CLI
            that never uses Ray, to save the import).
        ray_progress_bars: keep Ray Data's own progress bars on a terminal (never when
            redirected).
        strip_streams: wrap ``sys.stdout``/``sys.stderr`` when they are not terminals so that
            what is printed past logging (Ray's worker-log lines) loses its ANSI codes too.

    Returns:
        The resolved :class:`LoggingOptions`.

    Raises:
        ConfigError: an unknown level name.
    """
    options = logging_options(level, quiet, verbose)
    while _installed:
        name, old = _installed.pop()
        logging.getLogger(name).removeHandler(old)
    root = logging.getLogger()
    # A handler a library's basicConfig put on the root would print every line twice.
    for h in list(root.handlers):
        if type(h) is logging.StreamHandler:
            root.removeHandler(h)
    handler = ConsoleHandler(stream)
    _install("", handler)
    root.setLevel(options.level)
    for name in ("abs_ray", "__main__"):
        logging.getLogger(name).setLevel(options.level)
    _take_back(THIRD_PARTY_LOGGERS, keep=("ray", "ray.data"))
    for name in (*THIRD_PARTY_LOGGERS, *_ray_file_loggers()):
        logging.getLogger(name).setLevel(options.third_party)
    for name in _PROGRESS_NOTICE_LOGGERS:
        quiet_level = max(logging.ERROR, options.third_party)
        logging.getLogger(name).setLevel(quiet_level if options.verbose == 0 else logging.NOTSET)

    if options.verbose == 0:
        # MLflow sets its own logger's level from this when it is imported (maybe later).
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(options.third_party))
    # MLflow imported later leaves its loggers alone; one imported earlier is taken back.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for name in _MLFLOW_CONFIGURED:
        mlflow_logger = logging.getLogger(name)
        if not mlflow_logger.propagate:
            mlflow_logger.handlers = []
            mlflow_logger.propagate = True
    for name in _SQL_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, options.third_party))
    if not handler.terminal or not is_terminal(sys.stdout):
        # Ray's driver prints worker log lines with a coloured "(pid=...)" prefix.
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
        # MLflow draws tqdm bars ("Downloading artifacts") on any stream once tqdm is there.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if strip_streams:
        # What Ray's driver prints itself (worker lines, "[repeated 2x across cluster]" in
        # green) bypasses logging: strip the codes from the redirected streams themselves.
        for name in ("stdout", "stderr"):
            stream_ = getattr(sys, name)
            if not is_terminal(stream_) and not isinstance(stream_, AnsiStrippingStream):
                setattr(sys, name, AnsiStrippingStream(stream_))
    if ray and _ray_installed():
        _setup_ray(stream, options, bars=ray_progress_bars and handler.terminal)
    return options


def _setup_ray(stream: IO[str] | None, options: LoggingOptions, bars: bool) -> None:
    """Ray's loggers through our format at ``options.third_party``; Ray Data's bars on/off.

    ``ray`` and ``ray.data`` do not propagate and print through their own stderr handlers
    in their own format: those are replaced by a :class:`ConsoleHandler` at the third-party
    level. Ray Data's file handler (``ray-data.log`` in the session folder) keeps every level.
    """
    # Importing ray (and ray.data) configures their loggers (level INFO/DEBUG, own stderr
    # handler): import first, then override, so that a later import cannot undo it.
    import ray  # noqa: F401
    import ray.data

    gate = ConsoleHandler(stream)
    gate.setLevel(options.third_party)
    for name in ("ray", "ray.data"):
        log = logging.getLogger(name)
        for h in _console_handlers(log):
            log.removeHandler(h)
        _install(name, gate)
    # ray.data's own level stays DEBUG (for its file); our handler's level gates the console.
    logging.getLogger("ray.data").setLevel(logging.DEBUG)
    ray.data.DataContext.get_current().enable_progress_bars = bars
    if not bars:
        # Data contexts made later start from the same default (read at import, e.g. in the
        # Ray Data and Train worker processes of a local cluster, which inherit this
        # environment).
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


# --- Ray worker processes ----------------------------------------------------------------------

_ENV_LEVEL = "ABS_RAY_LOG_LEVEL"
_ENV_THIRD = "ABS_RAY_THIRD_PARTY_LOG_LEVEL"


def worker_runtime_env(options: LoggingOptions) -> dict[str, Any]:
    """The ``runtime_env`` part that gives every Ray worker of a job the same levels.

    Ray Train workers, Ray Data's split coordinator and stage actors log in their own
    processes, and the driver prints what they log (``Reporting training result 3:
    TrainingReport(...)`` per epoch and worker); the driver's levels do not reach them. Pass
    this to ``ray.init(runtime_env=...)`` (merged with any other runtime_env keys): each worker
    runs :func:`setup_worker_logging` when it starts.

    >>> env = worker_runtime_env(logging_options(quiet=1))
    >>> env["worker_process_setup_hook"], env["env_vars"]["ABS_RAY_LOG_LEVEL"]
    ('abs_ray.console.logs.setup_worker_logging', 'WARNING')
    """
    env_vars = {
        _ENV_LEVEL: logging.getLevelName(options.level),
        _ENV_THIRD: logging.getLevelName(options.third_party),
        "RAY_COLOR_PREFIX": os.environ.get("RAY_COLOR_PREFIX", "0"),
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    if options.verbose == 0:
        env_vars["MLFLOW_LOGGING_LEVEL"] = logging.getLevelName(options.third_party)
        # Ray Data re-reads its logger config per dataset in a worker; this variable wins.
        env_vars["RAY_DATA_LOG_LEVEL"] = logging.getLevelName(options.third_party)
        env_vars["RAY_DATA_DISABLE_PROGRESS_BARS"] = "1"
        # Ray's deprecation notices about its own internal calls (Ray Train's DataConfig
        # sets ``ExecutionOptions.exclude_resources``) print from workers on every run; a
        # user's own PYTHONWARNINGS wins.
        env_vars["PYTHONWARNINGS"] = os.environ.get("PYTHONWARNINGS", "ignore::DeprecationWarning")
    return {
        "worker_process_setup_hook": "abs_ray.console.logs.setup_worker_logging",
        "env_vars": env_vars,
    }


def setup_worker_logging() -> None:
    """In a Ray worker process: our level for ``abs_ray``, the third-party level for Ray,
    MLflow and friends (from :func:`worker_runtime_env`'s variables; INFO/WARNING unset).

    Ray's own worker handlers stay (the driver prints what they write, prefixed with the
    worker's name and pid); ``abs_ray`` gets one stderr handler of its own, since a plain
    task or actor has none (its INFO lines would be lost) and Ray Train's differs.
    """
    ours = os.environ.get(_ENV_LEVEL, "INFO")
    third = os.environ.get(_ENV_THIRD, "WARNING")
    for name in ("abs_ray", "__main__"):
        logging.getLogger(name).setLevel(ours)
    log = logging.getLogger("abs_ray")
    if not any(getattr(h, "_abs_ray_worker", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_WorkerFormatter())
        handler._abs_ray_worker = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False
    for name in (*THIRD_PARTY_LOGGERS, *_ray_file_loggers()):
        logging.getLogger(name).setLevel(third)
    if third != "DEBUG":
        for name in _PROGRESS_NOTICE_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
