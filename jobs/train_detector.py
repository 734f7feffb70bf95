"""Train the patch detector from patch labels.

``python jobs/train_detector.py --data data/birds --out runs/detector_birds --freeze-backbone``
(labels from the data set's masks at coverage 0.25), or with ``--labels-csv s3://b/labels.csv``
for the published ``info,mask`` hand labels. Writes ``detector.pt``, ``metrics.json``,
``config.json`` and ``mask_sheet.png`` under ``--out`` (local or ``s3://``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from abs_ray.env import configure_environment
from abs_ray.errors import AbsRayError, ConfigError
from abs_ray.models.detector import detector_names
from abs_ray.models.detector_train import AugmentConfig, DetectorTrainConfig


def _optional(value: str) -> str | None:
    return None if value.lower() in ("", "none") else value


def _optional_int(value: str) -> int | None:
    return None if value.lower() in ("", "none", "all") else int(value)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = DetectorTrainConfig()
    a = d.augment
    p = argparse.ArgumentParser(description="train the abs-ray patch detector", add_help=add_help)
    p.add_argument("--data", required=True, help="data set URI (folder, metadata.csv, manifest)")
    p.add_argument("--out", default=d.out, help="output folder URI (local or s3://...)")
    p.add_argument("--detector", default=d.detector, choices=detector_names())
    p.add_argument(
        "--weights",
        type=_optional,
        default=d.weights,
        help="'default', 'imagenet', 'none' or a state-dict URI",
    )
    p.add_argument("--grid", type=int, default=d.grid)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--dropout", type=float, default=d.dropout)
    p.add_argument("--freeze-backbone", action="store_true", help="train the head only")
    p.add_argument(
        "--trainable-blocks",
        type=int,
        default=d.trainable_blocks,
        help="with --freeze-backbone: also train the backbone's last k blocks",
    )
    p.add_argument("--feature-cache-views", type=int, default=d.feature_cache_views)
    p.add_argument("--labels-csv", type=_optional, default=None, help="info,mask CSV URI")
    p.add_argument("--coverage-threshold", type=float, default=d.coverage_threshold)
    p.add_argument("--label-split", default=d.label_split)
    p.add_argument("--num-labelled", type=_optional_int, default=d.num_labelled)
    p.add_argument("--val-fraction", type=float, default=d.val_fraction)
    p.add_argument("--eval-split", type=_optional, default=d.eval_split)
    p.add_argument("--eval-max", type=_optional_int, default=d.eval_max)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--backbone-lr", type=float, default=d.backbone_lr)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    p.add_argument(
        "--balance-classes",
        action="store_true",
        help="weight the BCE so foreground and background patches count equally",
    )
    p.add_argument("--plateau-factor", type=float, default=d.plateau_factor)
    p.add_argument("--plateau-patience", type=int, default=d.plateau_patience)
    p.add_argument("--early-stop-patience", type=int, default=d.early_stop_patience)
    p.add_argument(
        "--max-train-seconds",
        type=float,
        default=d.max_train_seconds,
        help="stop training after this many seconds (best epoch kept)",
    )
    p.add_argument("--max-shift-patches", type=int, default=a.max_shift_patches)
    p.add_argument("--shift-fill", default=a.shift_fill, choices=("wrap", "zeros"))
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.add_argument("--tight", type=float, default=d.tight)
    p.add_argument("--loose", type=float, default=d.loose)
    p.add_argument("--device", default=d.device)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    p.add_argument("--sheet-samples", type=int, default=d.sheet_samples)
    p.add_argument("--log-every", type=int, default=d.log_every)
    return p


def config_from_args(args: argparse.Namespace) -> DetectorTrainConfig:
    augment = (
        AugmentConfig.none()
        if args.no_augment
        else AugmentConfig(max_shift_patches=args.max_shift_patches, shift_fill=args.shift_fill)
    )
    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(DetectorTrainConfig)
        if f.name != "augment" and hasattr(args, f.name)
    }
    return DetectorTrainConfig(**values, augment=augment)


def main(cfg: DetectorTrainConfig) -> dict:
    from abs_ray.data import load_dataset
    from abs_ray.models.detector_train import train_detector

    if cfg.data is None:
        raise ConfigError("--data is required")
    manifest = load_dataset(cfg.data)
    metrics = train_detector(cfg, manifest)
    summary = {k: metrics[k] for k in ("val", "held_out", "seconds") if k in metrics}
    logging.getLogger("abs_ray").info("summary:\n%s", json.dumps(summary, indent=2))
    return metrics


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    configure_environment()
    try:
        main(config_from_args(get_args_parser().parse_args()))
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
