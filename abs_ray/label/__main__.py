"""Start the patch-labelling page: ``python -m abs_ray.label --data URI --labels URI.csv``.

Then open http://127.0.0.1:8000 (the address is printed). Examples::

    python -m abs_ray.label --data data/birds --labels data/birds/patch_labels.csv --grid 16
    python -m abs_ray.label --data s3://bucket/waterbirds --labels s3://bucket/labels/wb.csv \\
        --detector s3://bucket/runs/wb1/detector/detector.pt --target 200

The server binds 127.0.0.1 unless ``--host`` says otherwise; it has no login, so expose it
only on a trusted network. Run one server per labels file (see :mod:`abs_ray.label`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from abs_ray.env import configure_environment
from abs_ray.errors import AbsRayError
from abs_ray.label.config import PRIORS, LabelConfig, default_train_config
from abs_ray.models.detector import detector_names


def _optional(value: str) -> str | None:
    return None if value.lower() in ("", "none", "all") else value


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = LabelConfig(data="-", labels="-")
    t = default_train_config()
    p = argparse.ArgumentParser(
        prog="python -m abs_ray.label",
        description="label G x G foreground patches in the browser",
        add_help=add_help,
    )
    p.add_argument("--data", required=True, help="data set URI (folder, metadata.csv, manifest)")
    p.add_argument(
        "--labels", required=True, help="info,mask CSV URI (created on first save, else resumed)"
    )
    p.add_argument(
        "--detector",
        default=None,
        help="detector checkpoint URI for pre-fill and active selection "
        "(default: the latest retrained one under --out, if any)",
    )
    p.add_argument(
        "--out", default=None, help="folder for retrained detectors (default: <labels>-detector)"
    )
    p.add_argument("--grid", type=int, default=d.grid, help="patches per side G")
    p.add_argument("--target", type=int, default=d.target, help="labelled images aimed for")
    p.add_argument(
        "--split", type=_optional, default=d.split, help="split to label, or 'all' (default train)"
    )
    p.add_argument("--prior", default=d.prior, choices=PRIORS, help="pre-fill without a detector")
    p.add_argument("--score-max", type=int, default=d.score_max)
    p.add_argument("--lease-seconds", type=float, default=d.lease_seconds)
    p.add_argument("--holdout-fraction", type=float, default=d.holdout_fraction)
    p.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("retraining")
    g.add_argument("--train-detector", default=t.detector, choices=detector_names())
    g.add_argument("--train-weights", type=_optional, default=t.weights)
    g.add_argument("--image-size", type=int, default=t.image_size)
    g.add_argument(
        "--unfreeze-backbone", action="store_true", help="train the whole backbone (use a GPU)"
    )
    g.add_argument("--trainable-blocks", type=int, default=t.trainable_blocks)
    g.add_argument("--train-epochs", type=int, default=t.epochs)
    g.add_argument("--train-seconds", type=float, default=t.max_train_seconds)
    g.add_argument("--device", default=t.device)
    p.add_argument("--host", default=d.host, help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--log-level", default="INFO")
    return p


def config_from_args(args: argparse.Namespace) -> LabelConfig:
    """Build the :class:`LabelConfig` from parsed arguments.

    Raises:
        ConfigError: a value out of range.
    """
    frozen = not args.unfreeze_backbone
    train = dataclasses.replace(
        default_train_config(),
        detector=args.train_detector,
        weights=args.train_weights,
        image_size=args.image_size,
        grid=args.grid,
        freeze_backbone=frozen,
        trainable_blocks=args.trainable_blocks if frozen else 0,
        epochs=args.train_epochs,
        max_train_seconds=args.train_seconds,
        device=args.device,
        seed=args.seed,
    )
    return LabelConfig(
        data=args.data,
        labels=args.labels,
        detector=args.detector,
        out=args.out,
        grid=args.grid,
        target=args.target,
        split=args.split,
        prior=args.prior,
        score_max=args.score_max,
        lease_seconds=args.lease_seconds,
        holdout_fraction=args.holdout_fraction,
        seed=args.seed,
        train=train,
        host=args.host,
        port=args.port,
    )


def main(cfg: LabelConfig) -> None:
    """Load the session and serve the page until interrupted."""
    import uvicorn

    from abs_ray.label.app import create_app
    from abs_ray.label.session import LabelSession

    session = LabelSession(cfg)
    logging.getLogger(__name__).info(
        "labelling page: http://%s:%d/ (%d of %d images labelled)",
        cfg.host,
        cfg.port,
        session.counts()["labelled"],
        session.counts()["total"],
    )
    try:
        uvicorn.run(create_app(session), host=cfg.host, port=cfg.port, log_level="warning")
    finally:
        session.close(timeout=5.0)


if __name__ == "__main__":
    configure_environment()
    args = get_args_parser().parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        main(config_from_args(args))
    except AbsRayError as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
