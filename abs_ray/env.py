"""Process environment that Ray, MLflow and S3 clients need, set by the project itself.

Call :func:`configure_environment` at the top of every entrypoint (jobs, deployments, tests)
*before* importing Ray. It only fills variables that are unset, so a user's own settings
always win.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from abs_ray.errors import AbsRayError

__all__ = ["DEFAULTS", "configure_environment", "mlflow_tracking_uri", "run_ray_job"]

T = TypeVar("T")

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

    >>> mlflow_tracking_uri("/tmp/run1")
    'sqlite:////tmp/run1/mlflow.db'
    """
    path = os.path.abspath(output_dir)
    os.makedirs(path, exist_ok=True)
    return f"sqlite:///{os.path.join(path, 'mlflow.db')}"


def run_ray_job(
    make_config: Callable[[], Any], main: Callable[[Any], T], address: str | None = None
) -> T:
    """The ``__main__`` of every job: config, environment, Ray, typed errors as exit messages.

    Args:
        make_config: builds the job's config (from parsed arguments); a typed error it raises
            ends the process with a one-line message, before Ray starts.
        main: the job's ``main(cfg)``.
        address: Ray address; None joins the job's cluster (``ray job submit``) or starts one.

    Returns:
        What ``main`` returned.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = make_config()
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
    out = getattr(cfg, "out", None)
    configure_environment(output_dir=out if out and "://" not in out else None)
    import ray

    ray.init(address=address)
    try:
        return main(cfg)
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
    finally:
        ray.shutdown()
