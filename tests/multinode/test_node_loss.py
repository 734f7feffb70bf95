"""Losing a whole worker node in the middle of ``disentangle`` and in the middle of training,
on a real multi-node cluster (head + 2 workers as separate ``ray start`` process trees).

The jobs run as subprocesses (``jobs/pipeline.py --address``), like a user's driver, so this
test process's own session cluster is untouched. Data, outputs and checkpoints are on the
moto S3 server; MLflow is a tracking server. The kill is timed on progress read from storage
(no wall-time assumptions): rows written for ``disentangle``, the controller's committed
checkpoint for training.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from abs_ray.data import SyntheticConfig, load_dataset, write_synthetic
from abs_ray.io import exists, join, read_text, write_bytes
from abs_ray.stages.sink import read_ids
from abs_ray.staging import list_attempts

# Minutes each on a loaded 2-core machine (cluster start, actor start-up, node-death detection).
pytestmark = [pytest.mark.fault, pytest.mark.timeout(1800)]
logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
#: 64 images at 32 px: 32 train (for the classifier), 16 val, 16 test.
DATA = SyntheticConfig(n_train=32, n_val=16, n_test=16, size=32, seed=3)
N = DATA.n_train + DATA.n_val + DATA.n_test
#: Blocks of 4 rows: 16 decode/write tasks, so output appears a few rows at a time.
BLOCK = 4
EPOCHS = 6
JOB_TIMEOUT = 900
#: Seconds of arithmetic per inpainted batch (on one core of this machine, measured when the
#: test starts): 16 batches over at most 4 actors keep the stage busy for ~30 s after the first
#: rows are written, however fast the machine is.
INPAINT_BATCH_SECONDS = 8.0


def _job(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 (closed by the caller through _finish)
    return subprocess.Popen(
        [sys.executable, "jobs/pipeline.py", *args],
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )


def _finish(job: subprocess.Popen, log: Path, timeout: float = JOB_TIMEOUT) -> None:
    try:
        job.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        job.kill()
        job.wait()
    assert job.returncode == 0, log.read_text()[-6000:]


def _kill_when(job, cluster, ready, pick, what: str) -> dict:
    """Poll ``ready()`` until it returns progress (not None), then kill the node ``pick()``
    chooses; the job must still be running then, else the kill came too late."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended before the kill ({what})"
        progress = ready()
        if progress is not None:
            node = pick()
            processes = node.kill()
            event = {"node": node.name, "processes": processes, **progress}
            logger.info("killed worker node %s during %s: %s", node.name, what, event)
            return event
        time.sleep(0.3)
    raise TimeoutError(f"no progress to kill on during {what}")


@pytest.fixture(scope="module")
def source(multinode, s3_server, tmp_path_factory):
    """The synthetic data set on S3 (two inputs broken) and a slow TorchScript inpainter.

    ``disentangle`` runs on the data set's true masks: an untrained detector marks whole images
    as foreground, which no inpainter is called for, so the stage would have no work in flight
    to lose."""
    s3 = s3_server
    bucket = f"mn-{os.getpid()}-{int(time.time())}"
    s3.boto3_client().create_bucket(Bucket=bucket)
    data = f"s3://{bucket}/src"
    write_synthetic(data, DATA, s3)
    manifest = load_dataset(data, s3).set_index("id")
    broken = list(manifest.index[manifest["split"] == "test"][:2])
    for i in broken:
        write_bytes(manifest.loc[i, "image_uri"], b"not an image", s3)
    inpainter = f"s3://{bucket}/slow_inpainter.pt"
    write_bytes(inpainter, _slow_inpainter(), s3)
    return {
        "bucket": bucket,
        "data": data,
        "inpainter": inpainter,
        "ids": set(manifest.index),
        "broken": set(broken),
        "out": f"s3://{bucket}/out",
        "logs": tmp_path_factory.mktemp("jobs"),
    }


class _BusyInpainter(torch.nn.Module):
    """A TorchScript inpainter (mean colour fill) that does a fixed amount of arithmetic per
    batch first, so that ``disentangle`` is still inpainting when the first rows are written
    and the kill lands on work in flight (at 32 px every real inpainter finishes the whole
    data set within the storage poll that sees the first rows)."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = torch.full((256, 256), 1.0 / 256)
        acc = a
        for _ in range(self.steps):
            acc = acc @ a
        mean = image.mean(dim=(2, 3), keepdim=True)
        return image * (1 - mask) + mean * mask + 0.0 * acc.sum()


def _busy_steps(seconds: float) -> int:
    """Matrix products that take ``seconds`` on one core here: a calibration of the test's
    own pace (the machine's speed is unknown), not a timed assertion."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probe = torch.jit.script(_BusyInpainter(40))
        image, mask = torch.rand(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)
        probe(image, mask)  # warm-up
        t0 = time.perf_counter()
        probe(image, mask)
        per_step = max((time.perf_counter() - t0) / 40, 1e-6)
    finally:
        torch.set_num_threads(threads)
    return int(min(max(seconds / per_step, 300), 200_000))


def _slow_inpainter() -> bytes:
    steps = _busy_steps(INPAINT_BATCH_SECONDS)
    logger.info("slow inpainter: %d matrix products per batch", steps)
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(_BusyInpainter(steps)), buffer)
    return buffer.getvalue()


