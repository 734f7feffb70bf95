"""The entrypoints do what the README says: exit codes, one-line errors, Ray addresses, and the
README's cluster commands run exactly as written against a cluster started as documented."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from abs_ray.env import DEFAULTS
from abs_ray.io import join, read_text
from abs_ray.staging import list_attempts

REPO = Path(__file__).resolve().parents[2]
PIPELINE = str(REPO / "jobs" / "pipeline.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_env(**extra) -> dict:
    """A user's shell: none of the project's defaults, no Ray address, no MLflow store."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in DEFAULTS and not k.startswith(("RAY_", "MLFLOW_", "ABS_RAY_"))
    }
    return {**env, **extra}


def _job(*args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, PIPELINE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env or _fresh_env(),
    )


def _one_error_line(proc, error_type: str) -> str:
    """The job failed with exactly one ``error: Type: message`` line and no traceback."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {error_type}: "), proc.stderr[-3000:]
    return errors[0]


def test_an_unwritable_out_is_one_typed_line_before_ray(tmp_path, stranger):
    data = str(tmp_path / "data")
    stranger(data, "waterbirds", masks=True)
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    proc = _job("--data", data, "--out", str(blocker / "out"))
    line = _one_error_line(proc, "StorageError")
    assert str(blocker) in line
    assert "Ray:" not in proc.stderr  # Ray never started


def test_no_masks_no_labels_is_one_line_before_ray(tmp_path, stranger):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    stranger(data, "class_flat", masks=False)
    proc = _job("--data", data, "--out", out)
    line = _one_error_line(proc, "LabelsRequiredError")
    assert "abs-ray label" in line and "--mask_source saliency" in line
    assert "Ray:" not in proc.stderr and not Path(out, "_staging").exists()


def test_flags_the_run_cannot_honour_are_refused(tmp_path, stranger, tiny_checkpoint):
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    stranger(data, "class_flat", masks=False)
    common = ["--data", data, "--out", out, "--stages", "disentangle"]
    proc = _job(*common, "--detector_checkpoint", tiny_checkpoint, "--image_size", "64")
    assert "--image_size 64 differs from the detector checkpoint's 32" in _one_error_line(
        proc, "ConfigError"
    )
    proc = _job(*common, "--detector_checkpoint", tiny_checkpoint, "--detector.epochs", "9")
    assert "--detector.epochs: detector training settings" in _one_error_line(proc, "ConfigError")
    proc = _job(*common, "--mask_source", "saliency", "--inpainter_kwargs", '{"dilatee": 2}')
    assert "does not accept ['dilatee']" in _one_error_line(proc, "ConfigError")
    assert not Path(out, "manifest.json").exists()


def test_a_relative_out_inside_a_ray_job_is_refused(tmp_path, stranger):
    data = str(tmp_path / "data")
    stranger(data, "waterbirds", masks=True)
    env = _fresh_env(RAY_JOB_CONFIG_JSON_ENV_VAR="{}")  # what Ray's job supervisor sets
    proc = _job("--data", data, "--out", "runs/relative", env=env)
    line = _one_error_line(proc, "ConfigError")
    assert "relative path" in line and '--out "$PWD/runs/relative"' in line
    assert not (REPO / "runs" / "relative").exists()


def test_every_input_failing_exits_nonzero_on_a_new_local_cluster(
    ray_cluster, tmp_path, stranger, tiny_checkpoint
):
    """No --address: a new local cluster (not the session's, which ray start made current);
    all inputs broken: exit 1, a warning, errors by type, no absurd rates, nothing committed."""
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    info = stranger(data, "class_split", masks=False)
    for path in Path(data).rglob("*"):
        if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
            path.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    proc = _job(
        "--data",
        data,
        "--out",
        out,
        "--stages",
        "disentangle",
        "--detector_checkpoint",
        tiny_checkpoint,
        "--inpainter",
        "gray",
        "--inpaint.min_size",
        "1",
        "--inpaint.max_size",
        "1",
        timeout=480,
    )
    line = _one_error_line(proc, "NothingProducedError")
    n = len(info["ids"])
    assert f"all {n} inputs failed" in line and "nothing was committed" in line
    started = re.search(r"Ray: started a new local cluster at (\S+)", proc.stderr)
    assert started and started.group(1).rsplit(":", 1)[1] != ray_cluster["address"].rsplit(":")[1]
    assert re.search(rf"WARNING .*{n} of {n} inputs failed, by type: ", proc.stderr)
    assert not Path(out, "manifest.json").exists()
    (attempt, record), *_ = list_attempts(out)
    summary = record["summary"]
    assert record["state"] == "failed" and summary["counts"]["ok"] == 0
    assert sum(summary["errors_by_type"].values()) == n
    # Rates only over rows that went through a stage: none reached detect or inpaint.
    assert summary["rows_per_stage"]["load"] == n and summary["rows_per_stage"]["detect"] == 0
    assert summary["images_per_s"]["detect"] is None and summary["images_per_s"]["inpaint"] is None


def _readme_cluster_commands() -> list[str]:
    """The command lines of the README's "On a cluster" block, as written."""
    text = (REPO / "README.md").read_text()
    section = text.split("## On a cluster", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def test_the_readme_cluster_commands(tmp_path, stranger):
    """`make cluster`, the README's `ray job submit` line, `make cluster-stop` — in a shell
    without the project's environment; only ports (and where the head keeps its pid) come
    from the environment, and the test's tiny settings are appended to the job's line.

    With that head running (and named current by `ray start`, in a private RAY_TMPDIR so no
    other cluster on the machine interferes), `--address auto` joins it and no `--address`
    starts a new local cluster instead."""
    start, submit, stop = _readme_cluster_commands()
    assert start == "make cluster" and stop == "make cluster-stop"
    assert submit.startswith(".venv/bin/ray job submit ") and "-- python jobs/pipeline.py" in submit
    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    info = stranger(data, "waterbirds", masks=True)
    dash, gcs = _free_port(), _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="p14r", dir="/tmp")  # short: Ray's socket paths
    env = _fresh_env(
        RAY_TMPDIR=ray_tmp,
        ABS_RAY_PORT=str(gcs),
        ABS_RAY_DASHBOARD_PORT=str(dash),
        ABS_RAY_CLIENT_PORT=str(_free_port()),
        ABS_RAY_AGENT_PORT=str(_free_port()),
        ABS_RAY_NUM_CPUS="2",
        ABS_RAY_CLUSTER_DIR=str(tmp_path / "cluster"),
        # `ray job submit` takes its API address from here before --address.
        RAY_API_SERVER_ADDRESS=f"http://127.0.0.1:{dash}",
        # A shell with the venv not activated: `python` on PATH is not the project's.
        PATH=os.pathsep.join(
            p
            for p in os.environ["PATH"].split(os.pathsep)
            if Path(p) != Path(sys.executable).parent
        ),
    )
    extra = [
        "--data", data, "--out", out, "--detector.backbone", "test_tiny", "--image_size", "32",
        "--grid", "8", "--detector.epochs", "2", "--detector.num_labelled", "8",
        "--detector.trainable_blocks", "0", "--stages", "detector,disentangle",
        "--inpainter", "gray", "--preview_samples", "0",
        "--inpaint.min_size", "1", "--inpaint.max_size", "1",
    ]  # fmt: skip

    def shell(line: str, timeout: float):
        return subprocess.run(
            ["bash", "-c", line], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
        )

    started = shell(start, 300)
    try:
        assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
        state = json.loads((tmp_path / "cluster" / "cluster.json").read_text())
        assert state["dashboard"] == f"http://127.0.0.1:{dash}"
        job = None
        for _ in range(20):  # the head's job agent may still be starting
            job = shell(submit + " " + shlex.join(extra), 480)
            if "No available agent" not in job.stdout + job.stderr:
                break
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
        assert "succeeded" in job.stdout
        assert "Ray: joined the cluster at" in job.stdout + job.stderr
        summary = json.loads(read_text(join(out, "manifest.json")))
        n = len(info["ids"])
        assert summary["counts"] == {"input": n, "ok": n - 1, "errors": 1}

        quick = ["--data", data, "--stages", "disentangle", "--mask_source", "truth",
                 "--inpainter", "gray", "--preview_samples", "0",
                 "--inpaint.min_size", "1", "--inpaint.max_size", "1"]  # fmt: skip
        joined = _job(*quick, "--out", str(tmp_path / "auto"), "--address", "auto", env=env)
        assert joined.returncode == 0, joined.stderr[-3000:]
        where = re.search(r"Ray: joined the cluster at \S+:(\d+)", joined.stderr)
        assert where and int(where.group(1)) == gcs, joined.stderr[-3000:]
        new = _job(*quick, "--out", str(tmp_path / "new"), env=env)
        assert new.returncode == 0, new.stderr[-3000:]
        where = re.search(r"Ray: started a new local cluster at \S+:(\d+)", new.stderr)
        assert where and int(where.group(1)) != gcs, new.stderr[-3000:]
    finally:
        stopped = shell(stop, 120)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert not (tmp_path / "cluster" / "cluster.json").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(state["pid"], 0)
