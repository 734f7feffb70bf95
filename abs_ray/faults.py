"""What the cluster did to a running stage: nodes lost, task attempts failed and retried,
actors restarted. The pipeline writes it to ``manifest.json`` (``faults``), one entry per stage.

Take a :func:`cluster_state` before a stage and :func:`cluster_events` after it::

    before = cluster_state()
    ...  # the stage
    summary["faults"]["disentangle"] = cluster_events(before)

Node liveness comes from the GCS (:func:`ray.nodes`, always there). Failed task attempts and
actor restarts come from Ray's state API, which the dashboard serves; on a cluster without it
those entries are None (``"state_api": false``) and the node record stands alone.

A failed attempt of a task that Ray retries (Ray Data's tasks and actor tasks retry system
failures) or of an actor task whose actor is restarted is what a lost node leaves behind; the
stage itself still ends with every row once (see :mod:`abs_ray.stages.sink` on idempotent
writes). Counts cover this driver's job only.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

__all__ = ["ClusterState", "FailedAttempt", "cluster_events", "cluster_state"]

#: Most task attempts / actors read back from the state API per query.
STATE_API_LIMIT = 10_000
#: Seconds one state API query may take.
STATE_API_TIMEOUT = 30


class FailedAttempt(NamedTuple):
    """A failed task attempt: its task's name, Ray's error type, and the id of the actor it
    was creating (an actor-creation task), else ""."""

    name: str
    error_type: str
    creating_actor: str = ""


@dataclasses.dataclass(frozen=True)
class ClusterState:
    """A snapshot of the cluster as seen from this driver.

    Attributes:
        nodes: node id → ``(alive, death message)`` of every node the GCS knows.
        failed_attempts: ``(task id, attempt number)`` → :class:`FailedAttempt` of this
            job's failed task attempts; None without the state API.
        actors: actor id → ``(class name, restarts, death reason or "")`` of this job's
            actors; None without the state API.
    """

    nodes: dict[str, tuple[bool, str]]
    failed_attempts: dict[tuple[str, int], FailedAttempt] | None
    actors: dict[str, tuple[str, int, str]] | None


def _nodes() -> dict[str, tuple[bool, str]]:
    import ray

    return {
        n["NodeID"]: (bool(n["Alive"]), str(n.get("DeathReasonMessage") or "")) for n in ray.nodes()
    }


#: Actor death reasons that are an owner's choice, not a fault.
_ON_PURPOSE = ("RAY_KILL", "OUT_OF_SCOPE", "REF_DELETED")


def _death_reason(cause: dict | None) -> str:
    """``NODE_DIED``, ``WORKER_DIED``, ``RAY_KILL``, ... from an actor's ``death_cause``."""
    if not cause:
        return ""
    context = cause.get("actor_died_error_context") or {}
    return str(context.get("reason") or next(iter(cause), ""))


def _state_api(job_id: str, address: str):
    """This job's failed task attempts and actors from the state API (None, None without it).

    ``address`` is the connected cluster's GCS: without it the state API looks for "the"
    local cluster (``/tmp/ray/ray_current_cluster``, running GCS processes), which on a
    machine with several clusters, or a driver joined by ``--address``, is another one.
    """
    from ray.util.state import list_actors, list_tasks

    try:
        tasks = list_tasks(
            address=address,
            filters=[("job_id", "=", job_id), ("state", "=", "FAILED")],
            limit=STATE_API_LIMIT,
            timeout=STATE_API_TIMEOUT,
            raise_on_missing_output=False,
        )
        actors = list_actors(
            address=address,
            filters=[("job_id", "=", job_id)],
            limit=STATE_API_LIMIT,
            timeout=STATE_API_TIMEOUT,
            detail=True,
            raise_on_missing_output=False,
        )
    # The state API raises its own exception, or connection errors when there is no
    # dashboard; either way the record goes on without it.
    except Exception as exc:  # noqa: BLE001
        logger.info("Ray state API unavailable (%s): recording node events only", exc)
        return None, None
    failed = {
        (t.task_id, int(t.attempt_number)): FailedAttempt(
            t.name,
            str(t.error_type or ""),
            (t.actor_id or "") if t.type == "ACTOR_CREATION_TASK" else "",
        )
        for t in tasks
    }
    alive = {
        a.actor_id: (a.class_name, int(a.num_restarts or 0), _death_reason(a.death_cause))
        for a in actors
    }
    return failed, alive


