"""MLflow logging of a training run, done by the rank-0 worker only.

One MLflow run per training run, found again by the tag ``abs_ray.run_key`` (a hash of the
output URI and run name), so that a worker-group restart or a re-submitted job keeps logging
into the same run instead of opening a new one. Params (the full resolved config and the data
set's counts) and tags (data hashes, detector checkpoint, code version) are set when the run is
created; epochs already in the checkpoint but missing in MLflow (a crash between the checkpoint
and the log call) are logged again on resume.

Tracking URI: ``TrainConfig.mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a sqlite
store in a local output folder (MLflow 3.17's file store raises). New experiments get an
explicit artifact location (default ``<out>/mlartifacts``) because MLflow's default is relative
to the process's working directory, which for a Ray worker is a temporary folder.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from abs_ray.env import mlflow_tracking_uri
from abs_ray.errors import ConfigError
from abs_ray.io import is_remote, join

logger = logging.getLogger(__name__)

__all__ = [
    "RunLogger",
    "group_accuracy_figure",
    "resolve_artifact_location",
    "resolve_tracking_uri",
    "run_key",
]

RUN_KEY_TAG = "abs_ray.run_key"


def resolve_tracking_uri(configured: str | None, out: str) -> str:
    """The tracking URI to use (see the module docstring).

    Raises:
        ConfigError: none configured and ``out`` is remote (a sqlite file needs a local disk).

    >>> resolve_tracking_uri("http://mlflow:5000", "s3://bucket/runs")
    'http://mlflow:5000'
    """
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if is_remote(out):
        raise ConfigError(
            f"output {out} is remote: set MLFLOW_TRACKING_URI (or --mlflow-tracking-uri) to a "
            "tracking server or database; the default sqlite store needs a local output folder"
        )
    return mlflow_tracking_uri(out)


def resolve_artifact_location(configured: str | None, out: str) -> str:
    """Artifact root for a new experiment: ``configured`` or ``<out>/mlartifacts``."""
    return configured or join(out, "mlartifacts")


def run_key(out: str, run_name: str) -> str:
    """Stable id of a training run across restarts and re-submissions."""
    return hashlib.sha256(f"{out.rstrip('/')}\n{run_name}".encode()).hexdigest()[:32]


class RunLogger:
    """The rank-0 worker's handle on its MLflow run.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: experiment name (created with ``artifact_location`` if missing).
        artifact_location: artifact root for a new experiment.
        key: :func:`run_key` of this training run.
        run_name: shown in the MLflow UI.
        params: logged when the run is created (strings, e.g. flattened config).
        tags: set when the run is created.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        artifact_location: str,
        key: str,
        run_name: str,
        params: Mapping[str, str],
        tags: Mapping[str, str],
    ) -> None:
        import mlflow
        from mlflow import MlflowClient

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            exp_id = self.client.create_experiment(experiment, artifact_location=artifact_location)
            logger.info(
                "created MLflow experiment %s (artifacts: %s)", experiment, artifact_location
            )
        else:
            exp_id = exp.experiment_id
        found = self.client.search_runs(
            [exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=2
        )
        if found:
            self.run_id = found[0].info.run_id
            self.resumed = True
            logger.info("continuing MLflow run %s", self.run_id)
        else:
            run = self.client.create_run(exp_id, run_name=run_name, tags={**tags, RUN_KEY_TAG: key})
            self.run_id = run.info.run_id
            self.resumed = False
            self._log_params(params)
            logger.info("created MLflow run %s", self.run_id)
        self.experiment_id = exp_id
        mlflow.start_run(run_id=self.run_id)

    def _log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        for start in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log finite metrics at ``step`` (the epoch)."""
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
        self._mlflow.log_metrics(clean, step=step)

    def logged_steps(self, key: str) -> set[int]:
        """Steps already logged for metric ``key``."""
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def log_image(self, image: np.ndarray, artifact_file: str) -> None:
        """Log an ``(H, W, 3)`` uint8 image."""
        self._mlflow.log_image(image, artifact_file=artifact_file)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Log a matplotlib figure as an image."""
        self._mlflow.log_figure(figure, artifact_file)

    def log_dict(self, values: Mapping[str, Any], artifact_file: str) -> None:
        """Log a JSON artifact."""
        self._mlflow.log_dict(dict(values), artifact_file)

    def log_model(self, model: Any, name: str = "model") -> str:
        """Log a ``torch.nn.Module`` (pickled; needs ``abs_ray`` importable to load).

        Returns:
            The model URI (``models:/<id>``) for :func:`mlflow.pytorch.load_model`.
        """
        import mlflow.pytorch
        import torch
        import torchvision

        info = mlflow.pytorch.log_model(
            model,
            name=name,
            # MLflow 3.17 defaults to 'pt2' (torch.export with a fixed example input); a pickled
            # module keeps any input size.
            serialization_format="pickle",
            # Listed, not inferred: inference loads the model in a subprocess (slow).
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"torchvision=={torchvision.__version__.split('+')[0]}",
            ],
        )
        return info.model_uri

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def end(self, status: str = "FINISHED") -> None:
        """End the run (``FINISHED`` or ``FAILED``)."""
        self._mlflow.end_run(status=status)


def group_accuracy_figure(report: Mapping[str, Any]) -> Any:
    """Per-group accuracy of the selected model (val and test bars) and worst-group accuracy
    per epoch, as a matplotlib figure (Agg, no display needed).

    Args:
        report: the training report (``best.val``/``best.test`` split metrics and
            ``history`` entries with ``val``/``test`` worst-group accuracies).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_bar, ax_line = fig.subplots(1, 2)
    best = report["best"]
    splits = [s for s in ("val", "test") if best.get(s) and best[s].get("per_group")]
    groups = sorted({int(g) for s in splits for g in best[s]["per_group"]})
    width = 0.8 / max(1, len(splits))
    x = np.arange(len(groups))
    for i, split in enumerate(splits):
        per = {int(g): v for g, v in best[split]["per_group"].items()}
        heights = [per.get(g, math.nan) for g in groups]
        ax_bar.bar(x + (i - (len(splits) - 1) / 2) * width, heights, width, label=split)
    ax_bar.set_xticks(x, [f"group {g}" for g in groups])
    ax_bar.set_ylim(0, 1)
    ax_bar.set_ylabel("accuracy")
    ax_bar.set_title(f"per-group accuracy, epoch {best['epoch']} (selected)")
    if splits:
        ax_bar.legend()
    history: Sequence[Mapping[str, Any]] = report.get("history", [])
    for split in ("val", "test"):
        ys = [h.get(split, {}).get("worst_group_accuracy", math.nan) for h in history]
        if any(math.isfinite(y) for y in ys if y is not None):
            ax_line.plot([h["epoch"] for h in history], ys, marker="o", label=f"{split} WGA")
    ax_line.set_ylim(0, 1)
    ax_line.set_xlabel("epoch")
    ax_line.set_title("worst-group accuracy")
    ax_line.legend(loc="lower right")
    fig.suptitle(f"{report['config']['method']} / {report['config']['backbone']}")
    fig.tight_layout()
    return fig
