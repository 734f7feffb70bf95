"""Running the pipeline: the demo data, preflight then execute, the attempt and its manifest."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

from abs_ray.errors import AbsRayError
from abs_ray.faults import cluster_events, cluster_state
from abs_ray.io import S3Options, delete, exists, join, read_text, write_text
from abs_ray.pipeline.config import DEMO_DATA, PipelineConfig
from abs_ray.pipeline.detector_stage import run_detector_stage
from abs_ray.pipeline.disentangle_stage import run_disentangle_stage
from abs_ray.pipeline.summary import _by_type_text
from abs_ray.pipeline.train_stage import run_train_stage
from abs_ray.version import code_version

logger = logging.getLogger(__name__)


def prepare_data(cfg: PipelineConfig, s3: S3Options | None = None) -> PipelineConfig:
    """Fill in ``cfg.data``, generating the embedded demo when it is None.

    The demo is a synthetic data set at 128 px (two shape classes on "water"/"land"
    textures, 100 % correlated in train, exact masks); its detector uses G = 16.
    """
    from abs_ray.data import SyntheticConfig, write_synthetic

    if cfg.data is not None:
        return cfg
    demo = SyntheticConfig(n_train=200, n_val=40, n_test=80, size=128, seed=cfg.seed)
    if not _same_demo(demo):
        logger.info("generating the demo data set in %s", DEMO_DATA)
        delete(DEMO_DATA)
        write_synthetic(DEMO_DATA, demo)
    # Small and quick: the library's epoch-bounded recipe on 160 labelled images (same seed,
    # same detector on an idle or a loaded machine).
    train = dataclasses.replace(
        cfg.detector, image_size=demo.size, grid=16, num_labelled=160, eval_max=80
    )
    return dataclasses.replace(cfg, data=DEMO_DATA, detector=train)


def _same_demo(demo) -> bool:
    """True when ``DEMO_DATA`` holds exactly this synthetic configuration."""
    try:
        found = json.loads(read_text(join(DEMO_DATA, "config.json")))
    except (AbsRayError, ValueError):
        return False
    wanted = dataclasses.asdict(demo)
    return exists(join(DEMO_DATA, "metadata.csv")) and all(
        found.get(k) == v for k, v in wanted.items()
    )


def run(cfg: PipelineConfig, s3: S3Options | None = None) -> dict:
    """Check everything, then run the configured stages; return the committed summary.

    :func:`abs_ray.preflight.preflight` then :func:`execute` (see both). Needs Ray for the
    stages that use it (``ray.init`` by the caller, or Ray's own default start).

    Raises:
        StorageNotFoundError / StorageAccessError: the data, output or checkpoint cannot be
            reached (checked before any work).
        LayoutError / ManifestRowError: the data set cannot be read.
        ConfigError: inconsistent settings (e.g. a grid that does not divide the image size),
            a name nobody registered, a checkpoint whose geometry differs from the one asked.
        LabelsRequiredError: the detector would be trained, but there are no labels.
        NothingProducedError: every input failed; the previous output is kept.
    """
    from abs_ray.preflight import preflight

    return execute(preflight(cfg, s3))


def execute(plan) -> dict:
    """:func:`_execute` inside the invocation's MLflow run (:mod:`abs_ray.pipeline.tracking`),
    the training run nested under it; the run is marked failed when the pipeline fails."""
    from abs_ray.pipeline.tracking import PipelineRun

    tracking = PipelineRun(plan.cfg, plan.s3)
    parent = tracking.start(
        f"pipeline-{os.path.basename(plan.cfg.out.rstrip('/')) or 'out'}",
        {"abs_ray.code_version": code_version(), "abs_ray.mask_source": plan.cfg.mask_source},
    )
    summary = None
    try:
        summary = _execute(plan, parent)
    except BaseException:
        try:
            tracking.finish(summary, failed=True)
        except Exception as exc:  # noqa: BLE001 - the pipeline's own error is the one to see
            logger.warning("MLflow: could not end the pipeline run: %s", exc)
        raise
    tracking.finish(summary)
    if parent is not None:
        summary["mlflow"] = {"run_id": parent, "tracking_uri": tracking.tracking_uri}
    return summary


def _execute(plan, parent_run_id: str | None = None) -> dict:
    """Run a checked :class:`~abs_ray.preflight.Plan`: stages into an attempt, commit, train.

    The detector and disentangle stages write into a new attempt folder (or the one being
    resumed), which is committed when they succeed (:func:`abs_ray.staging.commit`); if
    anything fails the attempt is marked failed, the committed output stays as it was, and
    the error propagates. The train stage then reads the committed ``data/``; its result, or
    its failure, is recorded in ``manifest.json``.

    Returns:
        The summary written to ``<out>/manifest.json``.
    """
    from abs_ray.staging import commit, mark_failed

    cfg, s3 = plan.cfg, plan.s3
    if cfg.writes_data and not plan.up_to_date:
        attempt = plan.attempt()
        try:
            summary = _produce(plan, attempt)
            commit(attempt, summary, s3)
        except BaseException as exc:
            mark_failed(attempt, exc, s3)
            raise
    else:  # train only, or a resume of an output that already holds every input
        if cfg.writes_data:
            logger.info("resume: %s already holds every input; nothing to redo", cfg.out)
        summary = dict(plan.committed)
    summary["state"] = "complete"
    if "train" in cfg.stages:
        if parent_run_id is not None:
            train = dataclasses.replace(cfg.train, mlflow_parent_run_id=parent_run_id)
            cfg = dataclasses.replace(cfg, train=train)
        before = cluster_state()
        try:
            summary["train"] = run_train_stage(cfg, s3)
            summary.setdefault("faults", {})["train"] = {
                **cluster_events(before),
                "training_attempts": summary["train"]["attempts"],
                "resumed_from_epochs": summary["train"]["resumed_from_epochs"],
            }
        except BaseException as exc:
            summary["train"] = {
                "state": "failed",
                "method": cfg.train.method,
                "error": f"{type(exc).__name__}: {exc}",
            }
            _write_manifest(cfg.out, summary, s3)
            logger.error("the train stage failed; data/ stays committed: %s", exc)
            raise
        _write_manifest(cfg.out, summary, s3)
    return summary


def _write_manifest(out: str, summary: dict, s3: S3Options) -> None:
    write_text(
        join(out, "manifest.json"), json.dumps(summary, indent=2, sort_keys=True, default=str), s3
    )


def _produce(plan, attempt) -> dict:
    """The detector and disentangle stages of ``plan`` into ``attempt``; the new summary."""
    from abs_ray.errors import NothingProducedError
    from abs_ray.staging import read_record, write_record

    cfg, s3 = plan.cfg, plan.s3
    summary: dict[str, Any] = {
        "run_id": attempt.run_id,
        "code_version": code_version(),
        "config": cfg.to_dict(),
        "storage": s3.public(),
        "mask_source": cfg.mask_source,
        "detector": plan.detector_label,
        "geometry": {"image_size": plan.size, "grid": plan.grid},
        "val_split": plan.val_split,
        "seconds": {},
        "images_per_s": {},
    }
    checkpoint = plan.checkpoint
    if cfg.trains_detector:
        checkpoint, metrics = run_detector_stage(cfg, plan.manifest, s3, folder=attempt.path())
        summary["detector_metrics"] = {k: metrics.get(k) for k in ("val", "held_out", "best_epoch")}
        summary["seconds"]["detector"] = round(metrics["seconds"]["total"], 2)
    summary["detector_checkpoint"] = plan.detector_label if cfg.trains_detector else plan.checkpoint
    faults = summary["faults"] = {}
    if "disentangle" in cfg.stages:
        before = cluster_state()
        result = run_disentangle_stage(
            cfg,
            plan.manifest,
            checkpoint,
            s3,
            code_version=summary["code_version"],
            out=attempt.path(),
            final_out=cfg.out,
            detector_label=plan.detector_label,
        )
        summary.update({**result, "seconds": {**summary["seconds"], **result["seconds"]}})
        faults["disentangle"] = cluster_events(before)
        counts = summary["counts"]
        if counts["input"] and not counts["ok"]:
            record = read_record(attempt, s3) or {}
            write_record(attempt, {**record, "summary": summary}, s3)
            raise NothingProducedError(
                f"all {counts['input']} inputs failed ({_by_type_text(summary['errors_by_type'])}); "
                f"nothing was committed and {cfg.out} is unchanged; the error records are in "
                f"{attempt.path('errors')}"
            )
    return summary
