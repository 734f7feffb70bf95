"""What a person sees of `make run` when it is redirected (CI, `ray job submit`, `kubectl
logs`): at most 60 lines, no escape codes, progress lines, and the summary last."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from abs_ray.env import DEFAULTS

REPO = Path(__file__).resolve().parents[2]
PIPELINE = str(REPO / "jobs" / "pipeline.py")
#: A progress line: ``<date> <time> INFO abs_ray.progress: <stage>: <done>/<total> ...``.
#: The closing summary's lines.
SUMMARY = ("summary:", "rates:", "train ", "outputs:", "mlflow:")
PROGRESS = re.compile(r"INFO abs_ray\.progress: ([a-z ]+): (\d+)/(\d+) ")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the whole demo: ~6 min idle, more on a busy machine
def test_a_redirected_demo_run_is_short_plain_and_ends_with_the_summary(tmp_path):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in DEFAULTS and not k.startswith(("RAY_", "MLFLOW_", "ABS_RAY_"))
    }
    log = tmp_path / "out.txt"
    with open(log, "wb") as handle:  # as `make run > out.txt 2>&1`
        proc = subprocess.run(
            [sys.executable, PIPELINE, "--out", str(tmp_path / "out")],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            timeout=1800,
        )
    raw = log.read_bytes()
    text = raw.decode()
    lines = text.splitlines()
    assert proc.returncode == 0, text[-4000:]
    assert b"\x1b" not in raw, [line for line in lines if "\x1b" in line][:5]
    # What this project prints (its loggers, in the driver or forwarded from a worker, and
    # the closing summary) fits a screen. Ray's own processes add lines it cannot silence
    # (C++ core_worker notices, tracebacks of Ray-internal threads); they are counted in the
    # message, not in the bound.
    ours = [line for line in lines if " abs_ray." in line or line.startswith(SUMMARY)]
    assert len(ours) <= 60, f"{len(ours)} of {len(lines)} lines are ours:\n{text}"
    assert "TrainingReport(" not in text and "Total Progress" not in text
    # Ray Train's console lines follow the level given to Ray (WARNING without -v).
    assert "Reporting training result" not in text and "Checkpoint successfully" not in text
    assert not re.search(r"^\S+ \S+ ERROR ", text, re.M), text
    stages = {m.group(1) for m in PROGRESS.finditer(text)}
    assert {"detector epochs", "load", "detect", "inpaint", "train epochs"} <= stages, stages
    # Every stage that finished says so with done == total at least once.
    done = {m.group(1) for m in PROGRESS.finditer(text) if m.group(2) == m.group(3)}
    assert {"load", "detect", "inpaint", "train epochs"} <= done, done
    # The summary closes the output: nothing is logged after it.
    first = next(i for i, line in enumerate(lines) if line.startswith("summary: "))
    tail = lines[first:]
    assert [t.split(" ", 1)[0] for t in tail][:4] == ["summary:", "rates:", "train", "outputs:"]
    assert all(not re.match(r"^\d{4}-\d\d-\d\d ", t) for t in tail), tail
    assert re.search(r"worst-group accuracy (0|1)\.\d+", tail[2]), tail[2]
