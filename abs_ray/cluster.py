"""A local Ray head for ``ray job submit``, started the way the jobs need (``make cluster``).

``python -m abs_ray.cluster start`` runs ``ray start --head --block`` in the background with:

- this environment's ``bin/`` first on ``PATH``: a job's entrypoint ``python`` is looked up on
  the PATH of the process that started Ray, and must be the one with abs-ray's packages
  (else ``ModuleNotFoundError: No module named 'PIL'``);
- the project's environment defaults (:data:`abs_ray.env.DEFAULTS`: ``RAY_AUTH_MODE``, usage
  stats, S3 checksums, Ray Train V2), where the caller has not set them;
- every port bound to 127.0.0.1 and overridable: ``ABS_RAY_PORT`` (GCS, 6379),
  ``ABS_RAY_DASHBOARD_PORT`` (the job API, 8265), ``ABS_RAY_CLIENT_PORT`` (10001),
  ``ABS_RAY_AGENT_PORT`` (the dashboard agent, 52365); ``ABS_RAY_NUM_CPUS`` (default: all).

It waits until the job API answers, and records the process in ``ABS_RAY_CLUSTER_DIR``
(default ``runs/cluster``: ``cluster.json`` and ``ray-start.log``). ``python -m
abs_ray.cluster stop`` signals that process group (not ``ray stop``, which stops every Ray
cluster on the machine, other users' too) and removes Ray's pointer to it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

from abs_ray.env import DEFAULTS
from abs_ray.errors import AbsRayError, ConfigError

__all__ = ["cluster_settings", "start", "stop"]

logger = logging.getLogger(__name__)

#: Environment variable → (``ray start`` option, default).
PORTS = {
    "ABS_RAY_PORT": ("--port", 6379),
    "ABS_RAY_DASHBOARD_PORT": ("--dashboard-port", 8265),
    "ABS_RAY_CLIENT_PORT": ("--ray-client-server-port", 10001),
    "ABS_RAY_AGENT_PORT": ("--dashboard-agent-listen-port", 52365),
}


def _pointer_file() -> str:
    """Where ``ray start`` names the "current" cluster that ``ray.init("auto")`` joins
    (``<RAY_TMPDIR or TMPDIR or /tmp>/ray/ray_current_cluster``, as Ray computes it)."""
    root = os.environ.get("RAY_TMPDIR") or os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(root, "ray", "ray_current_cluster")


class ClusterError(AbsRayError, RuntimeError):
    """The local head could not be started or stopped."""


def cluster_settings(environ: dict | None = None) -> dict:
    """Ports, CPUs and state folder from the environment (see the module docstring).

    Raises:
        ConfigError: a port or CPU count that is not a positive integer.

    >>> cluster_settings({})["dashboard"]
    'http://127.0.0.1:8265'
    """
    env = os.environ if environ is None else environ
    ports = {}
    for var, (option, default) in PORTS.items():
        value = env.get(var, str(default))
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise ConfigError(f"{var} must be a port number, got {value!r}")
        ports[option] = int(value)
    cpus = env.get("ABS_RAY_NUM_CPUS")
    if cpus is not None and not cpus.isdigit():
        raise ConfigError(f"ABS_RAY_NUM_CPUS must be a whole number, got {cpus!r}")
    return {
        "ports": ports,
        "num_cpus": int(cpus) if cpus else None,
        "dir": os.path.abspath(env.get("ABS_RAY_CLUSTER_DIR", os.path.join("runs", "cluster"))),
        "address": f"127.0.0.1:{ports['--port']}",
        "dashboard": f"http://127.0.0.1:{ports['--dashboard-port']}",
    }


def _state_file(settings: dict) -> str:
    return os.path.join(settings["dir"], "cluster.json")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start(settings: dict | None = None, timeout: float = 180.0) -> dict:
    """Start the head in the background; return its state (pid, addresses).

    Raises:
        ClusterError: one is already recorded as running, or it did not come up in time.
    """
    settings = settings or cluster_settings()
    state_file = _state_file(settings)
    if os.path.exists(state_file):
        with open(state_file) as f:
            old = json.load(f)
        if _alive(old["pid"]):
            raise ClusterError(
                f"a cluster is already running (pid {old['pid']}, {old['dashboard']}); "
                "stop it first with `make cluster-stop`"
            )
    os.makedirs(settings["dir"], exist_ok=True)
    bin_dir = os.path.dirname(sys.executable)
    env = {**DEFAULTS, **os.environ}
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    cmd = [
        os.path.join(bin_dir, "ray"),
        "start",
        "--head",
        "--block",
        "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1",
        "--include-dashboard=true",
        "--disable-usage-stats",
        *[f"{option}={port}" for option, port in settings["ports"].items()],
    ]
    if settings["num_cpus"] is not None:
        cmd.append(f"--num-cpus={settings['num_cpus']}")
    log_path = os.path.join(settings["dir"], "ray-start.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(settings["dashboard"] + "/api/version", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                raise ClusterError(f"ray start did not come up; see {log_path}") from None
            time.sleep(0.5)
    state = {
        "pid": proc.pid,
        "address": settings["address"],
        "dashboard": settings["dashboard"],
        "python": sys.executable,
        "log": log_path,
    }
    with open(state_file, "w") as f:
        json.dump(state, f, indent=2)
    return state


def stop(settings: dict | None = None, timeout: float = 60.0) -> bool:
    """Stop the head recorded in the state folder; False when none was running."""
    settings = settings or cluster_settings()
    state_file = _state_file(settings)
    if not os.path.exists(state_file):
        return False
    with open(state_file) as f:
        state = json.load(f)
    pid = state["pid"]
    if _alive(pid):
        os.killpg(pid, signal.SIGTERM)  # `ray start --block` stops its processes on SIGTERM
        deadline = time.monotonic() + timeout
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    port = state["address"].rsplit(":", 1)[1]
    pointer = _pointer_file()
    try:  # what `ray stop` would also do, for this cluster only
        with open(pointer) as f:
            if f.read().strip().endswith(f":{port}"):
                os.unlink(pointer)
    except OSError:
        pass
    os.unlink(state_file)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m abs_ray.cluster", description=__doc__.split("\n")[0]
    )
    p.add_argument("action", choices=("start", "stop"))
    args = p.parse_args(argv)
    try:
        settings = cluster_settings()
        if args.action == "start":
            state = start(settings)
            print(
                f"Ray head running (pid {state['pid']}): job API {state['dashboard']}, "
                f"cluster {state['address']}; stop it with `make cluster-stop`"
            )
        elif stop(settings):
            print("Ray head stopped")
        else:
            print(f"no Ray head recorded in {settings['dir']}")
    except AbsRayError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
