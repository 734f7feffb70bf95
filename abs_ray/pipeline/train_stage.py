"""The train stage: the classifier on the pipeline's committed ``data/``."""

from __future__ import annotations

import dataclasses
import logging
import time

from abs_ray.io import S3Options, join
from abs_ray.pipeline.config import PipelineConfig
from abs_ray.pipeline.report import train_text

logger = logging.getLogger(__name__)


def run_train_stage(cfg: PipelineConfig, s3: S3Options) -> dict:
    """Train the classifier on ``<out>/data`` (Ray Train, MLflow); return the report's summary.

    This is ``jobs/train.py`` with ``--data <out> --out <out>/train``; the training job's
    report (val and test: overall, per-group and worst-group accuracy) is its evaluation.
    """
    from abs_ray.train import run_training

    train_cfg = dataclasses.replace(cfg.train, data=cfg.out, out=join(cfg.out, "train"))
    t0 = time.perf_counter()
    report = run_training(train_cfg, s3)
    result = {
        "method": train_cfg.method,
        "seconds": round(time.perf_counter() - t0, 2),
        "report": join(train_cfg.out, report["run_name"], "report.json"),
        "best": report.get("best") or {},
        # Worker-group starts (1 = no restart) and the epochs the restarts resumed from.
        "attempts": report.get("attempts", 1),
        "resumed_from_epochs": report.get("resumed_from_epochs", []),
    }
    logger.info("%s", train_text(result))
    return result
