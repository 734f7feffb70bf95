"""The training function each Ray Train worker runs, and the step it repeats.

Per epoch, on every worker: stream its shard of ``train`` (``get_dataset_shard`` →
``iter_torch_batches``, already decoded), run :func:`train_step` on the worker's device,
evaluate its share of val and test, gather the predictions, and report metrics with a
checkpoint (rank 0 writes it) through ``ray.train.report``. Rank 0 also logs to MLflow and,
after the last epoch, logs the selected model, the charts and ``report.json``.

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
import torch.nn.functional as F

from abs_ray.io import S3Options, join, write_bytes, write_text
from abs_ray.ops import SwapConfig
from abs_ray.train.augment import (
    BackgroundBank,
    CropParams,
    apply_crop,
    cutmix,
    heavy_augment,
    sample_crop_params,
    sample_grid,
    swap_batch,
    to_float,
)
from abs_ray.train.config import TrainConfig, flatten_dict
from abs_ray.train.data import SPLIT_CODES, DatasetInfo, eval_dataset_name
from abs_ray.train.evaluate import flat_metrics, gather, predict, split_metrics
from abs_ray.train.models import create_classifier

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_FILE", "FaultInjection", "StepOutput", "train_loop_per_worker", "train_step"]

#: File inside every Ray Train checkpoint directory.
CHECKPOINT_FILE = "state.pt"
STATE_FORMAT = "abs_ray.classifier_train/1"


@dataclasses.dataclass(frozen=True)
class FaultInjection:
    """Test hook: worker ``rank`` exits abruptly (``os._exit``) once epoch ``after_epoch``'s
    checkpoint is committed, only the first time (it creates ``marker``, a local file)."""

    rank: int
    after_epoch: int
    marker: str


@dataclasses.dataclass(frozen=True, eq=False)
class StepOutput:
    """What one training step returns.

    Attributes:
        loss: the (smoothed) mean cross-entropy, a 0-d tensor (detached).
        correct: samples whose argmax equals the label, 0-d tensor.
        swapped: samples that were composited, 0-d tensor.
        inputs: ``(B, 3, S, S)`` the model's inputs (after swap, crop and flip), detached.
    """

    loss: torch.Tensor
    correct: torch.Tensor
    swapped: torch.Tensor
    inputs: torch.Tensor


def swap_config(cfg: TrainConfig, size: int) -> SwapConfig:
    """The :class:`~abs_ray.ops.SwapConfig` of a training config at image side ``size``."""
    return SwapConfig(
        scale=cfg.swap_scale,
        degrees=cfg.swap_degrees,
        translate=cfg.translate_pixels(size),
        class_uniform=True,
        keep_in_frame=True,
    )


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    bank: BackgroundBank | None,
    generator: torch.Generator,
    size: int,
) -> StepOutput:
    """One optimisation step on a decoded batch, everything on the batch's device.

    ``abs``/``oracle``: add the batch's backgrounds to ``bank``, composite every sample's
    foreground on a class-uniformly drawn bank background (probability ``cfg.swap_prob``);
    ``erm``: the original images; ``erm_aug``: the original images with colour jitter and
    RandAugment, then CutMix after the crop. Then RandomResizedCrop + flip, forward, smoothed
    cross-entropy (mixed over CutMix's two labels), backward, optimizer step (skipped when
    ``optimizer`` is None, for timing the forward/backward alone).

    Args:
        model: classifier on the batch's device.
        optimizer: its optimizer, or None.
        batch: ``image`` ``(B, H, W, 3)`` uint8, ``label`` ``(B,)``; for the swap also
            ``alpha`` ``(B, H, W)`` uint8 and ``background`` ``(B, H, W, 3)`` uint8.
        cfg: the training config.
        bank: background bank (required when ``cfg.swaps``).
        generator: CPU generator for swap, crop and flip draws.
        size: model input side.

    Returns:
        :class:`StepOutput`.
    """
    images = to_float(batch["image"])
    labels = batch["label"].long()
    swapped = torch.zeros((), device=images.device)
    if cfg.swaps:
        alpha = batch["alpha"].unsqueeze(1).float().div_(255.0)
        bank.add(batch["background"].permute(0, 3, 1, 2), labels)
        images, mask, _ = swap_batch(
            images,
            alpha,
            labels,
            bank,
            swap_config(cfg, images.shape[-1]),
            cfg.swap_prob,
            generator,
            cfg.feather_sigma,
        )
        swapped = mask.sum()
    elif cfg.method == "erm_aug":
        images = heavy_augment(images)
    crop = sample_crop_params(
        images.shape[0], images.shape[-2], images.shape[-1], cfg.crop_scale, cfg.hflip, generator
    )
    inputs = apply_crop(images, crop, size)
    mix = None
    if cfg.method == "erm_aug":
        inputs, mix = cutmix(inputs, generator)
    logits = model(inputs)
    loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    if mix is not None and mix.lam < 1.0:
        other = labels[mix.perm.to(labels.device)]
        loss = mix.lam * loss + (1.0 - mix.lam) * F.cross_entropy(
            logits, other, label_smoothing=cfg.label_smoothing
        )
    if optimizer is not None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    correct = (logits.detach().argmax(dim=1) == labels).sum()
    return StepOutput(loss.detach(), correct, swapped, inputs.detach())


# --- checkpoint state -------------------------------------------------------------------------


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


# --- the worker function ----------------------------------------------------------------------


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """The function :class:`ray.train.torch.TorchTrainer` runs on every worker.

    Args:
        config: ``{"cfg": TrainConfig (resolved), "info": DatasetInfo, "s3": S3Options,
            "tags": {str: str}, "fault": FaultInjection | None}``.
    """
    import ray.train
    import ray.train.torch

    cfg: TrainConfig = config["cfg"]
    info: DatasetInfo = config["info"]
    s3: S3Options | None = config.get("s3")
    fault: FaultInjection | None = config.get("fault")
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    size = int(cfg.image_size)
    run_name = cfg.resolved_run_name
    run_dir = join(cfg.out, run_name)

    torch.manual_seed(cfg.seed)
    model = create_classifier(
        cfg.backbone,
        num_classes=int(cfg.num_classes),
        weights=cfg.weights,
        freeze_backbone=cfg.freeze_backbone,
        dropout=cfg.dropout,
        s3=s3,
    )
    state = _load_state()
    if state is not None:
        model.load_state_dict(state["model"])
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
    start_epoch, history, best, attempts = 0, [], None, []
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        history, best, attempts = state["history"], state["best"], state["attempts"]
    attempts = [*attempts, {"start_epoch": start_epoch, "time": time.time()}]

    tracker = None
    if rank == 0:
        from abs_ray.train.tracking import RunLogger, resolve_artifact_location, run_key

        tracker = RunLogger(
            tracking_uri=cfg.mlflow_tracking_uri,
            experiment=cfg.mlflow_experiment,
            artifact_location=resolve_artifact_location(cfg.mlflow_artifact_location, cfg.out),
            key=run_key(cfg.out, run_name),
            run_name=run_name,
            params={
                **flatten_dict(cfg.to_dict()),
                **{f"data.{s}_rows": str(n) for s, n in info.counts.items()},
                "data.image_size": str(info.image_size),
            },
            tags=config.get("tags", {}),
        )
        _backfill(tracker, history)

    select_metric = (
        "overall_accuracy" if cfg.select_by == "val_accuracy" else "worst_group_accuracy"
    )
    bank = BackgroundBank(cfg.bank_size) if cfg.swaps else None
    train_shard = ray.train.get_dataset_shard("train")
    per_worker = cfg.per_worker_batch_size
    shuffle = max(cfg.shuffle_buffer, per_worker) if cfg.shuffle_buffer else None
    grid_logged = False
    eval_shard = ray.train.get_dataset_shard(eval_dataset_name(rank))
    eval_cache: list[dict[str, torch.Tensor]] | None = None

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        generator = torch.Generator().manual_seed(_seed(cfg, epoch, rank))
        # loss * n, correct, n, swapped: summed on the device (no sync per step)
        sums = torch.zeros(4, dtype=torch.float64, device=device)
        for batch in train_shard.iter_torch_batches(
            batch_size=per_worker,
            drop_last=True,
            local_shuffle_buffer_size=shuffle,
            local_shuffle_seed=_seed(cfg, epoch, rank) if shuffle else None,
        ):
            out = train_step(model, optimizer, batch, cfg, bank, generator, size)
            n = out.inputs.shape[0]
            step_sums = (out.loss * n, out.correct, torch.tensor(n), out.swapped)
            sums += torch.stack([v.to(sums) for v in step_sums])
            if tracker is not None and not grid_logged and cfg.sample_grid:
                originals = apply_crop(
                    to_float(batch["image"]), CropParams.full(n, *batch["image"].shape[1:3]), size
                )
                tracker.log_image(
                    sample_grid([originals, out.inputs], cfg.sample_grid).numpy(),
                    "train_samples.png",
                )
                grid_logged = True
        loss_sum, correct, n_train, n_swapped = _all_reduce(sums)
        train_seconds = time.perf_counter() - t0
        if scheduler is not None:
            scheduler.step()

        if eval_cache is None:  # decoded once, kept on the CPU for the following epochs
            eval_cache = list(
                eval_shard.iter_torch_batches(batch_size=cfg.eval_batch_size, device="cpu")
            )
        results = gather(predict(_unwrap(model), eval_cache, device))
        evals = {}
        for split, code in SPLIT_CODES.items():
            sel = results["split_code"] == code
            if info.counts.get(split):
                evals[split] = split_metrics(
                    results["pred"][sel],
                    results["label"][sel],
                    results["group"][sel],
                    float(results["loss"][sel].sum()),
                )
        entry = {
            "epoch": epoch,
            "train": {
                "loss": loss_sum / n_train if n_train else math.nan,
                "accuracy": correct / n_train if n_train else math.nan,
                "samples": int(n_train),
                "swapped_fraction": n_swapped / n_train if n_train else 0.0,
                "seconds": train_seconds,
                "samples_per_s": n_train / train_seconds if train_seconds > 0 else math.nan,
                "lr": optimizer.param_groups[0]["lr"],
            },
            **{s: _json_metrics(m) for s, m in evals.items()},
            "seconds": time.perf_counter() - t0,
        }
        history = [*history, entry]
        score = evals["val"][select_metric]
        # Ties go to the later epoch: as good on val, and trained longer.
        if best is None or (math.isfinite(score) and score >= best["score"]):
            best = {
                "epoch": epoch,
                "score": score,
                "model": _cpu_state(model) if rank == 0 else None,
                "val": entry.get("val"),
                "test": entry.get("test"),
            }
        metrics = _epoch_metrics(entry)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                torch.save(
                    {
                        "format": STATE_FORMAT,
                        "epoch": epoch,
                        "model": _cpu_state(model),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None,
                        "best": best,
                        "history": history,
                        "attempts": attempts,
                        "config": cfg.to_dict(),
                    },
                    os.path.join(folder, CHECKPOINT_FILE),
                )
                checkpoint = ray.train.Checkpoint.from_directory(folder)
            ray.train.report({**metrics, "epoch": epoch}, checkpoint=checkpoint)
        if tracker is not None:
            tracker.log_metrics(metrics, step=epoch)
        logger.info(
            "epoch %d: train loss %.4f acc %.3f | val acc %.3f wga %.3f | %.1f s",
            epoch,
            entry["train"]["loss"],
            entry["train"]["accuracy"],
            evals["val"]["overall_accuracy"],
            evals["val"]["worst_group_accuracy"],
            entry["seconds"],
        )
        if (
            fault is not None
            and (rank, epoch) == (fault.rank, fault.after_epoch)
            and not os.path.exists(fault.marker)
        ):
            # Wait until the controller has committed the checkpoint just reported: a worker
            # that dies within its poll interval (2 s) can take the last report with it.
            ray.train.get_all_reported_checkpoints(
                consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=120
            )
            with open(fault.marker, "w") as f:
                f.write(f"killed rank {rank} after epoch {epoch}\n")
            logger.warning("fault injection: rank %d exits after epoch %d", rank, epoch)
            os._exit(1)

    if tracker is not None:
        _finish(tracker, cfg, info, model, history, best, attempts, run_dir, s3, config)


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
    for split in ("val", "test"):
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
    tracker: Any,
    cfg: TrainConfig,
    info: DatasetInfo,
    model: torch.nn.Module,
    history: list[dict[str, Any]],
    best: dict[str, Any] | None,
    attempts: list[dict[str, Any]],
    run_dir: str,
    s3: S3Options | None,
    config: dict[str, Any],
) -> None:
    """Rank 0, after the last epoch: log the selected model, charts and ``report.json``."""
    from abs_ray.train.tracking import group_accuracy_figure

    selected = copy.deepcopy(_unwrap(model)).cpu().eval()
    if best is not None and best.get("model") is not None:
        selected.load_state_dict(best["model"])
    model_uri = tracker.log_model(selected)
    last = history[-1] if history else {}
    report = {
        "run_name": cfg.resolved_run_name,
        "method": cfg.method,
        "mlflow": {
            "tracking_uri": cfg.mlflow_tracking_uri,
            "experiment_id": tracker.experiment_id,
            "run_id": tracker.run_id,
            "model_uri": model_uri,
        },
        "epochs_completed": len(history),
        "select_by": cfg.select_by,
        "best": {k: v for k, v in (best or {}).items() if k != "model"},
        "final": {k: last.get(k) for k in ("epoch", "train", "val", "test")},
        "resumed_from_epochs": [a["start_epoch"] for a in attempts if a["start_epoch"] > 0],
        "attempts": len(attempts),
        "history": history,
        "data": info.to_dict(),
        "tags": config.get("tags", {}),
        "config": cfg.to_dict(),
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