def _env(mlflow_url: str | None = None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if mlflow_url:
        env["MLFLOW_TRACKING_URI"] = mlflow_url
    return env


@pytest.fixture(scope="module")
def disentangled(multinode, source, s3_server):
    """``disentangle`` with a worker node killed once the first rows are written."""
    s3, out = s3_server, source["out"]
    log = source["logs"] / "disentangle.log"
    # fmt: off
    job = _job(
        [
            "--address", multinode.address, "--data", source["data"], "--out", out,
            "--stages", "disentangle", "--mask_source", "truth",
            "--inpainter", "torchscript",
            "--inpainter_kwargs", json.dumps({"uri": source["inpainter"]}),
            "--load.batch_size", str(BLOCK),
            "--detect.batch_size", str(BLOCK), "--inpaint.batch_size", str(BLOCK),
            "--preview_samples", "0",
        ],
        log,
        _env(),
    )
    # fmt: on

    def rows_written():
        # Rows land in the run's staging folder until the run commits (abs_ray.staging);
        # ``<out>/data`` appears only once the job is over.
        done = [
            i
            for attempt, _ in list_attempts(out, s3)
            if exists(attempt.path("data"), s3)
            for i in read_ids(attempt.path("data"), s3)
        ]
        return {"rows_written": len(done)} if done else None

    def pick():
        # A node with an inpainting actor: the slow stage, so it has work in flight.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert job.poll() is None, "disentangle finished before a node could be picked"
            node = multinode.worker_running("InpaintBackgrounds")
            if node is not None:
                return node
            time.sleep(0.2)
        raise AssertionError("no worker node runs an inpainting actor")

    t0 = time.monotonic()
    kill = _kill_when(job, multinode, rows_written, pick, "disentangle")
    _finish(job, log)
    manifest = json.loads(read_text(join(out, "manifest.json"), s3))
    return {"kill": kill, "manifest": manifest, "seconds": time.monotonic() - t0}


def test_losing_a_node_during_disentangle_loses_and_duplicates_nothing(
    disentangled, source, s3_server
):
    kill, manifest = disentangled["kill"], disentangled["manifest"]
    ok_expected = N - len(source["broken"])
    assert 0 < kill["rows_written"] < ok_expected  # the node died mid-stage
    ok = read_ids(join(source["out"], "data"), s3_server, drop_unreadable=False)
    errors = read_ids(join(source["out"], "errors"), s3_server, drop_unreadable=False)
    # Every id exactly once in data/ ∪ errors/.
    assert len(ok) == len(set(ok)) == ok_expected
    assert len(errors) == len(set(errors)) == len(source["broken"])
    assert set(ok) | set(errors) == source["ids"] and set(errors) == source["broken"]
    assert manifest["counts"] == {"input": N, "ok": ok_expected, "errors": len(source["broken"])}
    # The manifest says what happened.
    faults = manifest["faults"]["disentangle"]
    logger.info("disentangle: kill %s; faults %s", kill, faults)
    assert len(faults["nodes_lost"]) == 1 and faults["state_api"]
    assert sum(faults["actor_restarts"].values()) + sum(faults["actors_died"].values()) >= 1, faults
    assert sum(faults["failed_task_attempts"].values()) >= 1, faults


def _latest_committed_epoch(out: str, s3) -> int | None:
    """Epoch of the training controller's latest committed checkpoint (None before the first)."""
    uri = join(out, "train", "ray", "abs-test_tiny-s0", "checkpoint_manager_snapshot.json")
    if not exists(uri, s3):
        return None
    latest = json.loads(read_text(uri, s3)).get("latest_checkpoint_result") or {}
    epoch = (latest.get("metrics") or {}).get("epoch")
    return None if epoch is None else int(epoch)


def test_losing_a_node_during_training_resumes_from_the_last_checkpoint(
    disentangled, multinode, source, s3_server, mlflow_server
):
    s3, out = s3_server, source["out"]
    multinode.ensure_workers(2)  # replace the node the disentangle test killed
    log = source["logs"] / "train.log"
    # fmt: off
    job = _job(
        [
            "--address", multinode.address, "--data", source["data"], "--out", out,
            "--stages", "train", "--train.method", "abs", "--train.backbone", "test_tiny",
            "--train.epochs", str(EPOCHS), "--train.num_workers", "2",
        ],
        log,
        _env(mlflow_server),
    )
    # fmt: on

    def committed():
        epoch = _latest_committed_epoch(out, s3)
        return {"epoch_committed": epoch} if epoch is not None else None

    def pick():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            node = multinode.worker_running("RayTrainWorker")
            if node is not None:
                return node
            time.sleep(0.2)
        raise AssertionError("no worker node runs a Ray Train worker")

    t0 = time.monotonic()
    kill = _kill_when(job, multinode, committed, pick, "training")
    _finish(job, log)
    seconds = time.monotonic() - t0
    manifest = json.loads(read_text(join(out, "manifest.json"), s3))
    train, faults = manifest["train"], manifest["faults"]["train"]
    logger.info("training: kill %s; faults %s; %.0f s", kill, faults, seconds)
    report = json.loads(read_text(train["report"], s3))

    assert kill["epoch_committed"] < EPOCHS - 1
    # One restart, from a checkpoint at least as new as the one seen before the kill.
    assert report["attempts"] == 2 == faults["training_attempts"]
    (resumed,) = report["resumed_from_epochs"]
    assert faults["resumed_from_epochs"] == [resumed]
    assert kill["epoch_committed"] + 1 <= resumed <= EPOCHS - 1
    assert [h["epoch"] for h in report["history"]] == list(range(EPOCHS))
    assert report["epochs_completed"] == EPOCHS
    # The lost training workers' calls failed (the controller then replaces the worker group).
    assert len(faults["nodes_lost"]) == 1
    assert any(name.startswith("RayTrainWorker.") for name in faults["failed_task_attempts"])

    # MLflow holds the one run, with every epoch (an epoch redone after the kill may be
    # logged twice: both runs of it happened).
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    steps = {m.step for m in client.get_metric_history(report["mlflow"]["run_id"], "train/loss")}
    assert steps == set(range(EPOCHS))
