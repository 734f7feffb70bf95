"""The training function each Ray Train worker runs (the step it repeats is
:func:`abs_ray.train.step.train_step`, re-exported here).

:func:`train_loop_per_worker` is a sequence of named steps, each a function below:

1. :func:`_set_up`: the model, optimizer and schedule, restored with the run's progress
   (:class:`WorkerState`) from ``ray.train.get_checkpoint()`` when there is one;
2. :func:`_start_tracking` (rank 0): the run's MLflow run, with epochs the checkpoint holds but
   MLflow lacks logged again;
3. per epoch, :func:`_train_epoch`: stream the worker's shard of ``train``
   (``get_dataset_shard`` -> ``iter_torch_batches``, already decoded), run :func:`train_step`
   on the worker's device, all-reduce the sums;
4. :func:`_evaluate`: the worker's share of val and test, predictions gathered, scored per
   split, and (when the data set allows) the label-free ``swap_val`` score: val foregrounds on
   other val images' backgrounds (:mod:`abs_ray.train.swap_val`);
5. :func:`_record_epoch` and :func:`_report_epoch`: the epoch's history entry and the best
   model so far, then a checkpoint (rank 0 writes it) with ``ray.train.report``, and rank 0's
   MLflow metrics;
6. :func:`_finish` (rank 0, after the last epoch): the selected model, the charts and
   ``report.json``.

A restarted worker group (``FailureConfig``) or a re-submitted job with the same run name and
storage gets the last checkpoint from ``ray.train.get_checkpoint()`` and continues with the
next epoch: model, optimizer, schedule, the best model so far and the metric history are in it.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
import os
import tempfile
import time
from typing import Any

import torch

from abs_ray.io import S3Options, join, write_bytes, write_text
from abs_ray.models.classifier import create_classifier
from abs_ray.ops import to_float_chw
from abs_ray.train.augment import CropParams, RecentBackgrounds, apply_crop, sample_grid
from abs_ray.train.config import SELECTION_METRICS, TrainConfig, flatten_dict
from abs_ray.train.data import SPLIT_CODES, DatasetInfo, eval_dataset_name
from abs_ray.train.evaluate import flat_metrics, gather, predict, split_metrics
from abs_ray.train.step import StepOutput, swap_config, train_step
from abs_ray.train.swap_val import SWAP_VAL, swap_val_dataset_name, swap_val_metrics

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FILE",
    "FaultInjection",
    "StepOutput",
    "WorkerState",
    "swap_config",
    "train_loop_per_worker",
    "train_step",
]

#: File inside every Ray Train checkpoint directory.
CHECKPOINT_FILE = "state.pt"
STATE_FORMAT = "abs_ray.classifier_train/1"
#: The progress stage the epochs are reported under.
PROGRESS_STAGE = "train epochs"


@dataclasses.dataclass(frozen=True)
class FaultInjection:
    """Test hook: worker ``rank`` exits abruptly (``os._exit``) once epoch ``after_epoch``'s
    checkpoint is committed, only the first time (it creates ``marker``, a local file)."""

    rank: int
    after_epoch: int
    marker: str


# --- per-worker state -------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class WorkerState:
    """What a worker carries from epoch to epoch, all of it in every checkpoint.

    Attributes:
        model: the classifier (wrapped by ``prepare_model``).
        optimizer: its SGD optimizer.
        scheduler: the cosine schedule, or None for a constant learning rate.
        start_epoch: the first epoch this attempt trains (0, or the checkpoint's epoch + 1).
        history: one entry per finished epoch (train, val and test metrics, seconds).
        best: the selected epoch so far: ``epoch``, ``score``, ``val``, ``test``, ``swap_val``
            (None without swap-val) and (rank 0)
            its CPU ``model`` state; None before the first epoch.
        attempts: ``{"start_epoch", "time"}`` per attempt (restart or re-submission).
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    start_epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def checkpoint(self, epoch: int, cfg: TrainConfig) -> dict[str, Any]:
        """The payload of :data:`CHECKPOINT_FILE` after ``epoch``."""
        return {
            "format": STATE_FORMAT,
            "epoch": epoch,
            "model": _cpu_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "best": self.best,
            "history": self.history,
            "attempts": self.attempts,
            "config": cfg.to_dict(),
        }


@dataclasses.dataclass(eq=False)
class _Worker:
    """One worker's fixed parts for the whole run: config, place, data and (rank 0) tracker.

    Attributes:
        train_shard: its ``ray.train.get_dataset_shard("train")``, streamed every epoch.
        eval_shard: its share of val and test (:func:`~abs_ray.train.data.eval_dataset_name`).
        bank: the swap's background bank (``abs``/``oracle``), else None.
        tracker: rank 0's :class:`~abs_ray.train.tracking.RunLogger`, else None.
        eval_cache: the eval share, decoded once and kept on the CPU for later epochs.
        swap_val_shard: its share of the swap-val pairs
            (:func:`~abs_ray.train.swap_val.swap_val_dataset_name`), None when the run has none.
        swap_val_cache: that share, decoded once and kept on the CPU.
        grid_pending: rank 0 still has to log the sheet of training inputs (its first batch).
    """

    cfg: TrainConfig
    info: DatasetInfo
    rank: int
    device: torch.device
    train_shard: Any
    eval_shard: Any
    bank: RecentBackgrounds | None
    tracker: Any | None = None
    eval_cache: list[dict[str, torch.Tensor]] | None = None
    grid_pending: bool = False
    swap_val_shard: Any | None = None
    swap_val_cache: list[dict[str, torch.Tensor]] | None = None


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}


