"""setup_logging: our format, no ANSI when redirected, quiet third parties, CLI flags."""

from __future__ import annotations

import argparse
import io
import logging
import os
import re
import subprocess
import sys

import pytest

from abs_ray.console import add_logging_args, logging_kwargs, logging_options, setup_logging
from abs_ray.errors import ConfigError

ANSI = re.compile(r"\x1b\[")
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR) [\w.]+: ")


def test_redirected_output_has_no_ansi_codes():
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    logging.getLogger("abs_ray.x").info("dashboard at \x1b[1m\x1b[32mhttp://127.0.0.1:8265\x1b[39m")
    logging.getLogger("mlflow.store").warning("\x1b[33mcareful\x1b[0m")
    text = out.getvalue()
    assert "http://127.0.0.1:8265" in text and "careful" in text
    assert not ANSI.search(text), text
    lines = text.splitlines()
    assert len(lines) == 2 and all(LINE.match(line) for line in lines), lines


def test_terminal_keeps_colour_codes(make_tty):
    out = make_tty()
    setup_logging(stream=out, ray=False)
    logging.getLogger("abs_ray.x").info("\x1b[32mgreen\x1b[0m")
    assert "\x1b[32mgreen" in out.getvalue()


def test_redirected_worker_prefixes_are_not_coloured(monkeypatch):
    setup_logging(stream=io.StringIO(), ray=False)
    import os

    assert os.environ["RAY_COLOR_PREFIX"] == "0"


def test_printed_lines_lose_ansi_when_redirected(capsys):
    setup_logging(stream=io.StringIO(), ray=False)
    # As Ray's driver prints worker lines: print(), past logging.
    print("(RayTrainWorker pid=1) epoch 1 | 9.3 s\x1b[32m [repeated 2x across cluster]\x1b[0m")
    out = capsys.readouterr().out
    assert out == "(RayTrainWorker pid=1) epoch 1 | 9.3 s [repeated 2x across cluster]\n"


def test_mlflow_level_follows_when_imported_later():
    import os

    setup_logging(stream=io.StringIO(), ray=False)
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "WARNING"


def _ray_logger_as_before_import() -> None:
    """Once Ray is imported anywhere in the process (the full suite), its ``ray`` logger has a
    handler of its own and does not propagate; setup_logging(ray=False) leaves it so. These
    tests are about the loggers below it: start from ``ray`` as it is before the import
    (restore_logging puts it back)."""
    log = logging.getLogger("ray")
    log.handlers[:] = []
    log.propagate = True


def test_third_parties_at_warning_unless_verbose():
    _ray_logger_as_before_import()
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    logging.getLogger("ray.train.v2.controller").info("TrainingReport(metrics={...})")
    logging.getLogger("urllib3.connectionpool").info("Starting new HTTP connection")
    logging.getLogger("filelock").debug("lock acquired")
    logging.getLogger("mlflow.tracking").warning("a warning that matters")
    logging.getLogger("abs_ray.pipeline").info("ours")
    text = out.getvalue()
    assert "TrainingReport" not in text and "HTTP connection" not in text
    assert "lock acquired" not in text
    assert "a warning that matters" in text and "ours" in text

    out = io.StringIO()
    setup_logging(verbose=1, stream=out, ray=False)
    logging.getLogger("ray.train.v2.controller").info("TrainingReport(metrics={...})")
    logging.getLogger("abs_ray.pipeline").debug("our debug")
    logging.getLogger("filelock").debug("lock acquired")
    text = out.getvalue()
    assert "TrainingReport" in text and "our debug" in text and "lock acquired" not in text


def test_mlflow_imported_first_still_logs_through_ours():
    """MLflow's import gives ``mlflow`` a stderr handler and ``propagate = False``; its
    warnings then missed our stream whenever mlflow had been imported before (the full suite)."""
    from mlflow.utils.logging_utils import _configure_mlflow_loggers

    _configure_mlflow_loggers("mlflow")  # what ``import mlflow`` does
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    logging.getLogger("mlflow.tracking").warning("a warning that matters")
    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT 1")
    assert "a warning that matters" in out.getvalue()
    assert "SELECT" not in out.getvalue()


