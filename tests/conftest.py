"""Shared fixtures: a device list, one local Ray cluster and one moto S3 server per session."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from abs_ray.env import configure_environment

configure_environment()

S3_KEYS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


def _devices() -> list[str]:
    import torch

    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Each test using it runs on CPU, and on CUDA when present (skipped otherwise)."""
    if request.param not in _devices():
        pytest.skip("no CUDA device")
    import torch

    return torch.device(request.param)


@pytest.fixture(scope="module", autouse=True)
def _mlflow_globals_stay_in_their_module():
    """MLflow keeps the tracking URI (``mlflow.set_tracking_uri``, which also sets
    ``MLFLOW_TRACKING_URI``) per process: a module that sets it must not decide where the next
    module's ``models:/`` and ``runs:/`` URIs are looked up. Restored after each module."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    import sys

    if "mlflow" in sys.modules:
        from mlflow.tracking._tracking_service import utils

        utils._tracking_uri = None  # private, but it is the global set_tracking_uri writes
    if env is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 HTTP endpoint (moto server mode) on 127.0.0.1; stopped at session end.

    Yields an :class:`abs_ray.io.S3Options` pointing at it. The AWS environment variables are
    set too, so code that reads the standard environment (and Ray workers) reaches it.
    """
    from moto.server import ThreadedMotoServer

    from abs_ray.io import S3Options

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": S3_KEYS["access_key"],
        "AWS_SECRET_ACCESS_KEY": S3_KEYS["secret_key"],
        "AWS_DEFAULT_REGION": S3_KEYS["region"],
        "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield S3Options(endpoint_url=endpoint, **S3_KEYS)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()


@pytest.fixture(scope="session")
def s3_server_with_auth():
    """A second S3 server that checks credentials (moto's IAM check on from the first call).

    Run as its own process (``moto_server``) because the switch is read at import time. Yields
    its endpoint URL. Stopped with SIGINT (the CLI server ignores SIGTERM).
    """
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def bucket(s3_server):
    """A fresh, empty bucket on the session's S3 server; yields its ``s3://name`` URI."""
    import boto3

    name = f"t-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    )
    client.create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One real local Ray cluster (2 CPUs, with the job server) for the whole test session.

    Started as ``ray start --head --block`` on free loopback ports so that the test process
    connects with ``ray.init(address=...)`` and ``ray job submit`` reaches its dashboard; stopped
    by signalling that process group (not ``ray stop``, which would stop every cluster on the
    machine). Yields ``{"address": "127.0.0.1:P", "dashboard": "http://127.0.0.1:D"}``.
    """
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    import ray

    # The dashboard agent's HTTP port is fixed (52365) unless given: a free one, so that another
    # Ray cluster on the machine (a benchmark, a second test run) cannot leave this one without
    # a job agent ("No available agent to submit job").
    port, dash, agent = _free_port(), _free_port(), _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    log = open(tmp_path_factory.mktemp("ray") / "ray-start.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            exe,
            "start",
            "--head",
            "--block",
            "--num-cpus=2",
            "--num-gpus=0",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}",
            "--disable-usage-stats",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # A job's entrypoint `python` must be this environment's, as after `source .venv/bin/activate`.
        env={
            **os.environ,
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        },
    )
    info = {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(info["dashboard"] + "/api/version", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ray start failed; see {log.name}") from None
                time.sleep(0.5)
        ray.init(address=info["address"], log_to_driver=False)
        yield info
    finally:
        ray.shutdown()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        # `ray stop` would also remove the pointer file that makes a later plain ray.init()
        # try to join this (now gone) cluster; do that part by hand.
        pointer = "/tmp/ray/ray_current_cluster"
        try:
            with open(pointer) as f:
                if f.read().strip().endswith(f":{port}"):
                    os.unlink(pointer)
        except OSError:
            pass


# --- Tests leave the repository as they found it ------------------------------------------------

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _untracked() -> set[str] | None:
    """Files git would add (untracked, not ignored); None outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {line[3:] for line in out.splitlines() if line.startswith("?? ")}


def pytest_sessionstart(session):
    session.config._abs_ray_untracked = _untracked()


def pytest_sessionfinish(session, exitstatus):
    """A test (or a server it started, e.g. an MLflow server's ./mlartifacts) that writes into
    the repository fails the session: outputs belong in tmp_path."""
    before = getattr(session.config, "_abs_ray_untracked", None)
    after = _untracked()
    if before is None or after is None:
        return
    new = sorted(after - before)
    if new:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"tests wrote {len(new)} file(s) into the repository: {new[:10]}", red=True
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
