"""One MLflow run per pipeline invocation, with the training run nested under it.

The run lives in the training's experiment (``cfg.train.mlflow_experiment``) and store: the
training's tracking URI, else ``MLFLOW_TRACKING_URI`` (which ``jobs/pipeline.py`` sets to
``<out>/mlflow.db`` for a local output). Without either (a library call of
:func:`abs_ray.pipeline.run`) it logs nothing, so that the output folder holds only what the
stages write. It holds the
config as params, then at the end the detector's metrics, counts (by error type), rates and
seconds as metrics, and ``manifest.json``, ``detector/mask_sheet.png`` and
``swap_preview.png`` as artifacts. The train stage gets its id as
``mlflow_parent_run_id`` (``mlflow.parentRunId``: the UI shows training under it).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from abs_ray.io import S3Options, exists, join, read_bytes
from abs_ray.train.config import flatten_dict

logger = logging.getLogger(__name__)

__all__ = ["PipelineRun", "summary_metrics"]

#: Pipeline outputs logged as artifacts when present (relative to ``out``).
ARTIFACTS = ("detector/mask_sheet.png", "swap_preview.png")


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary's numbers as MLflow metrics (counts, errors by type, rates, seconds,
    detector metrics).

    >>> summary_metrics({"counts": {"ok": 3}, "errors_by_type": {"DecodeError": 1},
    ...     "images_per_s": {"disentangle": 2.5}, "detector_metrics": {"val": {"iou": 0.5}}})
    {'counts/ok': 3.0, 'errors/DecodeError': 1.0, 'images_per_s/disentangle': 2.5, 'detector/val/iou': 0.5}
    """
    out: dict[str, float] = {}
    for key, prefix in (
        ("counts", "counts"),
        ("errors_by_type", "errors"),
        ("images_per_s", "images_per_s"),
        ("seconds", "seconds"),
        ("detector_metrics", "detector"),
    ):
        for name, value in flatten_dict(summary.get(key) or {}).items():
            try:
                number = float(value)
            except ValueError:
                continue
            if math.isfinite(number):
                out[f"{prefix}/{name.replace('.', '/')}"] = number
    return out


class PipelineRun:
    """The pipeline's MLflow run (see the module docstring); inert when there is no store.

    Args:
        cfg: the pipeline config (``abs_ray.pipeline.PipelineConfig``).
        s3: S3 settings, to read artifacts from a remote output.
    """

    def __init__(self, cfg: Any, s3: S3Options | None) -> None:
        self.cfg, self.s3 = cfg, s3
        self.run_id: str | None = None
        self.client: Any = None
        self.tracking_uri: str | None = None

    def _tracking_uri(self) -> str | None:
        return self.cfg.train.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")

    def start(self, run_name: str, tags: Mapping[str, str]) -> str | None:
        """Create the run (params: the flattened config); return its id, or None."""
        from mlflow import MlflowClient
        from mlflow.entities import Param

        from abs_ray.train.tracking import prepare_experiment, resolve_artifact_location

        uri = self._tracking_uri()
        if uri is None:
            logger.debug("no MLflow tracking URI: the pipeline logs no run")
            return None
        train = self.cfg.train
        # The training's default location (its out is <out>/train), so both agree.
        location = resolve_artifact_location(
            train.mlflow_artifact_location, join(self.cfg.out, "train"), uri
        )
        exp_id = prepare_experiment(
            uri,
            train.mlflow_experiment,
            location,
            configured=train.mlflow_artifact_location is not None,
        )
        self.client = MlflowClient(uri)
        self.tracking_uri = uri
        run = self.client.create_run(exp_id, run_name=run_name, tags=dict(tags))
        self.run_id = run.info.run_id
        params = [Param(k, v[:6000]) for k, v in sorted(flatten_dict(self.cfg.to_dict()).items())]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        logger.info("MLflow: pipeline run %s in %s", self.run_id, uri)
        return self.run_id

    def finish(self, summary: Mapping[str, Any] | None, failed: bool = False) -> None:
        """Log the summary's metrics, ``manifest.json`` and the pictures; end the run."""
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        try:
            if summary:
                metrics = [Metric(k, v, 0, 0) for k, v in sorted(summary_metrics(summary).items())]
                for i in range(0, len(metrics), 200):
                    self.client.log_batch(self.run_id, metrics=metrics[i : i + 200])
                self.client.log_dict(self.run_id, dict(summary), "manifest.json")
                best = ((summary.get("train") or {}).get("best") or {}).get("test") or {}
                wga = best.get("worst_group_accuracy")
                if isinstance(wga, (int, float)) and math.isfinite(wga):
                    self.client.log_metric(self.run_id, "train/test_worst_group_accuracy", wga)
            self._log_pictures()
        finally:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")

    def _log_pictures(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            for rel in ARTIFACTS:
                uri = join(self.cfg.out, rel)
                if not exists(uri, self.s3):
                    continue
                path = os.path.join(folder, os.path.basename(rel))
                with open(path, "wb") as f:
                    f.write(read_bytes(uri, self.s3))
                self.client.log_artifact(self.run_id, path, os.path.dirname(rel) or None)
