"""RemoteProgress: Ray tasks and Ray Data stage actors report to the driver's board."""

from __future__ import annotations

import io

import numpy as np
import pytest

from abs_ray.console import NULL_PROGRESS, ProgressBoard, ProgressSink, RemoteProgress
from abs_ray.console import setup_logging as _setup_logging


class CountingStage:
    """A Ray Data stage callable in the shape the pipeline's stages take: an optional sink."""

    def __init__(self, progress: ProgressSink | None = None) -> None:
        self.progress = progress or NULL_PROGRESS

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.progress.add("double", len(batch["id"]))
        return {"id": batch["id"] * 2}


def test_stage_callable_without_ray():
    board = ProgressBoard(mode="off")
    out = CountingStage(board)({"id": np.arange(5)})
    assert out["id"].tolist() == [0, 2, 4, 6, 8] and board["double"].n == 5
    assert CountingStage()({"id": np.arange(2)})["id"].tolist() == [0, 2]


def test_tasks_report_to_the_driver(ray_cluster):
    import ray

    @ray.remote(num_cpus=0.25)
    def work(progress, n):
        for _ in range(n):
            progress.add("work")
        return n

    out = io.StringIO()
    _setup_logging(stream=out, ray=False)
    with RemoteProgress(poll_s=0.1) as remote:
        remote.progress("work", total=30)
        assert sum(ray.get([work.remote(remote.handle, 10) for _ in range(3)])) == 30
    board = remote.board
    assert board["work"].n == 30 and board["work"].closed
    assert "work: 30/30 (100 %) done in" in out.getvalue()
    with pytest.raises(RuntimeError, match="inside"):
        remote.handle  # noqa: B018 - the actor is gone after `with`


def test_workers_declare_totals_and_finish(ray_cluster):
    import ray

    @ray.remote(num_cpus=0.25)
    def epoch(progress, samples):
        progress.set_total("train epoch 0", samples)
        for _ in range(samples // 8):
            progress.add("train epoch 0", 8)
        progress.finish("train epoch 0")

    board = ProgressBoard(mode="off")
    with RemoteProgress(board, poll_s=0.1) as remote:
        ray.get(epoch.remote(remote.handle, 64))
        remote._settle()
        step = board["train epoch 0"]
        assert (step.n, step.total, step.closed) == (64, 64, True)


def test_counts_arriving_after_a_quiet_spell_still_count(ray_cluster):
    """A worker's last calls can reach the counter actor well after its task returned (a
    loaded machine: 0 of 30 counted once in CI); a stage with a total waits for them."""
    import threading

    board = ProgressBoard(mode="off")
    with RemoteProgress(board, poll_s=0.1) as remote:
        remote.progress("late", total=3)
        late = threading.Timer(1.5, remote.handle.add, args=("late", 3))
        late.start()
    late.join()
    assert (board["late"].n, board["late"].closed) == (3, True)


def test_ray_data_stage_reports_per_batch(ray_cluster):
    import ray

    board = ProgressBoard(mode="off")
    with RemoteProgress(board, poll_s=0.1) as remote:
        ds = ray.data.range(96, override_num_blocks=4).map_batches(
            CountingStage,
            fn_constructor_kwargs={"progress": remote.handle},
            compute=ray.data.ActorPoolStrategy(size=1),
            num_cpus=0.25,
            batch_size=16,
        )
        ids = sorted(int(r["id"]) for r in ds.take_all())
    assert ids == [2 * i for i in range(96)]
    assert board["double"].n == 96


_DRIVER = """
import logging, sys, time
import ray
from abs_ray.console import logging_options, setup_logging, worker_runtime_env

options = setup_logging(quiet=int(sys.argv[2]))
ray.init(address=sys.argv[1], runtime_env=worker_runtime_env(options), log_to_driver=True)

@ray.remote(num_cpus=0.25)
def work():
    logging.getLogger("ray.train.v2.worker").info("Reporting training result 1: TrainingReport(...)")
    logging.getLogger("ray.train.v2.worker").warning("a Ray warning that matters")
    logging.getLogger("abs_ray.train.loop").info("epoch 0: loss 0.5")
    return 1

ray.get(work.remote())
time.sleep(3)  # worker log lines reach the driver asynchronously
ray.shutdown()
"""


@pytest.mark.parametrize("quiet", [0, 1])
def test_worker_processes_get_the_drivers_levels(ray_cluster, tmp_path, quiet):
    import subprocess
    import sys

    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    proc = subprocess.run(
        [sys.executable, str(script), ray_cluster["address"], str(quiet)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "a Ray warning that matters" in text
    assert "TrainingReport" not in text
    assert ("INFO abs_ray.train.loop: epoch 0: loss 0.5" in text) is (quiet == 0)
    assert "Connecting to existing Ray cluster" not in text  # Ray's INFO, driver side
    assert "\x1b[" not in text  # worker prefixes without colour when redirected
