"""The detector stage: train the patch detector as one Ray task, or reuse one."""

from __future__ import annotations

import dataclasses
import json
import logging

from abs_ray.devices import auto_device, cluster_gpus
from abs_ray.io import S3Options, exists, join, read_text
from abs_ray.pipeline.config import PipelineConfig
from abs_ray.pipeline.summary import WEAK_DETECTOR

logger = logging.getLogger(__name__)


def run_detector_stage(
    cfg: PipelineConfig, manifest, s3: S3Options, folder: str | None = None
) -> tuple[str, dict]:
    """Train the detector as one Ray task (GPU when available); return (checkpoint, metrics).

    Writes ``<folder>/detector/`` (``folder`` defaults to ``cfg.out``; the pipeline passes its
    attempt folder). A detector already there (with its metrics) is reused: that is how a
    resumed run skips the training.
    """
    import ray

    from abs_ray.models.detector_train import train_detector

    out = join(folder or cfg.out, "detector")
    checkpoint = join(out, "detector.pt")
    if exists(checkpoint, s3) and exists(join(out, "metrics.json"), s3):
        logger.info("resume: reusing the detector at %s", checkpoint)
        return checkpoint, json.loads(read_text(join(out, "metrics.json"), s3))
    gpus = cluster_gpus()
    cpus = max(1, min(8, int(ray.cluster_resources().get("CPU", 1))))
    device = auto_device(cfg.detector.device, gpus)
    train_cfg = dataclasses.replace(cfg.detector, out=out, data=cfg.data, device=device)
    logger.info(
        "training detector %s (G=%d, %d px) on %s",
        train_cfg.backbone,
        train_cfg.grid,
        train_cfg.image_size,
        device,
    )
    task = ray.remote(train_detector).options(
        num_cpus=cpus, num_gpus=1 if gpus else 0, max_retries=0
    )
    from abs_ray.console import RemoteProgress
    from abs_ray.models.detector_train import describe_metrics
    from abs_ray.models.detector_train.fit import PROGRESS_STAGE

    with RemoteProgress() as remote:
        remote.progress(PROGRESS_STAGE, total=train_cfg.epochs, unit="epoch")
        metrics = ray.get(task.remote(train_cfg, manifest, s3, progress=remote.handle))
    split = "held_out" if metrics.get("held_out") else "val"
    held = metrics.get(split) or {}
    if held:
        logger.info(
            "detector trained in %.0f s; %s %s",
            metrics["seconds"]["total"],
            split.replace("_", "-"),
            describe_metrics(held),
        )
    accuracy = held.get("balanced_patch_accuracy")
    if accuracy is not None and accuracy < WEAK_DETECTOR:
        logger.warning(
            "the detector's held-out balanced patch accuracy is %.2f (0.5 = chance): it hardly "
            "tells foreground from background; see %s. More labelled images, a coarser grid "
            "or more training time usually help.",
            accuracy,
            join(out, "mask_sheet.png"),
        )
    return checkpoint, metrics