def cluster_state() -> ClusterState:
    """Snapshot nodes, this job's failed task attempts and its actors (needs ``ray.init``)."""
    import ray

    context = ray.get_runtime_context()
    failed, actors = _state_api(context.get_job_id(), context.gcs_address)
    return ClusterState(nodes=_nodes(), failed_attempts=failed, actors=actors)


def cluster_events(before: ClusterState, after: ClusterState | None = None) -> dict[str, Any]:
    """What happened between two snapshots (``after`` defaults to now).

    Returns:
        ``{"nodes_lost": [{"node_id", "message"}], "nodes_joined": int, "state_api": bool,
        "failed_task_attempts": {task name: n} | None, "failed_task_attempts_by_error":
        {error type: n} | None, "actor_restarts": {class: n} | None, "actors_died":
        {class: n} | None}`` — actors that died for any reason but being killed or going out
        of scope on purpose (e.g. Ray Train workers on a lost node, which are replaced, not
        restarted).

    Example:
        >>> a = ClusterState({"n1": (True, ""), "n2": (True, "")}, {}, {"a1": ("Pool", 0, "")})
        >>> b = ClusterState(
        ...     {"n1": (True, ""), "n2": (False, "health check failed"), "n3": (True, "")},
        ...     {("t1", 0): ("Write", "NODE_DIED")},
        ...     {"a1": ("Pool", 1, ""), "a2": ("Trainer", 0, "NODE_DIED")},
        ... )
        >>> events = cluster_events(a, b)
        >>> events["nodes_lost"], events["nodes_joined"]
        ([{'node_id': 'n2', 'message': 'health check failed'}], 1)
        >>> events["failed_task_attempts"], events["actor_restarts"], events["actors_died"]
        ({'Write': 1}, {'Pool': 1}, {'Trainer': 1})
    """
    after = after or cluster_state()
    lost = [
        {"node_id": node, "message": after.nodes[node][1]}
        for node, (alive, _) in before.nodes.items()
        if alive and node in after.nodes and not after.nodes[node][0]
    ]
    joined = sum(1 for n, (alive, _) in after.nodes.items() if alive and n not in before.nodes)
    events: dict[str, Any] = {
        "nodes_lost": lost,
        "nodes_joined": joined,
        "state_api": after.failed_attempts is not None,
        "failed_task_attempts": None,
        "failed_task_attempts_by_error": None,
        "actor_restarts": None,
        "actors_died": None,
    }
    if after.failed_attempts is not None and after.actors is not None:
        old = before.failed_attempts or {}
        # An actor stopped on purpose before it started fails its creation task (Ray Data
        # kills its FooterReader actors after every Parquet read: hundreds per run): not a
        # fault. Tasks of actors that ran count (a pool's actors, stopped on purpose at the
        # stage's end, had real failures on a lost node before).
        stopped = {a for a, (_, _, reason) in after.actors.items() if reason in _ON_PURPOSE}
        # FailedAttempt(*v): a plain (name, error type) tuple is taken too.
        attempts = (FailedAttempt(*v) for k, v in after.failed_attempts.items() if k not in old)
        new = [a for a in attempts if a.creating_actor not in stopped]
        events["failed_task_attempts"] = dict(collections.Counter(a.name for a in new))
        events["failed_task_attempts_by_error"] = dict(
            collections.Counter(a.error_type for a in new)
        )
        restarts: collections.Counter = collections.Counter()
        died: collections.Counter = collections.Counter()
        old_actors = before.actors or {}
        for actor, (name, count, reason) in after.actors.items():
            was = old_actors.get(actor, (name, 0, ""))
            if count > was[1]:
                restarts[name] += count - was[1]
            if reason and not was[2] and reason not in _ON_PURPOSE:
                died[name] += 1
        events["actor_restarts"] = dict(restarts)
        events["actors_died"] = dict(died)
    if lost or events["failed_task_attempts"] or events["actor_restarts"]:
        logger.warning("cluster events during the stage: %s", events)
    return events
