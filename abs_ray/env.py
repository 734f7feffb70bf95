"""Process environment that Ray, MLflow and S3 clients need, set by the project itself.

Call :func:`configure_environment` at the top of every entrypoint (jobs, deployments, tests)
*before* importing Ray. It only fills variables that are unset, so a user's own settings
always win.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from abs_ray.errors import AbsRayError, StorageAccessError, StorageError

__all__ = [
    "DEFAULTS",
    "configure_environment",
    "in_ray_job",
    "mlflow_tracking_uri",
    "ray_init_address",
    "run_ray_job",
]

#: Set by Ray's job supervisor in the environment of a ``ray job submit`` entrypoint
#: (``ray/dashboard/modules/job/job_supervisor.py``, ``_get_driver_env_vars``), together with
#: ``RAY_ADDRESS`` (the job's cluster).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"

T = TypeVar("T")
logger = logging.getLogger(__name__)

DEFAULTS: dict[str, str] = {
    # Ray 2.60 turns token auth on by default: a local ray.init() writes ~/.ray/auth_token and a
    # plain `ray job submit` then fails. Local development and CI run without auth; clusters set
    # RAY_AUTH_MODE=token on both sides.
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # Some S3-compatible servers reject boto3's default CRC checksums.
    "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
    "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
    # Ray Train V2 is the default in 2.60; V1 hangs on these machines.
    "RAY_TRAIN_V2_ENABLED": "1",
}


def configure_environment(output_dir: str | None = None) -> dict[str, str]:
    """Set the project's environment defaults; return the variables it set.

    Args:
        output_dir: when given and ``MLFLOW_TRACKING_URI`` is unset, point MLflow at a sqlite
            store in this local folder (MLflow 3.17's file store raises).
    """
    applied = {}
    for key, value in DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    if output_dir is not None and "MLFLOW_TRACKING_URI" not in os.environ:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri(output_dir)
        applied["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
    return applied


def mlflow_tracking_uri(output_dir: str) -> str:
    """The sqlite tracking URI for a local output folder (created if missing).

    Raises:
        StorageAccessError: the folder cannot be created (no permission).
        StorageError: it cannot be created for another reason (e.g. a file is in the way).

    >>> mlflow_tracking_uri("/tmp/run1")
    'sqlite:////tmp/run1/mlflow.db'
    """
    path = os.path.abspath(output_dir)
    try:
        os.makedirs(path, exist_ok=True)
    except PermissionError as exc:
        raise StorageAccessError(f"cannot create {path}: permission denied") from exc
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {exc.strerror or exc}") from exc
    return f"sqlite:///{os.path.join(path, 'mlflow.db')}"


def in_ray_job(environ: dict | None = None) -> bool:
    """True inside the entrypoint of a ``ray job submit`` (Ray's job supervisor started it)."""
    return RAY_JOB_ENV in (os.environ if environ is None else environ)


def ray_init_address(address: str | None, environ: dict | None = None) -> str | None:
    """The ``address`` to give ``ray.init``: what ``--address`` means for every job.

    - given (``auto``, ``ray://...``, ``host:port``): as given; ``auto`` joins the local
      cluster that ``ray start`` started (or the one ``RAY_ADDRESS`` names);
    - None inside a Ray job, or with ``RAY_ADDRESS`` set: None, so ``ray.init`` joins the
      cluster ``RAY_ADDRESS`` names (the job supervisor sets it to the job's cluster);
    - None otherwise: ``"local"``, a new local cluster. (A bare ``ray.init()`` would join any
      cluster named in ``/tmp/ray/ray_current_cluster`` instead, e.g. someone else's.)

    >>> ray_init_address(None, environ={})
    'local'
    >>> ray_init_address(None, environ={"RAY_ADDRESS": "10.0.0.1:6379"}) is None
    True
    >>> ray_init_address("auto", environ={})
    'auto'
    """
    if address:
        return address
    environ = os.environ if environ is None else environ
    if in_ray_job(environ) or environ.get("RAY_ADDRESS"):
        return None
    return "local"


def run_ray_job(
    make_config: Callable[[], Any],
    main: Callable[[Any], T],
    address: str | None = None,
    preflight: Callable[[Any], Any] | None = None,
    log: Mapping[str, Any] | None = None,
) -> T:
    """The ``__main__`` of every job: config, checks, environment, Ray, typed errors.

    In this order, so that nothing starts (and no output is touched) before everything that
    can be checked has been: ``make_config()`` → ``preflight(cfg)`` → the project's
    environment (MLflow's sqlite store in a local ``out``) → ``ray.init`` → ``main``.

    Args:
        make_config: builds the job's config (from parsed arguments).
        main: the job's ``main``; it receives what ``preflight`` returned (or the config).
        address: ``--address``; see :func:`ray_init_address`.
        preflight: checks the config against the world (storage, data set, checkpoints)
            before Ray starts; returns what ``main`` takes.
        log: ``--log-level``/``-q``/``-v`` (:func:`abs_ray.console.logging_kwargs`): the
            process's logging (:func:`abs_ray.console.setup_logging`) and, through the
            ``runtime_env``, every Ray worker's; Ray's own internals at WARNING unless ``-v``.

    Returns:
        What ``main`` returned. A typed error (:class:`~abs_ray.errors.AbsRayError`) from any
        step ends the process with a one-line ``error: Type: message`` and exit status 1.
    """
    from abs_ray.console import setup_logging, worker_runtime_env

    try:
        options = setup_logging(**dict(log or {}))
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
    configure_environment()
    try:
        cfg = make_config()
        planned = preflight(cfg) if preflight is not None else cfg
        out = getattr(cfg, "out", None)
        configure_environment(output_dir=out if out and "://" not in out else None)
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
    import ray

    init_address = ray_init_address(address)
    # Workers get our levels through the runtime_env (ray.LoggingConfig is not used: it puts
    # a second handler on this process's root logger, and every line would print twice).
    ray.init(address=init_address, runtime_env=worker_runtime_env(options))
    logger.info(
        "Ray: %s %s",
        "started a new local cluster at" if init_address == "local" else "joined the cluster at",
        ray.get_runtime_context().gcs_address,
    )
    try:
        return main(planned)
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
    finally:
        ray.shutdown()