def _load_state() -> dict[str, Any] | None:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        state = torch.load(
            os.path.join(folder, CHECKPOINT_FILE), map_location="cpu", weights_only=True
        )
    logger.info("resuming from checkpoint %s (epoch %d done)", checkpoint.path, state["epoch"])
    return state


def _all_reduce(values: torch.Tensor) -> list[float]:
    """Sum a small tensor over the workers (in place) and return it as floats."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values)
    return values.tolist()


def _seed(cfg: TrainConfig, epoch: int, rank: int) -> int:
    return (cfg.seed * 1_000_003 + epoch * 1009 + rank) % (2**63)


# --- the worker function and its steps ---------------------------------------------------------


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The function :class:`ray.train.torch.TorchTrainer` runs on every worker.

    Args:
        config: ``{"cfg": TrainConfig (resolved), "info": DatasetInfo, "s3": S3Options,
            "tags": {str: str}, "fault": FaultInjection | None, "progress": a
            :class:`~abs_ray.console.ProgressSink` or None, "swap_val": whether the datasets
            hold the swap-val pairs}``.
    """
    import ray.train
    import ray.train.torch

    cfg: TrainConfig = config["cfg"]
    info: DatasetInfo = config["info"]
    s3: S3Options | None = config.get("s3")
    fault: FaultInjection | None = config.get("fault")
    tags: dict[str, str] = config.get("tags", {})
    rank = ray.train.get_context().get_world_rank()
    # Rank 0 reports epochs to the driver's progress display (abs_ray.console.RemoteProgress).
    progress = config.get("progress") if rank == 0 else None

    state = _set_up(cfg, s3)
    if progress is not None:
        progress.set_total(PROGRESS_STAGE, cfg.epochs)
        progress.add(PROGRESS_STAGE, state.start_epoch)
    tracker = _start_tracking(cfg, info, tags, state.history, s3) if rank == 0 else None
    worker = _Worker(
        cfg=cfg,
        info=info,
        rank=rank,
        device=ray.train.torch.get_device(),
        train_shard=ray.train.get_dataset_shard("train"),
        eval_shard=ray.train.get_dataset_shard(eval_dataset_name(rank)),
        bank=RecentBackgrounds(cfg.bank_size) if cfg.swaps else None,
        tracker=tracker,
        grid_pending=tracker is not None and bool(cfg.sample_grid),
        swap_val_shard=(
            ray.train.get_dataset_shard(swap_val_dataset_name(rank))
            if config.get("swap_val")
            else None
        ),
    )
    for epoch in range(state.start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        train = _train_epoch(worker, state, epoch)
        evals = _evaluate(worker, state.model)
        entry = _record_epoch(worker, state, epoch, train, evals, time.perf_counter() - t0)
        _report_epoch(worker, state, entry)
        if progress is not None:
            progress.add(PROGRESS_STAGE, 1)
        if fault is not None:
            _inject_fault(fault, rank, epoch)
    if tracker is not None:
        _finish(worker, state, s3, tags)


def _set_up(cfg: TrainConfig, s3: S3Options | None) -> WorkerState:
    """Build the model, optimizer and schedule (seeded by ``cfg.seed``), restore them and the
    progress from the last checkpoint if there is one, and record this attempt."""
    import ray.train.torch

    torch.manual_seed(cfg.seed)
    model = create_classifier(
        cfg.backbone,
        num_classes=int(cfg.num_classes),
        weights=cfg.weights,
        freeze_backbone=cfg.freeze_backbone,
        dropout=cfg.dropout,
        s3=s3,
    )
    saved = _load_state()
    if saved is not None:
        model.load_state_dict(saved["model"])
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad],
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
        if cfg.lr_schedule == "cosine"
        else None
    )
    state = WorkerState(model, optimizer, scheduler)
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler"):
            scheduler.load_state_dict(saved["scheduler"])
        state.start_epoch = int(saved["epoch"]) + 1
        state.history, state.best = saved["history"], saved["best"]
        state.attempts = saved["attempts"]
    state.attempts = [*state.attempts, {"start_epoch": state.start_epoch, "time": time.time()}]
    return state


