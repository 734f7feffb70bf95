"""The driver side of a training run: check the data and config, build the Ray Data pipelines,
run :class:`ray.train.torch.TorchTrainer`, return the report.

Outputs (``cfg.out`` local or ``s3://``):

- ``<out>/<run name>/config.json`` — the resolved config (checked on re-submission);
- ``<out>/<run name>/report.json`` and ``per_group_accuracy.png`` — written by rank 0 at the
  end (also logged to MLflow with the model and ``train_samples.png``);
- ``<out>/ray/<run name>/`` — Ray Train's run folder with the checkpoints;
- for a local ``out`` without a tracking URI: ``<out>/mlflow.db`` and ``<out>/mlartifacts/``
  (with a tracking server, artifacts go where the server says).

Re-submitting a job with the same ``out`` and run name resumes it from its last checkpoint
(Ray Train V2 restores a run whose ``RunConfig(name, storage_path)`` already holds one); only
the fields in :data:`~abs_ray.train.config.RESUMABLE_CHANGES` (e.g. ``epochs``, workers) may
change. A run that already finished returns its report without training. Multi-node clusters
need ``out`` on shared storage (``s3://``): every node writes checkpoints there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from abs_ray.console import RemoteProgress
from abs_ray.devices import cluster_cpus, cluster_gpus
from abs_ray.errors import ConfigError, DatasetError
from abs_ray.io import S3Options, check_writable, exists, is_remote, join, read_text, resolve
from abs_ray.io import write_text as _write_text
from abs_ray.train.config import TrainConfig, cpu_request
from abs_ray.train.data import DatasetInfo, build_datasets, scan_disentangled
from abs_ray.train.loop import PROGRESS_STAGE, FaultInjection, train_loop_per_worker
from abs_ray.train.swap_val import read_swap_val, swap_val_datasets
from abs_ray.train.tracking import (
    prepare_experiment,
    resolve_artifact_location,
    resolve_tracking_uri,
)
from abs_ray.version import code_version

logger = logging.getLogger(__name__)

__all__ = ["resolve_config", "run_training"]


def _code_version() -> str:
    return code_version()


def resolve_config(cfg: TrainConfig, info: DatasetInfo, gpus_available: float = 0.0) -> TrainConfig:
    """Fill the run's open settings from the data and cluster, and check them against it.

    Fills ``run_name``, ``num_classes``, ``image_size``, ``use_gpu``, the MLflow tracking URI
    (the artifact location stays as configured: None = the tracking server's choice or
    ``<out>/mlartifacts``, see :mod:`abs_ray.train.tracking`), and makes local ``data``/``out`` paths absolute (Ray Train workers
    run in their own working directory, where a relative path points elsewhere).

    Raises:
        ConfigError: ``oracle`` without true masks, worst-group selection without val group
            labels, labels beyond ``num_classes``, fewer train rows than one global batch,
            a remote ``out`` without a tracking URI.
        DatasetError: no val rows (model selection needs them).
    """
    if not info.counts.get("val"):
        raise DatasetError(
            f"{info.uri}: no val rows (splits: {info.counts}); model selection needs a val split"
        )
    if cfg.method == "oracle" and info.true_mask_column is None:
        raise ConfigError(
            "method 'oracle' needs true masks: every train row must carry mask_png (PNG bytes) "
            "or mask_uri (the pipeline fills it when the source data set has masks); this data "
            f"set has neither for all train rows. Columns: {', '.join(info.columns)}"
        )
    if cfg.select_by == "val_worst_group_accuracy" and not info.has_groups("val"):
        raise ConfigError(
            "select_by 'val_worst_group_accuracy' needs a group label on every val row; use "
            "'val_accuracy' (the paper's, no group labels needed)"
        )
    num_classes = cfg.num_classes or max(2, info.num_classes)
    if info.num_classes > num_classes:
        raise ConfigError(f"labels go up to {info.num_classes - 1}, num_classes is {num_classes}")
    if info.counts["train"] < cfg.batch_size:
        raise ConfigError(
            f"the train split has {info.counts['train']} rows, fewer than one batch "
            f"({cfg.batch_size})"
        )
    use_gpu = cfg.use_gpu if cfg.use_gpu is not None else gpus_available >= cfg.num_workers
    out = cfg.out if is_remote(cfg.out) else join(cfg.out)
    return dataclasses.replace(
        cfg,
        data=cfg.data if is_remote(cfg.data) else join(cfg.data),
        out=out,
        run_name=cfg.resolved_run_name,
        num_classes=num_classes,
        image_size=cfg.image_size or info.image_size,
        use_gpu=bool(use_gpu),
        mlflow_tracking_uri=resolve_tracking_uri(cfg.mlflow_tracking_uri, out),
    )


def _check_resume(cfg: TrainConfig, run_dir: str, s3: S3Options) -> dict[str, Any] | None:
    """Compare with a stored run; return its report when it already finished."""
    stored_uri = join(run_dir, "config.json")
    if not exists(stored_uri, s3):
        return None
    stored = json.loads(read_text(stored_uri, s3))
    for key in ("data", "out"):  # runs stored before local paths were made absolute
        value = stored.get(key)
        if isinstance(value, str) and not is_remote(value):
            stored[key] = join(value)
    changes = cfg.changes_from(stored)
    if changes:
        listed = "; ".join(
            f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in changes.items())
        )
        raise ConfigError(
            f"run {cfg.resolved_run_name!r} in {cfg.out} exists with other settings ({listed}); "
            "resume with the same settings or choose another run_name"
        )
    report_uri = join(run_dir, "report.json")
    if exists(report_uri, s3):
        report = json.loads(read_text(report_uri, s3))
        if report.get("epochs_completed") == cfg.epochs:
            return report
    return None


def _swap_val_pairs(cfg: TrainConfig, info: DatasetInfo, s3: S3Options) -> Any | None:
    """The val pairs of ``swap_val_accuracy`` (:func:`~abs_ray.train.swap_val.read_swap_val`),
    or None (with a warning) when the data set cannot give them and ``select_by`` does not
    need them.

    Raises:
        ConfigError: ``select_by="swap_val_accuracy"`` on a data set whose val rows lack an
            inpainted background or a foreground alpha.
    """
    try:
        return read_swap_val(info, cfg.seed, s3)
    except DatasetError as exc:
        if cfg.select_by == "swap_val_accuracy":
            raise ConfigError(
                f"select_by 'swap_val_accuracy' needs every val row's foreground alpha and "
                f"inpainted background: {exc}; use 'val_accuracy' on this data set"
            ) from exc
        logger.warning("no swap_val_accuracy in this run: %s", exc)
        return None


def _ray_train_level() -> str:
    """The driver's effective level of the ``ray.train`` logger, as a level name."""
    name = logging.getLevelName(logging.getLogger("ray.train").getEffectiveLevel())
    return name if name in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL") else "INFO"


