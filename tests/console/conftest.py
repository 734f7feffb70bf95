"""Fixtures for the console tests: logging state restored after each test, fake TTYs, a clock."""

from __future__ import annotations

import io
import logging

import pytest

_WATCHED = ("", "abs_ray", "__main__", "abs_ray.progress", "ray", "ray.data", "ray.train")


class FakeTTY(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    """Undo what setup_logging changes: handlers, levels, propagation, environment."""
    from abs_ray.console import THIRD_PARTY_LOGGERS

    names = {
        *_WATCHED,
        *THIRD_PARTY_LOGGERS,
        "ray.data._internal.progress",
        "sqlalchemy",
        "sqlalchemy.engine",
        "huey",
    }
    saved = {}
    for name in names:
        log = logging.getLogger(name)
        saved[name] = (list(log.handlers), log.level, log.propagate)
    for var in (
        "RAY_COLOR_PREFIX",
        "RAY_DATA_DISABLE_PROGRESS_BARS",
        "ABS_RAY_PROGRESS_INTERVAL",
        "MLFLOW_LOGGING_LEVEL",
        "MLFLOW_CONFIGURE_LOGGING",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    ):
        monkeypatch.delenv(var, raising=False)
    import sys

    # setup_logging wraps redirected stdout/stderr; the test's own streams come back after.
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    yield
    for name, (handlers, level, propagate) in saved.items():
        log = logging.getLogger(name)
        log.handlers[:] = handlers
        log.setLevel(level)
        log.propagate = propagate


@pytest.fixture
def make_tty():
    """Makes :class:`FakeTTY` streams."""
    return FakeTTY
