"""A real multi-node Ray cluster on this machine: a head and worker nodes, each its own
``ray start --block`` process tree with its own temp dir, so a test can kill one node whole.

The head has no CPUs (``--num-cpus=0``): every task and actor that needs a CPU runs on a worker
node, while the driver (a job subprocess joined to the head) and what Ray pins beside it (the
Ray Train controller, Ray Data's coordinators) stay on the head. Workers carry the custom
resource ``worker``. Data and outputs live on the session's moto S3 server, reached through the
environment every node is started with; MLflow is a tracking server on loopback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.5)


@dataclasses.dataclass
class Node:
    """One ``ray start --block`` process (and, through it, the node's raylet and workers)."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path

    def processes(self):
        """The node's live process tree: ``ray start``, raylet, agents, Ray workers.

        Ray workers are children of the raylet but put in process groups of their own, so
        the tree (not the process group) is what makes up the node.
        """
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pids(self) -> set[int]:
        """PIDs of the node's live process tree."""
        return {p.pid for p in self.processes()}

    def runs(self, text: str) -> bool:
        """True when one of the node's processes has ``text`` in its title/command line."""
        import psutil

        for p in self.processes():
            try:
                if text in " ".join(p.cmdline()):
                    return True
            except psutil.Error:
                continue
        return False

    def kill(self) -> int:
        """SIGKILL the whole node at once (as a machine that loses power); return the count."""
        import psutil

        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=30)
        self.proc.wait(timeout=30)
        return len(procs)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class LocalCluster:
    """Head + worker nodes on loopback ports; stopped by killing exactly the processes it
    started (never ``ray stop``, which stops every cluster on the machine).

    Args:
        root: folder for the nodes' temp dirs and logs (short: Unix socket paths in it must
            stay under ~107 characters).
        env: environment of every node (S3 settings, Ray's auth mode).
        worker_cpus: logical CPUs per worker node.
    """

    OBJECT_STORE = 200 * 1024 * 1024

    def __init__(self, root: Path, env: dict[str, str], worker_cpus: int = 2):
        self.root = Path(root)
        self.env = {
            **env,
            "PATH": VENV_BIN + os.pathsep + env.get("PATH", ""),
            # The GCS declares a silent node dead after ~3 s instead of Ray's default
            # 5 x 3 s: a stage that finishes soon after the kill still sees the loss.
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.worker_cpus = worker_cpus
        self.port = free_port()
        self.dashboard_port = free_port()
        self.head: Node | None = None
        self.workers: list[Node] = []
        self._count = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, name: str, args: list[str]) -> Node:
        temp_dir = self.root / name
        temp_dir.mkdir(parents=True, exist_ok=True)
        log = self.root / f"{name}.log"
        with open(log, "w") as f:
            proc = subprocess.Popen(
                [
                    os.path.join(VENV_BIN, "ray"),
                    "start",
                    "--block",
                    f"--temp-dir={temp_dir}",
                    "--node-ip-address=127.0.0.1",
                    "--num-gpus=0",
                    f"--object-store-memory={self.OBJECT_STORE}",
                    f"--dashboard-agent-listen-port={free_port()}",
                    "--disable-usage-stats",
                    *args,
                ],
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        return Node(name, proc, temp_dir, log)

    def start(self, workers: int = 2) -> None:
        self.head = self._start(
            "head",
            [
                "--head",
                f"--port={self.port}",
                "--num-cpus=0",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
        )
        _wait(self._dashboard_up, 180, f"head node (log {self.head.log})", self.head.proc)
        self.ensure_workers(workers)

    def add_worker(self, attempts: int = 5) -> Node:
        """Start one worker node and wait until the head sees it.

        One at a time, and again when ``ray start`` gives up: on a loaded machine a raylet can
        miss ``ray start``'s fixed 30 s registration window.
        """
        before = self.alive_worker_nodes()
        for attempt in range(1, attempts + 1):
            self._count += 1
            node = self._start(
                f"w{self._count}",
                [
                    f"--address={self.address}",
                    f"--num-cpus={self.worker_cpus}",
                    '--resources={"worker": 1}',
                ],
            )
            try:
                _wait(
                    lambda: self.alive_worker_nodes() > before,
                    240,
                    f"worker node {node.name} (log {node.log})",
                    node.proc,
                )
            except (RuntimeError, TimeoutError):
                if node.alive:
                    node.kill()
                if attempt == attempts:
                    raise
                continue
            self.workers.append(node)
            return node
        raise AssertionError("unreachable")

    def _dashboard_up(self) -> bool:
        try:
            urllib.request.urlopen(self.dashboard + "/api/version", timeout=2)
            return True
        except OSError:
            return False

    def alive_worker_nodes(self) -> int:
        """Worker nodes the head's GCS reports alive (through the dashboard's state API)."""
        try:
            with urllib.request.urlopen(
                self.dashboard + "/api/v0/nodes?limit=100&detail=false", timeout=5
            ) as r:
                nodes = json.load(r)["data"]["result"]["result"]
        except (OSError, KeyError, ValueError):
            return 0
        return sum(
            1
            for n in nodes
            if n["state"] == "ALIVE" and "worker" in (n.get("resources_total") or {})
        )

    def ensure_workers(self, n: int = 2) -> None:
        """Start worker nodes until ``n`` of the started ones run (after a test killed one)."""
        for _ in range(n - sum(w.alive for w in self.workers)):
            self.add_worker()

    def worker_running(self, text: str) -> Node | None:
        """The first live worker node running a process whose title contains ``text``, or an
        actor whose repr does: Ray Data's pool actors are all titled ``ray::_MapWorker``, and
        only their repr (``MapWorker(MapBatches(InpaintBackgrounds))``) names the stage."""
        pids = self._actor_pids(text)
        return next(
            (w for w in self.workers if w.alive and (w.runs(text) or pids & w.pids())), None
        )

    def _actor_pids(self, text: str) -> set[int]:
        """PIDs of the live actors whose class name or repr contains ``text`` (state API)."""
        from ray.util.state import list_actors

        try:
            actors = list_actors(
                address=self.dashboard,
                filters=[("state", "=", "ALIVE")],
                detail=True,
                limit=1000,
                timeout=10,
                raise_on_missing_output=False,
            )
        except Exception:  # noqa: BLE001 - the dashboard may be busy; titles still apply
            return set()
        return {int(a.pid) for a in actors if a.pid and text in f"{a.class_name} {a.repr_name}"}

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            if node is not None and node.alive:
                node.kill()


@pytest.fixture(scope="module")
def multinode(s3_server, tmp_path_factory):
    """A head (0 CPUs) and two worker nodes (2 CPUs each, resource ``worker``), for one module."""
    root = tmp_path_factory.mktemp("mn")
    cluster = LocalCluster(root, {**os.environ})
    try:
        cluster.start(workers=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def mlflow_server(s3_server, tmp_path_factory):
    """An MLflow tracking server on loopback (sqlite store, its artifact store in the fixture's
    folder: runs put artifacts where the server says, through the server). Yields its URL."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    log = open(root / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            os.path.join(VENV_BIN, "mlflow"),
            "server",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--backend-store-uri=sqlite:///{root}/mlflow.db",
            # Not ./mlartifacts of the working directory (the repository).
            f"--artifacts-destination={root}/artifacts",
            "--workers=1",
        ],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "")},
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(url + "/health", timeout=2)
            return True
        except OSError:
            return False

    try:
        _wait(up, 400, f"mlflow server (log {log.name})", proc)  # ~80 s on a busy 2-core box
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
