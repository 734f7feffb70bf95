"""``abs-ray train`` (= ``jobs/train.py``): train a classifier on a disentangled data set.

Locally (a local Ray, local output, MLflow in ``<out>/mlflow.db``)::

    abs-ray train --data runs/demo --out runs/train --method abs

On a cluster, data and output in object storage, MLflow on a server::

    ray job submit --working-dir . -- python jobs/train.py \\
        --data s3://bucket/runs/wb1 --out s3://bucket/train --method abs \\
        --backbone resnet50 --weights s3://bucket/weights/resnet50-11ad3fa6.pth \\
        --num_workers 4 --mlflow_tracking_uri http://mlflow:5000

Every option is a :class:`~abs_ray.train.TrainConfig` field; ``--config run.yaml`` holds the
same keys. Submitting the same command again (same ``--out`` and run name) resumes the run
from its last checkpoint; a finished run returns its report.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from abs_ray.cli._common import add_address
from abs_ray.cli._parser import build_config, config_parser, parse
from abs_ray.train.config import TrainConfig

__all__ = ["config_from_args", "get_args_parser", "main", "preflight", "run"]


def get_args_parser() -> ArgumentParser:
    """The job's options: :class:`~abs_ray.train.TrainConfig`'s fields, ``--address``."""
    return config_parser(
        TrainConfig,
        "abs-ray train",
        "train a classifier with background swapping (abs), plain (erm), strong augmentation "
        "(erm_aug) or true masks (oracle), on Ray Train, logged to MLflow",
        extra=add_address,
    )


def config_from_args(args: Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of parsed arguments (validated).

    Raises:
        ConfigError: a value :class:`TrainConfig` rejects.
    """
    return build_config(get_args_parser(), args)


def preflight(cfg: TrainConfig) -> TrainConfig:
    """Before Ray starts: the output location and data set readable, the settings valid."""
    from abs_ray.io import S3Options, check_readable, check_writable
    from abs_ray.preflight import check_output_location
    from abs_ray.train.data import scan_disentangled
    from abs_ray.train.run import resolve_config

    s3 = S3Options.from_env()
    check_output_location(cfg.out)
    check_readable(cfg.data, s3)
    check_writable(cfg.out, s3)
    resolve_config(cfg, scan_disentangled(cfg.data, s3))  # GPUs are counted again under Ray
    return cfg


def run(cfg: TrainConfig) -> dict:
    """Run the training (Ray must be initialised); return the report."""
    from abs_ray.train import run_training

    return run_training(cfg)


def main(argv: Sequence[str] | None = None) -> dict:
    """The job: parse, check, run under Ray, print a summary; its report."""
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
    best = report["best"]
    keys = ("overall_accuracy", "worst_group_accuracy")
    summary = {
        "run": report["run_name"],
        "best_epoch": best.get("epoch"),
        "val": {k: best["val"][k] for k in keys},
        "test": {k: (best.get("test") or {}).get(k) for k in keys},
        "mlflow": report["mlflow"],
    }
    print(json.dumps(summary, indent=2))
    return report