def _warn_if_short_of_cpus(cfg: TrainConfig) -> None:
    """Ray Train waits, silently, for CPUs the cluster does not have: say so first."""
    cpus = cluster_cpus()
    if cpu_request(cfg) > cpus:
        logger.warning(
            "training holds %.2f CPUs (%d workers x %.2f + %.2f for decoding), the cluster has "
            "%.2f now: it waits until more join (an autoscaling cluster adds them); on a fixed "
            "cluster lower --num_workers or --cpus_per_worker",
            cpu_request(cfg),
            cfg.num_workers,
            cfg.cpus_per_worker,
            cfg.decode_num_cpus,
            cpus,
        )


def _trainer(
    cfg: TrainConfig,
    info: DatasetInfo,
    s3: S3Options,
    fault: FaultInjection | None,
    swap_val: Any | None = None,
) -> Any:
    """The ``TorchTrainer`` for a resolved config: datasets (with the swap-val ``pairs`` when
    given), scaling, storage and MLflow tags."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    mask_source = info.true_mask_column if cfg.method == "oracle" else "foreground"
    datasets = build_datasets(
        info,
        size=int(cfg.image_size),
        world=cfg.num_workers,
        mask_source=mask_source or "foreground",
        decode_num_cpus=cfg.decode_num_cpus,
        seed=cfg.seed,
        s3=s3,
    )
    if swap_val is not None:
        datasets.update(
            swap_val_datasets(
                swap_val,
                size=int(cfg.image_size),
                world=cfg.num_workers,
                decode_num_cpus=cfg.decode_num_cpus,
            )
        )
    storage = join(cfg.out, "ray")
    storage_fs, storage_path = resolve(storage, s3)
    tags = {
        **info.tags(),
        "abs_ray.code_version": _code_version(),
        "abs_ray.method": cfg.method,
        "abs_ray.backbone": cfg.backbone,
    }
    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": cfg,
            "info": info,
            "s3": s3,
            "tags": tags,
            "fault": fault,
            "swap_val": swap_val is not None,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=cfg.resolved_run_name,
            storage_path=storage_path,
            storage_filesystem=storage_fs if is_remote(storage) else None,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            # Ray Train's own console lines ("Reporting training result ...") at the level
            # abs_ray.console gave Ray (WARNING unless -v); its log files keep every level.
            logging_config=LoggingConfig(log_level=_ray_train_level()),
        ),
        datasets=datasets,
        # val/test (and swap-val) are sharded by id per worker (no rows dropped), see
        # build_datasets.
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )


def run_training(
    cfg: TrainConfig, s3: S3Options | None = None, *, fault: FaultInjection | None = None
) -> dict[str, Any]:
    """Train a classifier on a disentangled data set with Ray Train; return the report.

    Needs a connected Ray cluster (``ray.init`` done by the caller).

    Args:
        cfg: the training config.
        s3: S3 settings for data, output and checkpoints; default from the environment.
        fault: test hook, see :class:`~abs_ray.train.loop.FaultInjection`.

    Returns:
        The run's ``report.json`` content: best epoch and its val/test/swap-val metrics
        (overall, per-group, worst-group accuracy), per-epoch history, MLflow ids and model URI, resumes.

    Raises:
        ConfigError / DatasetError: see :func:`resolve_config` and
            :func:`~abs_ray.train.data.scan_disentangled`; settings differing from a stored
            run of the same name; ``select_by="swap_val_accuracy"`` on a data set whose val
            rows lack backgrounds or alphas.
        StorageError: data or output unreachable.
        ray.train.TrainingFailedError: training failed more than ``max_failures`` times.
    """
    s3 = s3 or S3Options.from_env()
    info = scan_disentangled(cfg.data, s3)
    cfg = resolve_config(cfg, info, cluster_gpus())
    run_name = cfg.resolved_run_name
    run_dir = join(cfg.out, run_name)
    check_writable(cfg.out, s3)
    finished = _check_resume(cfg, run_dir, s3)
    if finished is not None:
        logger.info("run %s already finished %d epochs; not training", run_name, cfg.epochs)
        return finished
    swap_val = _swap_val_pairs(cfg, info, s3)
    prepare_experiment(
        cfg.mlflow_tracking_uri,
        cfg.mlflow_experiment,
        resolve_artifact_location(cfg.mlflow_artifact_location, cfg.out, cfg.mlflow_tracking_uri),
        configured=cfg.mlflow_artifact_location is not None,
    )
    _write_text(join(run_dir, "config.json"), json.dumps(cfg.to_dict(), indent=2), s3)
    trainer = _trainer(cfg, info, s3, fault, swap_val)
    _warn_if_short_of_cpus(cfg)
    logger.info(
        "training %s (%s, %s) on %d worker(s), %s; data %s (%s)",
        run_name,
        cfg.method,
        cfg.backbone,
        cfg.num_workers,
        "GPU" if cfg.use_gpu else "CPU",
        info.uri,
        info.counts,
    )
    with RemoteProgress() as remote:
        remote.progress(PROGRESS_STAGE, total=cfg.epochs, unit="epoch")
        trainer.train_loop_config["progress"] = remote.handle  # the dict fit() sends
        result = trainer.fit()
    report = json.loads(read_text(join(run_dir, "report.json"), s3))
    if result.checkpoint is not None:
        report["checkpoint"] = str(result.checkpoint.path)
    return report
