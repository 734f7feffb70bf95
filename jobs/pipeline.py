"""The main job.

Locally, on the embedded demo (local Ray, local output folder)::

    python jobs/pipeline.py

On a cluster, data and output in object storage::

    ray job submit --working-dir . -- python jobs/pipeline.py \\
        --data s3://bucket/waterbirds --out s3://bucket/runs/wb1
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from abs_ray.env import run_ray_job
from abs_ray.errors import ConfigError
from abs_ray.pipeline import STAGES, PipelineConfig, PoolConfig
from abs_ray.train.config import METHODS


def _pool(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(",")
    return int(lo), int(hi or lo)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = PipelineConfig()
    t = d.detector_train
    p = argparse.ArgumentParser(
        description="abs-ray main job: detector → disentangle", add_help=add_help
    )
    p.add_argument(
        "--data",
        default=None,
        help="data set URI (local folder or s3://...); default: the embedded demo",
    )
    p.add_argument("--out", default=d.out, help="output URI (local folder or s3://bucket/prefix)")
    p.add_argument(
        "--stages", default=",".join(d.stages), help=f"comma-separated, from: {', '.join(STAGES)}"
    )
    p.add_argument(
        "--resume", action="store_true", help="skip ids already written; reuse a trained detector"
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray address (default: the job's cluster, else a new local one)",
    )
    p.add_argument("--seed", type=int, default=d.seed)

    g = p.add_argument_group("detector")
    g.add_argument(
        "--detector-checkpoint",
        default=None,
        help="use this detector checkpoint (any URI) instead of training",
    )
    g.add_argument(
        "--detector",
        default=t.detector,
        help="backbone name (efficientnet_lite0, efficientnet_b0, resnet50, test_tiny)",
    )
    g.add_argument("--image-size", type=int, default=t.image_size)
    g.add_argument(
        "--grid", type=int, default=t.grid, help="patches per side G (must divide the image size)"
    )
    g.add_argument(
        "--labels",
        default=None,
        help="patch labels: an info,mask CSV URI (default: the data set's masks)",
    )
    g.add_argument("--num-labelled", type=int, default=t.num_labelled)
    g.add_argument("--coverage-threshold", type=float, default=t.coverage_threshold)
    g.add_argument("--epochs", type=int, default=t.epochs)
    g.add_argument(
        "--unfreeze-backbone", action="store_true", help="fine-tune the backbone too (use a GPU)"
    )
    g.add_argument(
        "--trainable-blocks",
        type=int,
        default=t.trainable_blocks,
        help="with a frozen backbone, train its last K blocks too",
    )
    g.add_argument(
        "--max-train-seconds",
        type=float,
        default=t.max_train_seconds,
        help="stop detector training after this long",
    )

    g = p.add_argument_group("disentangle")
    g.add_argument(
        "--mask-source",
        choices=("detector", "truth"),
        default=d.mask_source,
        help="truth: the data set's own masks (the oracle upper bound)",
    )
    g.add_argument(
        "--inpainter",
        default=d.inpainter,
        help="patchmatch, telea, gray, mean, noise, patch_scramble, torchscript",
    )
    g.add_argument(
        "--inpainter-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="inpainter argument (repeatable), e.g. dilate=3 or uri=s3://b/lama.pt",
    )
    g.add_argument(
        "--tight", type=float, default=None, help="tight-mask threshold (default: the detector's)"
    )
    g.add_argument(
        "--loose", type=float, default=None, help="loose-mask threshold (default: the detector's)"
    )
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, ...")
    for stage, pool in (("detect", d.detect), ("inpaint", d.inpaint)):
        g.add_argument(
            f"--{stage}-pool", type=_pool, default=(pool.min_size, pool.max_size), metavar="MIN,MAX"
        )
        g.add_argument(f"--{stage}-batch-size", type=int, default=pool.batch_size)
        g.add_argument(f"--{stage}-num-cpus", type=float, default=pool.num_cpus)
        g.add_argument(f"--{stage}-num-gpus", type=float, default=None)
    g.add_argument("--preview-samples", type=int, default=d.preview_samples)

    g = p.add_argument_group("train (jobs/train.py has every option)")
    g.add_argument("--method", default=d.train.method, choices=METHODS)
    g.add_argument("--train-backbone", default=d.train.backbone)
    g.add_argument("--train-epochs", type=int, default=d.train.epochs)
    g.add_argument("--num-workers", type=int, default=d.train.num_workers)
    return p


def _kwargs(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--inpainter-arg must be KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    d = PipelineConfig()
    train = dataclasses.replace(
        d.detector_train,
        detector=args.detector,
        image_size=args.image_size,
        grid=args.grid,
        labels_csv=args.labels,
        num_labelled=args.num_labelled,
        coverage_threshold=args.coverage_threshold,
        epochs=args.epochs,
        freeze_backbone=not args.unfreeze_backbone,
        trainable_blocks=args.trainable_blocks,
        max_train_seconds=args.max_train_seconds,
        seed=args.seed,
    )
    pools = {}
    for stage in ("detect", "inpaint"):
        lo, hi = getattr(args, f"{stage}_pool")
        pools[stage] = PoolConfig(
            min_size=lo,
            max_size=hi,
            batch_size=getattr(args, f"{stage}_batch_size"),
            num_cpus=getattr(args, f"{stage}_num_cpus"),
            num_gpus=getattr(args, f"{stage}_num_gpus"),
        )
    return PipelineConfig(
        data=args.data,
        out=args.out,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        resume=args.resume,
        detector_checkpoint=args.detector_checkpoint,
        detector_train=train,
        mask_source=args.mask_source,
        train=dataclasses.replace(
            d.train,
            method=args.method,
            backbone=args.train_backbone,
            epochs=args.train_epochs,
            num_workers=args.num_workers,
            seed=args.seed,
        ),
        inpainter=args.inpainter,
        inpainter_kwargs=_kwargs(args.inpainter_arg),
        tight=args.tight,
        loose=args.loose,
        device=args.device,
        preview_samples=args.preview_samples,
        seed=args.seed,
        **pools,
    )


def main(cfg: PipelineConfig) -> dict:
    from abs_ray.pipeline import run

    return run(cfg)


if __name__ == "__main__":
    args = get_args_parser().parse_args()
    summary = run_ray_job(lambda: config_from_args(args), main, address=args.address)
    print(json.dumps({k: summary.get(k) for k in ("counts", "images_per_s", "outputs")}, indent=2))
