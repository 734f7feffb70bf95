"""``abs-ray train-detector`` (= ``jobs/train_detector.py``): train the patch detector.

``abs-ray train-detector --data data/birds --out runs/detector_birds --freeze_backbone true``
(labels from the data set's masks at coverage 0.25), or with ``--labels s3://b/labels.csv``
for the published ``info,mask`` hand labels. Writes ``detector.pt``, ``metrics.json``,
``config.json`` and ``mask_sheet.png`` under ``--out`` (local or ``s3://``). Every option is
a :class:`~abs_ray.models.detector_train.DetectorTrainConfig` field (``--augment.*``: the
:class:`~abs_ray.models.detector_train.AugmentConfig`); ``--config run.yaml`` holds the same keys.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from abs_ray.cli._parser import build_config, config_parser, parse, run_cli
from abs_ray.errors import ConfigError
from abs_ray.models.detector_train import DetectorTrainConfig

__all__ = ["config_from_args", "get_args_parser", "main", "run"]


def get_args_parser() -> ArgumentParser:
    """The job's options: :class:`DetectorTrainConfig`'s fields."""
    return config_parser(DetectorTrainConfig, "abs-ray train-detector", "train the patch detector")


def config_from_args(args: Namespace) -> DetectorTrainConfig:
    """The :class:`DetectorTrainConfig` of parsed arguments (validated).

    Raises:
        ConfigError: a value the config rejects, or no ``--data``.
    """
    cfg = build_config(get_args_parser(), args)
    if cfg.data is None:
        raise ConfigError("--data is required")
    return cfg


def run(cfg: DetectorTrainConfig) -> dict:
    """Train on ``cfg.data``; the metrics."""
    from abs_ray.console import ProgressBoard
    from abs_ray.data import load_dataset
    from abs_ray.models.detector_train import train_detector

    manifest = load_dataset(cfg.data)
    board = ProgressBoard()  # the epochs: a bar on a terminal, a line every 30 s otherwise
    try:
        metrics = train_detector(cfg, manifest, progress=board)
    finally:
        board.close()
    summary = {k: metrics[k] for k in ("val", "held_out", "seconds") if k in metrics}
    logging.getLogger("abs_ray").info("summary:\n%s", json.dumps(summary, indent=2))
    return metrics


def main(argv: Sequence[str] | None = None) -> dict:
    """Parse, validate, train (no Ray); a typed error exits with status 1."""
    from abs_ray.console import logging_kwargs, setup_logging
    from abs_ray.env import configure_environment

    args = parse(get_args_parser(), argv)
    setup_logging(**logging_kwargs(args), ray=False)
    configure_environment()
    return run_cli(lambda: run(config_from_args(args)))
