"""Fixtures of the Serve tests: the repo's Serve config and synthetic images with known masks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from abs_ray.data.synthetic import SyntheticConfig, generate_synthetic

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (where ``deployments/`` is importable from)."""
    return ROOT


APP = "abs-swap"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """The app deployed on the session's cluster with ``serve deploy``, as an operator would.

    Attributes:
        url: its base URL (``http://127.0.0.1:<free port>``).
    """

    def __init__(self, ray_cluster: dict, folder: Path) -> None:
        self.ray_cluster = ray_cluster
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def apply(self, config: dict, replicas: dict[str, int] | None = None) -> None:
        """``serve deploy`` ``config`` (host and port set to this deployment's) and wait until
        the app runs, with ``replicas`` running replicas per named deployment if given."""
        http_options = {**config["http_options"], "host": "127.0.0.1", "port": self.port}
        path = self.folder / "serve_config.yaml"
        path.write_text(yaml.safe_dump({**config, "http_options": http_options}))
        exe = os.path.join(os.path.dirname(sys.executable), "serve")
        subprocess.run(
            [exe, "deploy", str(path), "--address", self.ray_cluster["dashboard"]],
            check=True,
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
        wait_running(240, replicas)

    def wait(self, replicas: dict[str, int], timeout_s: float = 180) -> None:
        """Until the app runs with ``replicas`` running replicas per named deployment."""
        wait_running(timeout_s, replicas)


@contextlib.contextmanager
def deployed(config: dict, ray_cluster: dict, folder: Path):
    """Deploy ``config``; yield the :class:`Deployment` once the app runs; delete the app and
    shut Serve down afterwards so that later tests get their CPUs back."""
    from ray import serve

    deployment = Deployment(ray_cluster, folder)
    try:
        deployment.apply(config)
        yield deployment
    finally:
        serve.delete(APP)
        serve.shutdown()


def wait_running(timeout_s: float, replicas: dict[str, int] | None = None) -> None:
    """Until the app is RUNNING (and each named deployment has that many running replicas)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(APP)
        if status is not None and status.status == "DEPLOY_FAILED":
            pytest.fail(f"deploy failed: {status.message}")
        if status is not None and status.status == "RUNNING":
            running = {
                name: d.replica_states.get("RUNNING", 0) for name, d in status.deployments.items()
            }
            if all(running.get(k, 0) == v for k, v in (replicas or {}).items()):
                return
        if time.monotonic() > deadline:
            pytest.fail(f"app not running after {timeout_s} s: {status}")
        time.sleep(1)


@pytest.fixture(scope="session")
def serve_config_path() -> Path:
    """``deployments/serve_config.yaml``."""
    return ROOT / "deployments" / "serve_config.yaml"


@pytest.fixture(scope="session")
def synthetic_samples():
    """Four 64-px synthetic samples (image, exact mask, clean background), both classes."""
    cfg = SyntheticConfig(n_train=0, n_val=0, n_test=4, size=64, seed=11)
    return list(generate_synthetic(cfg))


@pytest.fixture(scope="session")
def sample(synthetic_samples):
    """One synthetic sample with its exact mask (255 = object)."""
    return synthetic_samples[0]


@pytest.fixture(scope="session")
def deploy(ray_cluster, tmp_path_factory):
    """``with deploy(config) as app:`` the app of ``config`` on the session's cluster
    (a :class:`Deployment`: ``app.url``, ``app.apply(new_config)``)."""

    def run(config: dict):
        return deployed(config, ray_cluster, tmp_path_factory.mktemp("serve"))

    return run


@pytest.fixture(scope="session")
def shipped_config(serve_config_path) -> dict:
    """``deployments/serve_config.yaml``, parsed (copy it before changing it)."""
    return yaml.safe_load(serve_config_path.read_text())