def _start_tracking(
    cfg: TrainConfig,
    info: DatasetInfo,
    tags: dict[str, str],
    history: list[dict[str, Any]],
    s3: S3Options | None = None,
) -> Any:
    """Rank 0: open (or reopen) the run's MLflow run (nested under ``mlflow_parent_run_id``),
    log the splits as dataset inputs with digests (a new run), start sampling system metrics,
    and log what ``history`` holds but MLflow does not (a crash between a checkpoint and its
    metrics)."""
    from abs_ray.train.mlflow_model import log_inputs, split_frames
    from abs_ray.train.tracking import RunLogger, resolve_artifact_location, run_key

    tracker = RunLogger(
        tracking_uri=cfg.mlflow_tracking_uri,
        experiment=cfg.mlflow_experiment,
        artifact_location=resolve_artifact_location(
            cfg.mlflow_artifact_location, cfg.out, cfg.mlflow_tracking_uri
        ),
        key=run_key(cfg.out, cfg.resolved_run_name),
        run_name=cfg.resolved_run_name,
        params={
            **flatten_dict(cfg.to_dict()),
            **{f"data.{s}_rows": str(n) for s, n in info.counts.items()},
            "data.image_size": str(info.image_size),
        },
        tags=tags,
        parent_run_id=cfg.mlflow_parent_run_id,
    )
    if not tracker.resumed:
        log_inputs(split_frames(info.files, s3), info.uri, run_id=tracker.run_id)
    tracker.start_system_metrics()
    _backfill(tracker, history)
    return tracker


def _train_epoch(worker: _Worker, state: WorkerState, epoch: int) -> dict[str, Any]:
    """One pass over the worker's train shard, then the schedule's step.

    Returns:
        The epoch's ``train`` entry: mean ``loss`` and ``accuracy``, ``samples``,
        ``swapped_fraction``, ``seconds``, ``samples_per_s`` (over every worker) and the
        learning rate after the schedule's step (``lr``).
    """
    cfg, model = worker.cfg, state.model
    t0 = time.perf_counter()
    model.train()
    generator = torch.Generator().manual_seed(_seed(cfg, epoch, worker.rank))
    shuffle = max(cfg.shuffle_buffer, cfg.per_worker_batch_size) if cfg.shuffle_buffer else None
    # loss * n, correct, n, swapped: summed on the device (no sync per step)
    sums = torch.zeros(4, dtype=torch.float64, device=worker.device)
    for batch in worker.train_shard.iter_torch_batches(
        batch_size=cfg.per_worker_batch_size,
        drop_last=True,
        local_shuffle_buffer_size=shuffle,
        local_shuffle_seed=_seed(cfg, epoch, worker.rank) if shuffle else None,
    ):
        out = train_step(
            model, state.optimizer, batch, cfg, worker.bank, generator, int(cfg.image_size)
        )
        n = out.inputs.shape[0]
        step_sums = (out.loss * n, out.correct, torch.tensor(n), out.swapped)
        sums += torch.stack([v.to(sums) for v in step_sums])
        if worker.grid_pending:
            _log_sample_grid(worker, batch, out.inputs)
    loss_sum, correct, n_train, n_swapped = _all_reduce(sums)
    seconds = time.perf_counter() - t0
    if state.scheduler is not None:
        state.scheduler.step()
    return {
        "loss": loss_sum / n_train if n_train else math.nan,
        "accuracy": correct / n_train if n_train else math.nan,
        "samples": int(n_train),
        "swapped_fraction": n_swapped / n_train if n_train else 0.0,
        "seconds": seconds,
        "samples_per_s": n_train / seconds if seconds > 0 else math.nan,
        "lr": state.optimizer.param_groups[0]["lr"],
    }


def _log_sample_grid(worker: _Worker, batch: dict[str, torch.Tensor], inputs: torch.Tensor) -> None:
    """Rank 0, first batch: log ``train_samples.png``, the originals (resized, not cropped)
    over the model's inputs."""
    images = batch["image"]
    originals = apply_crop(
        to_float_chw(images), CropParams.full(images.shape[0], *images.shape[1:3]), inputs.shape[-1]
    )
    sheet = sample_grid([originals, inputs], worker.cfg.sample_grid)
    worker.tracker.log_image(sheet.numpy(), "train_samples.png")
    worker.grid_pending = False


