"""A failed run never destroys a previous one; resume finishes it (abs_ray.staging).

Each test first makes a finished output, then breaks a second run in a different way and
checks the finished output is still there, byte for byte, and readable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from abs_ray.errors import ConfigError, NothingProducedError
from abs_ray.io import join, read_text, write_bytes
from abs_ray.pipeline import read_disentangled, run
from abs_ray.staging import list_attempts

REPO = Path(__file__).resolve().parents[2]


def snapshot(folder) -> dict[str, bytes]:
    """Every file under a local folder → its bytes."""
    root = Path(folder)
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


#: Not the output: the attempts, and the MLflow store `jobs/pipeline.py` keeps in a local
#: output (``<out>/mlflow.db``, ``<out>/mlartifacts``), which records every attempt, failed too.
NOT_OUTPUT = ("_staging", "mlflow.db", "mlartifacts")


def committed(folder) -> dict[str, bytes]:
    """The committed output: everything but the attempts and the MLflow store."""
    return {k: v for k, v in snapshot(folder).items() if not k.startswith(NOT_OUTPUT)}


def pipeline_runs(out) -> list[str]:
    """Status of each pipeline run in ``<out>/mlflow.db``, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{os.path.join(out, 'mlflow.db')}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        order_by=["attributes.start_time ASC"],
    )
    return [r.info.status for r in runs if r.info.run_name.startswith("pipeline")]


@pytest.fixture
def finished(ray_cluster, tmp_path_factory, stranger, tiny):
    """A data set and a finished output of it (detector trained from masks)."""
    root = tmp_path_factory.mktemp("finished")
    data, out = str(root / "data"), str(root / "out")
    info = stranger(data, "waterbirds", masks=True)
    run(tiny(data, out))
    return data, out, info


def test_a_typo_fails_fast_and_leaves_the_output_byte_identical(finished, tiny):
    data, out, _ = finished
    before = snapshot(out)
    t0 = time.perf_counter()
    for bad in (
        {"inpainter": "patchmach"},
        {"inpainter": "telea", "inpainter_kwargs": {"radius": 0}},
        {"inpainter": "telea", "inpainter_kwargs": {"radiuss": 3}},
    ):
        with pytest.raises(ConfigError, match="patchmach|radius") as err:
            run(tiny(data, out, **bad))
        assert "\n" not in str(err.value)
    # A geometry the given checkpoint cannot honour is refused, not ignored.
    with pytest.raises(ConfigError, match="--image_size 64 differs from the detector checkpoint"):
        run(
            tiny(
                data,
                out,
                stages=("disentangle",),
                detector_checkpoint=join(out, "detector", "detector.pt"),
                image_size=64,
                grid=8,
            )
        )
    assert time.perf_counter() - t0 < 120  # no Ray work happened (generous: shared machine)
    assert snapshot(out) == before


def test_a_run_that_fails_mid_disentangle_keeps_the_previous_output(finished, tiny, monkeypatch):
    """The attempt's data is written, then the run fails: nothing of it is committed; resume
    finishes the same attempt without redoing its rows."""
    import abs_ray.pipeline.disentangle_stage as pipeline

    data, out, info = finished
    before = committed(out)

    def broken_preview(*args, **kwargs):
        raise RuntimeError("injected failure after the disentangle stream")

    monkeypatch.setattr(pipeline, "swap_preview", broken_preview)
    with pytest.raises(RuntimeError, match="injected"):
        run(tiny(data, out, inpainter="gray"))
    assert committed(out) == before
    (attempt, record), *_ = list_attempts(out)
    assert record["state"] == "failed" and "injected" in record["error"]
    assert len(read_disentangled(out)) == len(info["ids"]) - 1  # readable as before
    monkeypatch.undo()

    summary = run(tiny(data, out, inpainter="gray", resume=True))
    assert summary["run_id"] == attempt.run_id
    assert summary["processed_this_run"]["rows"] == 0  # every row was already in the attempt
    assert json.loads(read_text(join(out, "manifest.json")))["config"]["inpainter"] == "gray"
    assert list_attempts(out) == []
    assert set(read_disentangled(out)["inpainter"]) == {'{"name": "gray"}'}


