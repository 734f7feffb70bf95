"""The cluster-event record on the session's Ray cluster: a worker process that dies under a
task (retried) and an actor whose process dies (restarted) show up in it; nothing else does."""

import os
import time

import pytest

from abs_ray.faults import ClusterState, cluster_events, cluster_state


def _events_when(before, done, timeout: float = 60.0):
    """Task events reach the GCS in batches (about every second): poll until ``done``."""
    deadline = time.monotonic() + timeout
    while True:
        events = cluster_events(before)
        if done(events) or time.monotonic() > deadline:
            return events
        time.sleep(1.0)


def test_a_retried_task_and_a_restarted_actor_are_recorded(ray_cluster, tmp_path):
    import ray

    @ray.remote(max_retries=2)
    def dies_once(marker: str) -> int:
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies, as on a lost node
        return 7

    @ray.remote(max_restarts=1, max_task_retries=1)
    class Counter:
        def pid_after_dying_once(self, marker: str) -> int:
            if not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)  # the actor's process dies; Ray restarts it and retries the call
            return os.getpid()

    before = cluster_state()
    assert before.failed_attempts is not None  # the session cluster has its dashboard
    assert ray.get(dies_once.remote(str(tmp_path / "marker"))) == 7
    actor = Counter.remote()
    assert ray.get(actor.pid_after_dying_once.remote(str(tmp_path / "actor"))) > 0

    events = _events_when(
        before, lambda e: len(e["failed_task_attempts"] or {}) == 2 and e["actor_restarts"]
    )
    assert events["state_api"] and events["nodes_lost"] == [] and events["nodes_joined"] == 0
    assert events["failed_task_attempts"] == {"dies_once": 1, "Counter.pid_after_dying_once": 1}
    assert events["failed_task_attempts_by_error"] == {"WORKER_DIED": 1, "ACTOR_UNAVAILABLE": 1}
    ((restarted, restarts),) = events["actor_restarts"].items()
    assert restarted.endswith("Counter") and restarts == 1
    assert events["actors_died"] == {}

    # A quiet stretch records nothing.
    quiet = cluster_events(cluster_state())
    assert quiet["failed_task_attempts"] == {} and quiet["actor_restarts"] == {}


def test_without_the_state_api_nodes_are_still_recorded():
    before = ClusterState({"a": (True, ""), "b": (True, "")}, None, None)
    after = ClusterState({"a": (True, ""), "b": (False, "missed heartbeats")}, None, None)
    events = cluster_events(before, after)
    assert events["nodes_lost"] == [{"node_id": "b", "message": "missed heartbeats"}]
    assert events["state_api"] is False and events["failed_task_attempts"] is None


@pytest.mark.parametrize("reason", ["RAY_KILL", "OUT_OF_SCOPE", "REF_DELETED"])
def test_actors_ended_on_purpose_are_not_counted_as_died(reason):
    before = ClusterState({}, {}, {"x": ("Pool", 0, "")})
    after = ClusterState({}, {}, {"x": ("Pool", 0, reason), "y": ("Train", 0, "NODE_DIED")})
    assert cluster_events(before, after)["actors_died"] == {"Train": 1}


def test_tasks_of_actors_stopped_on_purpose_are_not_faults():
    """Ray Data kills its FooterReader actors after each Parquet read; their creation tasks
    then show as FAILED (WORKER_DIED): 213 "failed attempts" and a WARNING on every demo run."""
    before = ClusterState({}, {}, {})
    after = ClusterState(
        {},
        {
            ("t1", 0): ("FooterReader.__init__", "WORKER_DIED", "a1"),
            ("t2", 0): ("Write", "NODE_DIED", ""),
            ("t3", 0): ("Pool.run", "WORKER_DIED", ""),  # an actor task: no actor id kept
            ("t4", 0): ("Pool.__init__", "NODE_DIED", "a3"),
        },
        {
            "a1": ("FooterReader", 0, "RAY_KILL"),
            "a2": ("Pool", 1, "RAY_KILL"),
            "a3": ("Pool", 1, ""),
        },
    )
    events = cluster_events(before, after)
    assert events["failed_task_attempts"] == {"Write": 1, "Pool.run": 1, "Pool.__init__": 1}


def test_a_parquet_read_records_nothing(ray_cluster, tmp_path):
    """The real thing: reading Parquet with Ray Data leaves no fault in the record."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    for i in range(4):
        pq.write_table(pa.table({"id": [f"{i}-{j}" for j in range(8)]}), tmp_path / f"{i}.parquet")
    from ray.data.expressions import col

    paths = sorted(str(p) for p in tmp_path.glob("*.parquet"))
    before = cluster_state()
    for _ in range(2):  # as abs_ray.train.data reads the disentangled rows
        ds = ray.data.read_parquet(paths).select_columns(["id"])
        ds = ds.filter(expr=col("id").is_in(["0-0", "1-1"]))
        assert sum(len(b["id"]) for b in ds.iter_batches()) == 2
    time.sleep(3)  # task events reach the GCS in batches
    events = cluster_events(before)
    assert events["state_api"] and events["failed_task_attempts"] == {}, events