def _evaluate(worker: _Worker, model: torch.nn.Module) -> dict[str, dict[str, Any]]:
    """Predict the worker's eval share (decoded on the first call, then kept on the CPU),
    gather every worker's predictions and score each split that has rows; the same for the
    swap-val composites when the run has them.

    Returns:
        ``{split: split_metrics(...)}`` for ``val``, ``test`` and ``swap_val``.
    """
    size = worker.cfg.eval_batch_size
    if worker.eval_cache is None:
        worker.eval_cache = list(
            worker.eval_shard.iter_torch_batches(batch_size=size, device="cpu")
        )
    results = gather(predict(_unwrap(model), worker.eval_cache, worker.device))
    evals = {}
    for split, code in SPLIT_CODES.items():
        sel = results["split_code"] == code
        if worker.info.counts.get(split):
            evals[split] = split_metrics(
                results["pred"][sel],
                results["label"][sel],
                results["group"][sel],
                float(results["loss"][sel].sum()),
            )
    if worker.swap_val_shard is not None:
        if worker.swap_val_cache is None:
            batches = worker.swap_val_shard.iter_torch_batches(batch_size=size, device="cpu")
            worker.swap_val_cache = list(batches)
        evals[SWAP_VAL] = swap_val_metrics(_unwrap(model), worker.swap_val_cache, worker.device)
    return evals


def _record_epoch(
    worker: _Worker,
    state: WorkerState,
    epoch: int,
    train: dict[str, Any],
    evals: dict[str, dict[str, Any]],
    seconds: float,
) -> dict[str, Any]:
    """Append the epoch's entry to ``state.history`` and update ``state.best`` (selected by
    ``cfg.select_by`` on val or swap-val (see :data:`~abs_ray.train.config.SELECTION_METRICS`);
    ties go to the later epoch: as good on val, trained longer).

    Returns:
        The entry: ``epoch``, ``train``, ``val``/``test``/``swap_val`` metrics (JSON-able),
        ``seconds``.
    """
    entry = {
        "epoch": epoch,
        "train": train,
        **{s: _json_metrics(m) for s, m in evals.items()},
        "seconds": seconds,
    }
    state.history = [*state.history, entry]
    split, metric = SELECTION_METRICS[worker.cfg.select_by]
    score = evals[split][metric]
    if state.best is None or (math.isfinite(score) and score >= state.best["score"]):
        state.best = {
            "epoch": epoch,
            "score": score,
            "model": _cpu_state(state.model) if worker.rank == 0 else None,
            "val": entry.get("val"),
            "test": entry.get("test"),
            SWAP_VAL: entry.get(SWAP_VAL),
        }
    return entry


def _report_epoch(worker: _Worker, state: WorkerState, entry: dict[str, Any]) -> None:
    """Report the epoch's metrics to Ray Train with a checkpoint (written by rank 0, every
    worker calls ``report``), then log them to MLflow (rank 0) and the log."""
    import ray.train

    epoch = entry["epoch"]
    metrics = _epoch_metrics(entry)
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if worker.rank == 0:
            torch.save(state.checkpoint(epoch, worker.cfg), os.path.join(folder, CHECKPOINT_FILE))
            checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({**metrics, "epoch": epoch}, checkpoint=checkpoint)
    if worker.tracker is not None:
        worker.tracker.log_metrics(metrics, step=epoch)
    if worker.rank != 0:  # one line per epoch, not one per worker
        return
    logger.info(
        "epoch %d: train loss %.4f acc %.3f | val acc %.3f wga %.3f | %.1f s",
        epoch,
        entry["train"]["loss"],
        entry["train"]["accuracy"],
        entry["val"]["overall_accuracy"],
        entry["val"]["worst_group_accuracy"],
        entry["seconds"],
    )


def _inject_fault(fault: FaultInjection, rank: int, epoch: int) -> None:
    """The :class:`FaultInjection` hook: exit abruptly once, after the epoch's checkpoint."""
    import ray.train

    if (rank, epoch) != (fault.rank, fault.after_epoch) or os.path.exists(fault.marker):
        return
    # Wait until the controller has committed the checkpoint just reported: a worker that dies
    # within its poll interval (2 s) can take the last report with it.
    ray.train.get_all_reported_checkpoints(
        consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=120
    )
    with open(fault.marker, "w") as f:
        f.write(f"killed rank {rank} after epoch {epoch}\n")
    logger.warning("fault injection: rank %d exits after epoch %d", rank, epoch)
    os._exit(1)


