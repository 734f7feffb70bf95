"""MLflow logging of a training run, done by the rank-0 worker only.

One MLflow run per training run, found again by the tag ``abs_ray.run_key`` (a hash of the
output URI and run name), so that a worker-group restart or a re-submitted job keeps logging
into the same run instead of opening a new one. Params (the full resolved config and the data
set's counts) and tags (data hashes, detector checkpoint, code version) are set when the run is
created; epochs already in the checkpoint but missing in MLflow (a crash between the checkpoint
and the log call) are logged again on resume.

Tracking URI: ``TrainConfig.mlflow_tracking_uri``, else ``MLFLOW_TRACKING_URI``, else a sqlite
store in a local output folder (MLflow 3.17's file store raises).

Artifacts: with a tracking server (``http(s)://``) they go where the server says (its
``--default-artifact-root`` or ``--artifacts-destination``) unless a location is configured.
With a local store (sqlite, a database URL) new experiments get an explicit location (default
``<out>/mlartifacts``), and :func:`prepare_experiment` creates a new sqlite store on the driver
with that default root, because MLflow's default is relative to the process's working directory,
which for a Ray worker is a temporary folder (the store's "Default" experiment pointed there).
An existing experiment keeps its location (MLflow stores it per experiment): a configured
location that differs is refused before any work, a differing default only noted.
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
            f"output {out} is remote: set MLFLOW_TRACKING_URI (or --mlflow_tracking_uri) to a "
            "tracking server or database; the default sqlite store needs a local output folder"
        )
    return mlflow_tracking_uri(out)


def is_tracking_server(tracking_uri: str) -> bool:
    """True for a tracking server, which decides where artifacts go.

    >>> is_tracking_server("http://mlflow:5000"), is_tracking_server("sqlite:////tmp/m.db")
    (True, False)
    """
    return tracking_uri.split(":", 1)[0].lower() in ("http", "https", "databricks")


def resolve_artifact_location(
    configured: str | None, out: str, tracking_uri: str | None = None
) -> str | None:
    """Artifact root for a new experiment: ``configured``; else None (the server's choice)
    for a tracking server; else ``<out>/mlartifacts``.

    >>> resolve_artifact_location(None, "s3://b/runs", "http://mlflow:5000") is None
    True
    >>> resolve_artifact_location(None, "/tmp/out", "sqlite:////tmp/out/mlflow.db")
    '/tmp/out/mlartifacts'
    """
    if configured:
        return configured
    if tracking_uri and is_tracking_server(tracking_uri):
        return None
    return join(out, "mlartifacts")


def _same_location(a: str, b: str) -> bool:
    def norm(x: str) -> str:
        x = x.rstrip("/")
        return x[len("file://") :] if x.startswith("file://") else x

    return norm(a) == norm(b)


def prepare_experiment(
    tracking_uri: str, experiment: str, artifact_location: str | None, configured: bool
) -> str:
    """Driver side, before any work: the store (a new sqlite file gets ``artifact_location`` as
    its default root) and the experiment (created with ``artifact_location``); return its id.

    Raises:
        ConfigError: the experiment exists with another artifact location than a configured
            one (``configured``), or was deleted.
    """
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///") and artifact_location is not None:
        path = tracking_uri[len("sqlite:///") :]
        if not os.path.exists(path):
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            # The store creates its "Default" experiment at this root, not at ./mlruns.
            SqlAlchemyStore(tracking_uri, artifact_location)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        exp_id = client.create_experiment(experiment, artifact_location=artifact_location)
        logger.info(
            "created MLflow experiment %s (artifacts: %s)",
            experiment,
            client.get_experiment(exp_id).artifact_location,
        )
        return exp_id
    if exp.lifecycle_stage != "active":
        raise ConfigError(
            f"MLflow experiment {experiment!r} is deleted; restore it or choose another name"
        )
    if artifact_location is not None and not _same_location(
        exp.artifact_location, artifact_location
    ):
        if configured:
            raise ConfigError(
                f"MLflow experiment {experiment!r} keeps its artifacts in {exp.artifact_location}"
                f", not {artifact_location}: MLflow fixes the location per experiment; choose "
                "another experiment name for the new location"
            )
        logger.info(
            "MLflow experiment %s keeps its artifacts in %s", experiment, exp.artifact_location
        )
    return exp.experiment_id


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
        parent_run_id: nest the run under this one (``mlflow.parentRunId``).
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
        parent_run_id: str | None = None,
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
            extra = {"mlflow.parentRunId": parent_run_id} if parent_run_id else {}
            run = self.client.create_run(
                exp_id, run_name=run_name, tags={**tags, **extra, RUN_KEY_TAG: key}
            )
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

    def log_model(
        self, model: Any, image_size: int, example_images: Sequence[bytes] | None = None
    ) -> Any:
        """Log the classifier self-contained (``torch.export`` + a pyfunc whose code travels
        with it, a signature and an input example: it loads where ``abs_ray`` is not
        installed), see :func:`abs_ray.train.mlflow_model.log_classifier`.

        Returns:
            MLflow's ``ModelInfo`` (``.model_uri``, ``models:/<id>``).
        """
        from abs_ray.train.mlflow_model import log_classifier

        return log_classifier(
            model, image_size, run_id=self.run_id, example_images=example_images or None
        )

    def start_system_metrics(self) -> None:
        """Sample CPU, memory, disk and network into the run (where psutil is installed)."""
        from abs_ray.train.mlflow_model import start_system_metrics

        try:
            self._monitor = start_system_metrics(self.run_id)
        except Exception as exc:  # noqa: BLE001 - metrics are optional, the run is not
            logger.warning("no system metrics: %s", exc)
            self._monitor = None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def end(self, status: str = "FINISHED") -> None:
        """End the run (``FINISHED`` or ``FAILED``), and its system metrics."""
        monitor, self._monitor = getattr(self, "_monitor", None), None
        if monitor is not None:
            monitor.finish()
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
    from matplotlib.ticker import MaxNLocator

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
        # Only groups the split has: no empty (NaN) bar where a split lacks a group.
        present = [j for j, g in enumerate(groups) if g in per and math.isfinite(per[g])]
        offset = (i - (len(splits) - 1) / 2) * width
        bars = ax_bar.bar(
            x[present] + offset, [per[groups[j]] for j in present], width, label=split
        )
        # The value on each bar: an accuracy of 0 is a bar of height 0, not a missing one.
        ax_bar.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax_bar.set_xticks(x, [f"group {g}" for g in groups])
    ax_bar.set_ylim(0, 1.1)  # room for the labels over bars at 1.0
    ax_bar.set_yticks(np.linspace(0, 1, 6))
    ax_bar.set_ylabel("accuracy")
    ax_bar.set_title(f"per-group accuracy, epoch {best['epoch']} (selected)")
    if splits:
        # Beside the axes, not over the bars (a bar can reach 1.0 anywhere).
        ax_bar.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    history: Sequence[Mapping[str, Any]] = report.get("history", [])
    for split in ("val", "test"):
        ys = [h.get(split, {}).get("worst_group_accuracy", math.nan) for h in history]
        if any(math.isfinite(y) for y in ys if y is not None):
            ax_line.plot([h["epoch"] for h in history], ys, marker="o", label=f"{split} WGA")
    ax_line.set_ylim(-0.03, 1.03)  # markers at 0 and 1 drawn whole
    epochs = [h["epoch"] for h in history]
    if epochs:  # whole epochs only, with room either side (one epoch: one tick, not 0.0±0.05)
        ax_line.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    if 0 < len(epochs) <= 12:
        ax_line.set_xticks(sorted(set(epochs)))
    else:
        ax_line.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_line.set_xlabel("epoch")
    ax_line.set_title("worst-group accuracy")
    if ax_line.lines:
        ax_line.legend(loc="lower right")
    else:  # a data set without group labels (e.g. class folders): say so, not an empty plot
        ax_line.text(
            0.5,
            0.5,
            "no group labels",
            ha="center",
            va="center",
            color="gray",
            transform=ax_line.transAxes,
        )
    fig.suptitle(f"{report['config']['method']} / {report['config']['backbone']}")
    fig.tight_layout()
    return fig