def test_default_stream_is_stderr_at_the_time(monkeypatch):
    """A handler set up without a stream writes to the current ``sys.stderr``, so a swapped
    and closed one (pytest's capture, a CLI test) never gets "I/O operation on closed file"."""
    import sys

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging(ray=False, strip_streams=False)
    first.close()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("abs_ray.x").warning("after the swap")
    assert "after the swap" in second.getvalue()
    assert "Logging error" not in second.getvalue() and len(second.getvalue().splitlines()) == 1


def test_quiet_and_explicit_level():
    out = io.StringIO()
    setup_logging(quiet=1, stream=out, ray=False)
    logging.getLogger("abs_ray.pipeline").info("chatter")
    logging.getLogger("abs_ray.pipeline").warning("a problem")
    assert "chatter" not in out.getvalue() and "a problem" in out.getvalue()

    out = io.StringIO()
    setup_logging("debug", stream=out, ray=False)
    logging.getLogger("abs_ray.pipeline").debug("details")
    assert "details" in out.getvalue()


def test_setup_twice_prints_each_line_once():
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    setup_logging(stream=out, ray=False)
    logging.getLogger("abs_ray.x").info("once")
    assert out.getvalue().count("once") == 1


def test_ray_loggers_use_our_handler_and_data_bars_are_off():
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    try:
        out = io.StringIO()
        setup_logging(stream=out)
        logging.getLogger("ray").info("Started a local Ray instance \x1b[32mhere\x1b[39m")
        logging.getLogger("ray.data._internal.execution").info("Execution plan: ...")
        logging.getLogger("ray.data._internal.progress").warning("Progress bars disabled.")
        logging.getLogger("ray._private.worker").error("a real error")
        logging.getLogger("ray.data").warning("a data warning")
        text = out.getvalue()
        assert "Started a local Ray" not in text and "Execution plan" not in text
        assert "Progress bars disabled" not in text
        assert "a real error" in text and "a data warning" in text
        assert all(LINE.match(line) for line in text.splitlines()), text
        assert ctx.enable_progress_bars is False
        # Ray Data's file log keeps every level.
        assert logging.getLogger("ray.data").level == logging.DEBUG
        assert any(
            isinstance(h, logging.Handler) and "SessionFileHandler" in type(h).__name__
            for h in logging.getLogger("ray.data").handlers
        )
    finally:
        ctx.enable_progress_bars = before


def test_ray_progress_bars_only_on_a_terminal(make_tty):
    import ray.data

    ctx = ray.data.DataContext.get_current()
    before = ctx.enable_progress_bars
    try:
        setup_logging(stream=make_tty(), ray_progress_bars=True)
        assert ctx.enable_progress_bars is True
        setup_logging(stream=io.StringIO(), ray_progress_bars=True)
        assert ctx.enable_progress_bars is False
    finally:
        ctx.enable_progress_bars = before


def test_cli_flags():
    p = add_logging_args(argparse.ArgumentParser())
    assert logging_kwargs(p.parse_args([])) == {"level": None, "quiet": 0, "verbose": 0}
    assert logging_kwargs(p.parse_args(["-qq"]))["quiet"] == 2
    assert logging_kwargs(p.parse_args(["--log-level", "debug"]))["level"] == "DEBUG"
    with pytest.raises(SystemExit):
        p.parse_args(["--log-level", "loud"])