def test_a_crash_mid_commit_is_finished_by_the_next_run(finished, tiny, monkeypatch):
    import abs_ray.staging as staging

    data, out, info = finished
    real_delete = staging.delete

    def crash_after_data(uri, s3=None, missing_ok=True):
        # Crash while replacing errors/, after detector/ and data/ were moved in.
        if uri == join(out, "errors"):
            raise OSError("injected crash mid-commit")
        return real_delete(uri, s3, missing_ok)

    monkeypatch.setattr(staging, "delete", crash_after_data)
    same_detector = {
        "stages": ("disentangle",),
        "detector_checkpoint": join(out, "detector", "detector.pt"),
    }
    with pytest.raises(OSError, match="mid-commit"):
        run(tiny(data, out, inpainter="gray", **same_detector))
    marker = json.loads(read_text(join(out, "manifest.json")))
    assert marker["state"] == "replacing" and "_staging" in marker["replacing_with"]
    monkeypatch.undo()

    # The next run (a different one, even) first completes the interrupted commit.
    with pytest.raises(ConfigError):
        run(tiny(data, out, inpainter="no-such-inpainter"))
    assert json.loads(read_text(join(out, "manifest.json")))["state"] == "replacing"
    summary = run(tiny(data, out, inpainter="gray", resume=True, **same_detector))
    manifest = json.loads(read_text(join(out, "manifest.json")))
    assert manifest["state"] == "complete" and manifest["counts"]["ok"] == len(info["ids"]) - 1
    assert summary["run_id"] == manifest["run_id"]
    rows = read_disentangled(out)
    assert set(rows["inpainter"]) == {'{"name": "gray"}'} and rows["id"].is_unique
    assert list_attempts(out) == []


def test_a_killed_driver_keeps_the_previous_output_and_resume_finishes(
    ray_cluster, tmp_path, tiny, tiny_checkpoint
):
    """`jobs/pipeline.py` killed (SIGKILL) while it writes its attempt; `--resume true` finishes it."""
    from abs_ray.data import SyntheticConfig, write_synthetic

    data, out = str(tmp_path / "data"), str(tmp_path / "out")
    n = 160
    write_synthetic(data, SyntheticConfig(n_train=120, n_val=20, n_test=20, size=32, seed=3))
    run(tiny(data, out, stages=("disentangle",), detector_checkpoint=tiny_checkpoint))
    before = committed(out)
    cmd = [
        sys.executable,
        str(REPO / "jobs" / "pipeline.py"),
        "--address",
        ray_cluster["address"],
        "--data",
        data,
        "--out",
        out,
        "--stages",
        "disentangle",
        "--detector_checkpoint",
        tiny_checkpoint,
        "--inpainter",
        "patchmatch",
        "--load.batch_size",
        "8",
        "--inpaint.min_size",
        "1",
        "--inpaint.max_size",
        "1",
        "--inpaint.batch_size",
        "4",
        "--preview_samples",
        "0",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    staging = Path(out) / "_staging"
    deadline = time.monotonic() + 400
    while not list(staging.glob("*/data/*.parquet")):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the run wrote nothing in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    assert committed(out) == before
    (attempt, record), *_ = list_attempts(out)
    assert record["state"] == "running"

    done = subprocess.run([*cmd, "--resume", "true"], capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = json.loads(read_text(join(out, "manifest.json")))
    assert manifest["run_id"] == attempt.run_id and manifest["state"] == "complete"
    assert manifest["counts"] == {"input": n, "ok": n, "errors": 0}
    assert 0 < manifest["processed_this_run"]["rows"] < n
    rows = read_disentangled(out)
    assert rows["id"].is_unique and len(rows) == n
    assert set(rows["inpainter"]) == {'{"name": "patchmatch"}'}
    assert list_attempts(out) == []
    # MLflow saw both attempts: the killed one can only stay RUNNING (nothing ended it).
    assert pipeline_runs(out) == ["RUNNING", "FINISHED"]


def test_nothing_produced_is_an_error_and_commits_nothing(finished, tiny):
    data, out, info = finished
    before = committed(out)
    broken = os.path.join(os.path.dirname(data), "all broken")
    import shutil

    shutil.copytree(data, broken)
    for name in Path(broken, "images").iterdir():
        write_bytes(str(name), b"junk")
    with pytest.raises(NothingProducedError, match="all 19 inputs failed") as err:
        run(tiny(broken, out, stages=("disentangle",), mask_source="truth"))
    assert "NotAnImageError: 19" in str(err.value)
    assert committed(out) == before


def test_a_failed_training_keeps_the_data_and_says_so(finished, tiny, monkeypatch):
    import abs_ray.train

    data, out, info = finished
    before = committed(out)

    def broken_training(cfg, s3=None, **kwargs):
        raise RuntimeError("injected: the trainer's workers died")

    monkeypatch.setattr(abs_ray.train, "run_training", broken_training)
    with pytest.raises(RuntimeError, match="workers died"):
        run(tiny(data, out, stages=("train",)))
    after = committed(out)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }
    manifest = json.loads(after["manifest.json"])
    assert manifest["state"] == "complete" and manifest["counts"]["ok"] == len(info["ids"]) - 1
    assert manifest["train"]["state"] == "failed" and "workers died" in manifest["train"]["error"]
    assert len(read_disentangled(out)) == len(info["ids"]) - 1
