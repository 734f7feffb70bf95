"""The main job: ``python jobs/pipeline.py`` (embedded demo) or, on a cluster,
``ray job submit --working-dir . -- python jobs/pipeline.py --data s3://bucket/wb --out s3://bucket/runs/wb1``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from abs_ray.env import configure_environment
from abs_ray.errors import AbsRayError
from abs_ray.pipeline import STAGES, PipelineConfig


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    d = PipelineConfig()
    p = argparse.ArgumentParser(description="abs-ray main job", add_help=add_help)
    p.add_argument(
        "--data",
        default=None,
        help="data set URI (local folder or s3://...); default: the embedded demo",
    )
    p.add_argument("--out", default=d.out, help="output URI (local folder or s3://bucket/prefix)")
    p.add_argument(
        "--stages", default=",".join(d.stages), help=f"comma-separated, from: {', '.join(STAGES)}"
    )
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--grid", type=int, default=d.grid)
    p.add_argument("--coverage-threshold", type=float, default=d.coverage_threshold)
    p.add_argument("--load-batch-size", type=int, default=d.load_batch_size)
    p.add_argument("--preview-samples", type=int, default=d.preview_samples)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--address",
        default=None,
        help="Ray address (default: the job's cluster or a new local one)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    return PipelineConfig(
        data=args.data,
        out=args.out,
        stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()),
        image_size=args.image_size,
        grid=args.grid,
        coverage_threshold=args.coverage_threshold,
        load_batch_size=args.load_batch_size,
        preview_samples=args.preview_samples,
        seed=args.seed,
    )


def main(cfg: PipelineConfig) -> dict:
    from abs_ray.pipeline import run

    summary = run(cfg)
    logging.getLogger("abs_ray").info("summary:\n%s", json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = get_args_parser().parse_args()
    try:
        cfg = config_from_args(args)
    except AbsRayError as exc:
        sys.exit(f"error: {exc}")
    configure_environment(output_dir=cfg.out if "://" not in cfg.out else None)
    import ray

    ray.init(address=args.address)
    try:
        main(cfg)
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
    finally:
        ray.shutdown()