@pytest.mark.parametrize(
    ("kwargs", "ours", "theirs"),
    [
        ({}, logging.INFO, logging.WARNING),
        ({"quiet": 1}, logging.WARNING, logging.WARNING),
        ({"quiet": 2}, logging.ERROR, logging.ERROR),
        ({"verbose": 1}, logging.DEBUG, logging.INFO),
        ({"level": "WARNING", "verbose": 1}, logging.WARNING, logging.INFO),
    ],
)
def test_levels(kwargs, ours, theirs):
    o = logging_options(**kwargs)
    assert (o.level, o.third_party) == (ours, theirs)


def test_bad_levels():
    with pytest.raises(ConfigError, match="unknown log level"):
        logging_options("loud")
    with pytest.raises(ConfigError, match=">= 0"):
        logging_options(quiet=-1)


def test_loggers_a_library_configured_follow_ours(capsys):
    """Ray Train's controller configures ``ray.train`` with ``dictConfig`` (DEBUG, its own
    console handler, no propagation) in the driver; earlier tests in the same process did
    the same, and a later ``setup_logging`` left its per-epoch lines on the console."""
    import logging.config

    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "handlers": {"console": {"class": "logging.StreamHandler"}},
            "loggers": {
                "ray.train": {"level": "DEBUG", "handlers": ["console"], "propagate": False},
                "urllib3.connectionpool": {"level": "DEBUG"},
            },
        }
    )
    logging.getLogger("abs_ray.pipeline").disabled = True  # as disable_existing_loggers does
    _ray_logger_as_before_import()
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    logging.getLogger("ray.train.v2.controller").info("TrainingReport(metrics={...})")
    logging.getLogger("ray.train").warning("a train warning")
    logging.getLogger("urllib3.connectionpool").info("Starting new HTTP connection")
    logging.getLogger("abs_ray.pipeline").info("ours")
    text, err = out.getvalue(), capsys.readouterr().err
    assert "TrainingReport" not in text + err and "HTTP connection" not in text + err
    assert "a train warning" in text and "a train warning" not in err
    assert "ours" in text


def test_ray_train_report_lines_follow_the_third_party_level():
    """Ray Train logs "Reporting training result N: TrainingReport(...)" per epoch and worker
    through ``logging.getLogger(__file__)``: a logger outside ``ray.train`` that neither its
    level nor Ray Train's ``LoggingConfig`` filter reached, in the driver or in a worker."""
    from ray.train.v2._internal.execution import context

    setup_logging(stream=io.StringIO(), ray=False)
    assert not context.logger.isEnabledFor(logging.INFO)
    assert context.logger.isEnabledFor(logging.WARNING)
    # A worker process (its own, as Ray starts it): the level from worker_runtime_env.
    code = (
        "import logging\n"
        "from abs_ray.console import setup_worker_logging\n"
        "setup_worker_logging()\n"
        "from ray.train.v2._internal.execution import context\n"
        "print(context.logger.getEffectiveLevel())\n"
    )
    env = {**os.environ, "ABS_RAY_THIRD_PARTY_LOG_LEVEL": "WARNING"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(logging.WARNING)


def test_workers_hide_ray_deprecation_notices_unless_verbose(monkeypatch):
    """Ray Train's DataConfig sets a deprecated Ray Data option itself: a two-line
    RayDeprecationWarning from a DatasetManager worker on every training run."""
    from abs_ray.console import worker_runtime_env

    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    quiet = worker_runtime_env(logging_options())["env_vars"]
    assert quiet["PYTHONWARNINGS"] == "ignore::DeprecationWarning"
    code = "import warnings; from ray.util.annotations import RayDeprecationWarning as W; "
    code += "warnings.warn('old', W)"
    env = {**os.environ, "PYTHONWARNINGS": quiet["PYTHONWARNINGS"]}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "old" not in done.stderr
    assert "PYTHONWARNINGS" not in worker_runtime_env(logging_options(verbose=1))["env_vars"]
    monkeypatch.setenv("PYTHONWARNINGS", "error")
    assert worker_runtime_env(logging_options())["env_vars"]["PYTHONWARNINGS"] == "error"