def _json_metrics(m: dict[str, Any]) -> dict[str, Any]:
    out = dict(m)
    out["per_group"] = {str(g): v for g, v in m["per_group"].items()}
    out["counts"] = {str(g): v for g, v in m["counts"].items()}
    return out


def _epoch_metrics(entry: dict[str, Any]) -> dict[str, float]:
    metrics = {
        "train/loss": entry["train"]["loss"],
        "train/accuracy": entry["train"]["accuracy"],
        "train/swapped_fraction": entry["train"]["swapped_fraction"],
        "train/samples_per_s": entry["train"]["samples_per_s"],
        "train/lr": entry["train"]["lr"],
        "epoch_seconds": entry["seconds"],
    }
    for split in ("val", "test", SWAP_VAL):
        if split in entry:
            m = dict(entry[split])
            m["per_group"] = {int(g): v for g, v in m["per_group"].items()}
            metrics.update(flat_metrics(m, split))
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def _backfill(tracker: Any, history: list[dict[str, Any]]) -> None:
    """Log epochs that are in the checkpoint but not in MLflow (crash between the two)."""
    if not history:
        return
    done = tracker.logged_steps("train/loss")
    for entry in history:
        if entry["epoch"] not in done:
            logger.info("MLflow: logging epoch %d again after a restart", entry["epoch"])
            tracker.log_metrics(_epoch_metrics(entry), step=entry["epoch"])


def _finish(
    worker: _Worker, state: WorkerState, s3: S3Options | None, tags: dict[str, str]
) -> None:
    """Rank 0, after the last epoch: log the selected model (self-contained, registered as
    ``register_model`` when set), charts and ``report.json`` to MLflow, write the report
    and chart to ``<out>/<run name>/``, end the MLflow run."""
    from abs_ray.train.mlflow_model import register_model, version_tags
    from abs_ray.train.tracking import group_accuracy_figure

    cfg, tracker = worker.cfg, worker.tracker
    run_dir = join(cfg.out, cfg.resolved_run_name)
    selected = copy.deepcopy(_unwrap(state.model)).cpu().eval()
    if state.best is not None and state.best.get("model") is not None:
        selected.load_state_dict(state.best["model"])
    model_info = tracker.log_model(selected, int(cfg.image_size))
    report = _run_report(worker, state, model_info.model_uri, tags)
    if cfg.register_model:
        version = register_model(model_info.model_uri, cfg.register_model, version_tags(report))
        report["mlflow"]["registered_model"] = {
            "name": cfg.register_model,
            "version": str(version.version),
        }
    figure = group_accuracy_figure(report)
    tracker.log_figure(figure, "per_group_accuracy.png")
    tracker.log_dict(report, "report.json")
    tracker.set_tags({"abs_ray.best_epoch": str(report["best"].get("epoch"))})
    text = json.dumps(report, indent=2, sort_keys=True, default=str)
    buf = io.BytesIO()
    figure.savefig(buf, format="png")
    write_bytes(join(run_dir, "per_group_accuracy.png"), buf.getvalue(), s3)
    write_text(join(run_dir, "report.json"), text, s3)
    tracker.end()
    logger.info(
        "run %s done: best epoch %s, test WGA %s; report %s",
        cfg.resolved_run_name,
        report["best"].get("epoch"),
        (report["best"].get("test") or {}).get("worst_group_accuracy"),
        join(run_dir, "report.json"),
    )


def _run_report(
    worker: _Worker, state: WorkerState, model_uri: str, tags: dict[str, str]
) -> dict[str, Any]:
    """``report.json``: the run, its MLflow ids, the selected and final epochs, attempts,
    history, data provenance and the resolved config."""
    cfg, tracker = worker.cfg, worker.tracker
    last = state.history[-1] if state.history else {}
    return {
        "run_name": cfg.resolved_run_name,
        "method": cfg.method,
        "mlflow": {
            "tracking_uri": cfg.mlflow_tracking_uri,
            "experiment_id": tracker.experiment_id,
            "run_id": tracker.run_id,
            "model_uri": model_uri,
        },
        "epochs_completed": len(state.history),
        "select_by": cfg.select_by,
        "best": {k: v for k, v in (state.best or {}).items() if k != "model"},
        "final": {k: last.get(k) for k in ("epoch", "train", "val", "test", SWAP_VAL)},
        "resumed_from_epochs": [a["start_epoch"] for a in state.attempts if a["start_epoch"] > 0],
        "attempts": len(state.attempts),
        "history": state.history,
        "data": worker.info.to_dict(),
        "tags": tags,
        "config": cfg.to_dict(),
    }
