"""``abs-ray pipeline`` (= ``jobs/pipeline.py``): the main job, detector → disentangle → train.

Locally, on the embedded demo (a new local Ray, local output folder)::

    abs-ray pipeline

On a cluster (``make cluster`` starts a local one the right way), data and output in object
storage or absolute local paths::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/pipeline.py \\
        --data s3://bucket/waterbirds --out s3://bucket/runs/wb1

Every option is a :class:`~abs_ray.pipeline.PipelineConfig` field: the detector's training
recipe is ``--detector.*`` (:class:`~abs_ray.models.detector_train.DetectorTrainConfig`), the
classifier's ``--train.*`` (:class:`~abs_ray.train.TrainConfig`), the Ray Data pools
``--load.*``, ``--detect.*``, ``--inpaint.*``. Every setting, location and the data set are
checked before Ray starts (:mod:`abs_ray.preflight`); a bad one ends the job with one line,
``error: Type: message``, and exit status 1, and the output is left as it was.
"""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from abs_ray.cli._common import add_address
from abs_ray.cli._parser import build_config, config_parser, parse
from abs_ray.errors import ConfigError
from abs_ray.pipeline import PipelineConfig

__all__ = ["config_from_args", "get_args_parser", "main", "preflight", "run"]

#: Detector settings the pipeline fills in itself (never a reason to refuse a checkpoint).
_SET_BY_PIPELINE = frozenset({"out", "data", "image_size", "grid", "device"})


def get_args_parser() -> ArgumentParser:
    """The job's options: :class:`PipelineConfig`'s fields (nested ones dotted), ``--address``."""
    return config_parser(
        PipelineConfig,
        "abs-ray pipeline",
        "abs-ray main job: detector → disentangle → train",
        skip={"train.data", "train.out", "detector.data", "detector.out"},  # set by the job
        extra=add_address,
    )


def _detector_settings_given(parser: ArgumentParser, args: Namespace) -> list[str]:
    """``--detector.*`` settings that differ from their defaults."""
    default = parser.get_defaults()["detector"].as_dict()
    given = args["detector"].as_dict()
    return [
        f"--detector.{k}" for k in given if k not in _SET_BY_PIPELINE and given[k] != default.get(k)
    ]


def config_from_args(args: Namespace, parser: ArgumentParser | None = None) -> PipelineConfig:
    """The :class:`PipelineConfig` of parsed arguments (validated).

    Raises:
        ConfigError: a detector-training setting given when no detector is trained here
            (with ``--detector_checkpoint`` or another ``--mask_source``), or any invalid
            setting.
    """
    parser = parser or get_args_parser()
    cfg = build_config(parser, args)
    given = _detector_settings_given(parser, args)
    trains = cfg.mask_source == "detector" and not cfg.detector_checkpoint
    if given and not trains:
        why = (
            f"--detector_checkpoint {cfg.detector_checkpoint}"
            if cfg.detector_checkpoint
            else f"--mask_source {cfg.mask_source}"
        )
        raise ConfigError(
            f"{', '.join(given)}: detector training settings, but no detector is trained with {why}"
        )
    return cfg


def run(plan) -> dict:
    """Run a checked plan (:func:`abs_ray.preflight.preflight`); Ray must be initialised."""
    from abs_ray.pipeline import execute

    return execute(plan)


def preflight(cfg: PipelineConfig):
    """The checks of :func:`abs_ray.preflight.preflight`; the plan :func:`run` takes."""
    from abs_ray.preflight import preflight as check

    return check(cfg)


def main(argv: Sequence[str] | None = None) -> dict:
    """The job: parse, check, run under Ray, print a summary; the summary."""
    from abs_ray.console import logging_kwargs
    from abs_ray.env import run_ray_job
    from abs_ray.pipeline.report import summary_text

    parser = get_args_parser()
    args = parse(parser, argv)
    summary = run_ray_job(
        lambda: config_from_args(args, parser),
        run,
        address=args.address,
        preflight=preflight,
        log=logging_kwargs(args),
    )
    # The last lines of the run: counts by error type, rates, the training, outputs (every
    # detail is in manifest.json).
    print(summary_text(summary), flush=True)
    return summary
