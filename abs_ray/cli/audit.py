"""``abs-ray audit`` (= ``jobs/audit.py``): how much a classifier leans on backgrounds.

Locally, the demo's trained model on its disentangled data (a local Ray)::

    abs-ray audit --data runs/demo --model runs/demo/train/abs-efficientnet_lite0-s0 \\
        --out runs/demo/audit

An MLflow model, data and output in object storage, on a cluster::

    ray job submit --working-dir . -- python jobs/audit.py --data s3://bucket/runs/wb1 \\
        --model models:/abs-ray-classifier/3 --mlflow_tracking_uri http://mlflow:5000 \\
        --out s3://bucket/audits/wb1-v3

Every option is an :class:`~abs_ray.audit.AuditConfig` field; ``--config audit.yaml`` holds
the same keys. Writes ``<out>/audit.json``, ``<out>/audit.md`` and ``<out>/examples/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from abs_ray.audit.config import AuditConfig
from abs_ray.audit.run import AuditPlan
from abs_ray.cli._common import add_address
from abs_ray.cli._parser import build_config, config_parser, parse

__all__ = ["config_from_args", "get_args_parser", "main", "preflight", "run"]


def get_args_parser() -> ArgumentParser:
    """The job's options: :class:`~abs_ray.audit.AuditConfig`'s fields, ``--address``."""
    return config_parser(
        AuditConfig,
        "abs-ray audit",
        "audit a classifier's reliance on backgrounds: accuracy on foreground-only, "
        "background-only and swapped-background variants of a disentangled data set",
        extra=add_address,
    )


def config_from_args(args: Namespace) -> AuditConfig:
    """The :class:`AuditConfig` of parsed arguments (validated).

    Raises:
        ConfigError: a value :class:`AuditConfig` rejects.
    """
    return build_config(get_args_parser(), args)


def preflight(cfg: AuditConfig) -> AuditPlan:
    """Before Ray starts: output location, data set, splits and model checked (the model is
    read once, here).

    An MLflow model URI without ``--mlflow_tracking_uri`` is looked up where MLflow points
    now (``MLFLOW_TRACKING_URI``), before the job's own environment is set up.
    """
    from abs_ray.audit.run import plan_audit
    from abs_ray.io import S3Options
    from abs_ray.preflight import check_output_location

    check_output_location(cfg.out)
    if cfg.model.startswith(("runs:/", "models:/")) and cfg.mlflow_tracking_uri is None:
        env = os.environ.get("MLFLOW_TRACKING_URI")
        cfg = dataclasses.replace(cfg, mlflow_tracking_uri=env) if env else cfg
    return plan_audit(cfg, S3Options.from_env())


def run(plan: AuditPlan) -> dict:
    """Run the audit (Ray must be initialised unless ``in_process``); its report."""
    from abs_ray.audit.run import run_audit

    return run_audit(plan)


def main(argv: Sequence[str] | None = None) -> dict:
    """The job: parse, check, run under Ray, print a summary; the report."""
    from abs_ray.console import logging_kwargs
    from abs_ray.env import run_ray_job

    parser = get_args_parser()
    args = parse(parser, argv)
    report = run_ray_job(
        lambda: build_config(parser, args),
        run,
        address=args.address,
        preflight=preflight,
        log=logging_kwargs(args),
    )
    summary = {
        split: {
            "accuracy": {v: a["accuracy"] for v, a in fig["variants"].items()},
            "bg_gap": {k: fig["bg_gap"][k] for k in ("gap", "ci_low", "ci_high")},
        }
        for split, fig in report["splits"].items()
    }
    print(json.dumps({"out": report["config"]["out"], "splits": summary}, indent=2))
    return report
