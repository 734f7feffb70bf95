"""Train a classifier on a disentangled data set (the pipeline's output) with Ray Train.

Locally (a local Ray, local output, MLflow in ``<out>/mlflow.db``)::

    python jobs/train.py --data runs/demo --out runs/train --method abs
    python jobs/train.py --data runs/demo --out runs/train --method erm

On a cluster, data and output in object storage, MLflow on a server::

    ray job submit --working-dir . -- python jobs/train.py \\
        --data s3://bucket/runs/wb1 --out s3://bucket/train --method abs \\
        --backbone resnet50 --weights s3://bucket/weights/resnet50-11ad3fa6.pth \\
        --num-workers 4 --mlflow-tracking-uri http://mlflow:5000

Submitting the same command again (same ``--out`` and run name) resumes the run from its
last checkpoint; a finished run returns its report.
"""

from __future__ import annotations

import argparse
import json

from abs_ray.env import run_ray_job
from abs_ray.train.config import METHODS, SELECT_BY, TrainConfig


def _pair(text: str) -> tuple[float, float]:
    lo, sep, hi = text.partition(",")
    try:
        return (float(lo), float(hi if sep else lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH numbers, got {text!r}") from None


def _gpu(text: str) -> bool | None:
    choices = {"auto": None, "true": True, "false": False}
    if text.lower() not in choices:
        raise argparse.ArgumentTypeError(f"expected auto, true or false, got {text!r}")
    return choices[text.lower()]


def _weights(text: str) -> str | None:
    return None if text.lower() in ("none", "random") else text


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The job's arguments; defaults are :class:`~abs_ray.train.TrainConfig`'s."""
    d = TrainConfig(data="-")
    p = argparse.ArgumentParser(
        description="abs-ray: train a classifier with background swapping (abs), plain "
        "(erm) or with true masks (oracle), on Ray Train, logged to MLflow",
        add_help=add_help,
    )
    p.add_argument("--data", required=True, help="disentangled data set (pipeline output URI)")
    p.add_argument("--out", default=d.out, help="output URI (local folder or s3://...)")
    p.add_argument("--method", default=d.method, choices=METHODS)
    p.add_argument("--run-name", default=None, help="default: <method>-<backbone>-s<seed>")
    p.add_argument("--address", default=None, help="Ray address (default: the job's cluster)")
    p.add_argument("--seed", type=int, default=d.seed)

    g = p.add_argument_group("model")
    g.add_argument(
        "--backbone", default=d.backbone, help="resnet50, resnet18, efficientnet_lite0, test_tiny"
    )
    g.add_argument(
        "--weights",
        type=_weights,
        default=d.weights,
        help="default | imagenet | none | state-dict URI",
    )
    g.add_argument("--freeze-backbone", action="store_true", help="train the linear head only")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--num-classes", type=int, default=None, help="default: from the labels")

    g = p.add_argument_group("recipe (defaults: the paper's Waterbirds recipe)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch size")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--lr-schedule", default=d.lr_schedule, choices=("constant", "cosine"))
    g.add_argument("--image-size", type=int, default=None, help="default: the data's size")
    g.add_argument("--crop-scale", type=_pair, default=d.crop_scale, metavar="LOW,HIGH")
    g.add_argument("--no-hflip", action="store_true")
    g.add_argument("--select-by", default=d.select_by, choices=SELECT_BY)

    g = p.add_argument_group("swap (abs / oracle)")
    g.add_argument("--swap-prob", type=float, default=d.swap_prob)
    g.add_argument("--swap-scale", type=_pair, default=d.swap_scale, metavar="LOW,HIGH")
    g.add_argument("--swap-degrees", type=float, default=d.swap_degrees)
    g.add_argument(
        "--swap-translate", type=float, default=None, help="pixels; default 32 at 224 px, scaled"
    )
    g.add_argument("--feather-sigma", type=float, default=d.feather_sigma)
    g.add_argument("--bank-size", type=int, default=d.bank_size)

    g = p.add_argument_group("resources")
    g.add_argument("--num-workers", type=int, default=d.num_workers)
    g.add_argument("--use-gpu", type=_gpu, default=None, metavar="auto|true|false")
    g.add_argument("--cpus-per-worker", type=float, default=d.cpus_per_worker)
    g.add_argument("--decode-num-cpus", type=float, default=d.decode_num_cpus)
    g.add_argument("--eval-batch-size", type=int, default=d.eval_batch_size)
    g.add_argument("--max-failures", type=int, default=d.max_failures)

    g = p.add_argument_group("MLflow")
    g.add_argument(
        "--mlflow-tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else sqlite in --out",
    )
    g.add_argument("--mlflow-experiment", default=d.mlflow_experiment)
    g.add_argument("--mlflow-artifact-location", default=None, help="default: <out>/mlartifacts")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Build the :class:`TrainConfig` from parsed arguments.

    Raises:
        ConfigError: a value :class:`TrainConfig` rejects.
    """
    return TrainConfig(
        data=args.data,
        out=args.out,
        method=args.method,
        run_name=args.run_name,
        backbone=args.backbone,
        weights=args.weights,
        freeze_backbone=args.freeze_backbone,
        dropout=args.dropout,
        num_classes=args.num_classes,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        lr_schedule=args.lr_schedule,
        image_size=args.image_size,
        crop_scale=args.crop_scale,
        hflip=not args.no_hflip,
        swap_prob=args.swap_prob,
        swap_scale=args.swap_scale,
        swap_degrees=args.swap_degrees,
        swap_translate=args.swap_translate,
        feather_sigma=args.feather_sigma,
        bank_size=args.bank_size,
        select_by=args.select_by,
        eval_batch_size=args.eval_batch_size,
        num_workers=args.num_workers,
        use_gpu=args.use_gpu,
        cpus_per_worker=args.cpus_per_worker,
        decode_num_cpus=args.decode_num_cpus,
        max_failures=args.max_failures,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
        mlflow_experiment=args.mlflow_experiment,
        mlflow_artifact_location=args.mlflow_artifact_location,
        seed=args.seed,
    )


def main(cfg: TrainConfig) -> dict:
    """Run the training (Ray must be initialised); return the report."""
    from abs_ray.train import run_training

    return run_training(cfg)


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    report = run_ray_job(lambda: config_from_args(args), main, address=args.address)
    best = report["best"]
    summary = {
        "run": report["run_name"],
        "best_epoch": best.get("epoch"),
        "val": {k: best["val"][k] for k in ("overall_accuracy", "worst_group_accuracy")},
        "test": {
            k: (best.get("test") or {}).get(k) for k in ("overall_accuracy", "worst_group_accuracy")
        },
        "mlflow": report["mlflow"],
    }
    print(json.dumps(summary, indent=2))
