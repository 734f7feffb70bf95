"""A whole detector training run: select and load labelled images, fit, evaluate, write.

Outputs of :func:`train_detector` under ``cfg.out`` (local or ``s3://``): ``detector.pt``
(:func:`~abs_ray.models.detector.save_detector`, with config and label source),
``metrics.json`` (balanced patch accuracy on val and held-out images, tight-mask IoU where
true masks exist, timings, per-epoch history), ``config.json`` and ``mask_sheet.png``.

Quality floor: a detector whose val (held-out labelled patches) balanced patch accuracy is
below ``min_balanced_accuracy`` raises :class:`~abs_ray.errors.WeakDetectorError` before
anything is written, unless ``allow_weak_detector`` is set: a detector that predicts
"background" everywhere must not go on to disentangle a data set.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import pandas as pd
import torch

from abs_ray.errors import ConfigError, DatasetError, WeakDetectorError
from abs_ray.io import S3Options, encode_png, join, read_text, write_bytes, write_text
from abs_ray.io.captions import add_legend
from abs_ray.models.detector import Detector, create_detector, save_detector
from abs_ray.models.detector_train.config import DetectorTrainConfig
from abs_ray.models.detector_train.evaluate import (
    describe_metrics,
    evaluate_detector,
    predict_background_prob,
)
from abs_ray.models.detector_train.fit import FitResult, fit_detector
from abs_ray.models.detector_train.labels import (
    LabelledImages,
    csv_labels_for_manifest,
    load_labelled_images,
    split_train_val,
)
from abs_ray.models.detector_train.sheet import SHEET_LEGEND, mask_sheet

logger = logging.getLogger(__name__)

__all__ = ["train_detector"]


@dataclasses.dataclass(frozen=True)
class _Data:
    """The run's images: train and val (an 80/20 split of the labelled ones) and held-out."""

    train: LabelledImages
    val: LabelledImages
    held: LabelledImages | None
    label_source: dict[str, Any]


def _select(manifest: pd.DataFrame, split: str | None, ids: set[str] | None) -> pd.DataFrame:
    df = manifest
    if split is not None:
        df = df[df["split"].astype(str) == split]
    if ids is not None:
        df = df[df["id"].astype(str).isin(ids)]
    else:
        has_mask = df["mask_uri"].notna() if "mask_uri" in df else pd.Series(False, df.index)
        df = df[has_mask]
    return df


def _sample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    df = df.sort_values("id", kind="stable")
    if n is not None and len(df) > n:
        df = df.sample(n=n, random_state=seed).sort_values("id", kind="stable")
    return df.reset_index(drop=True)


def _check_inputs(cfg: object, manifest: pd.DataFrame) -> None:
    if not isinstance(cfg, DetectorTrainConfig):
        raise ConfigError(f"cfg must be a DetectorTrainConfig, got {type(cfg).__name__}")
    for col in ("id", "image_uri", "split"):
        if col not in manifest.columns:
            raise DatasetError(
                f"manifest has no {col!r} column (columns: {list(manifest.columns)})"
            )


def _labelled_rows(
    cfg: DetectorTrainConfig, manifest: pd.DataFrame, s3: S3Options | None
) -> tuple[pd.DataFrame, dict | None, dict[str, Any]]:
    """``(rows to load, CSV labels or None, label source record)`` of the labelled images."""
    csv_labels = None
    if cfg.labels is not None:
        csv_labels = csv_labels_for_manifest(read_text(cfg.labels, s3), manifest, grid=cfg.grid)
        label_source: dict[str, Any] = {"kind": "csv", "uri": cfg.labels}
    else:
        label_source = {"kind": "masks", "coverage_threshold": cfg.coverage_threshold}
    label_source.update(dataset=cfg.data, split=cfg.label_split, grid=cfg.grid)
    pool = _select(manifest, cfg.label_split, None if csv_labels is None else set(csv_labels))
    labelled = _sample(pool, cfg.num_labelled, cfg.seed)
    if len(labelled) < 2:
        raise DatasetError(
            f"need at least 2 labelled images in split {cfg.label_split!r}, found {len(labelled)}"
        )
    if cfg.num_labelled is not None and len(labelled) < cfg.num_labelled:
        logger.warning(
            "only %d labelled images available (asked %d)", len(labelled), cfg.num_labelled
        )
    return labelled, csv_labels, label_source


def _load_data(cfg: DetectorTrainConfig, manifest: pd.DataFrame, s3: S3Options | None) -> _Data:
    """Draw, read and split the labelled images; read up to ``eval_max`` held-out ones."""
    labelled, csv_labels, label_source = _labelled_rows(cfg, manifest, s3)
    load = dict(
        image_size=cfg.image_size,
        grid=cfg.grid,
        coverage_threshold=cfg.coverage_threshold,
        s3=s3,
        num_workers=cfg.num_workers,
    )
    data = load_labelled_images(labelled, labels=csv_labels, **load)
    train_idx, val_idx = split_train_val(len(data), cfg.val_fraction, cfg.seed)
    train, val = data.subset(train_idx), data.subset(val_idx)
    held = None
    if cfg.eval_split is not None:
        eval_df = _sample(_select(manifest, cfg.eval_split, None), cfg.eval_max, cfg.seed)
        if len(eval_df):
            held = load_labelled_images(eval_df, **load)
        else:
            logger.warning("no masked images in split %r to evaluate on", cfg.eval_split)
    label_source.update(num_images=len(data), num_train=len(train), num_val=len(val))
    return _Data(train, val, held, label_source)


def _build_model(cfg: DetectorTrainConfig, device: torch.device, s3: S3Options | None):
    torch.manual_seed(cfg.seed)
    freeze, blocks = cfg.freezing
    return create_detector(
        cfg.backbone,
        head=cfg.head,
        grid=cfg.grid,
        image_size=cfg.image_size,
        weights=cfg.weights,
        freeze_backbone=freeze,
        trainable_blocks=blocks,
        dropout=cfg.dropout,
        tight=cfg.tight,
        loose=cfg.loose,
        device=device,
        s3=s3,
    )


def _evaluate(
    model: Detector, data: _Data, fit: FitResult, cfg: DetectorTrainConfig, device: torch.device
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "val": evaluate_detector(model, data.val, device, cfg.eval_batch_size),
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "stopped_by": fit.stopped_by,
    }
    if data.held is not None:
        metrics["held_out"] = evaluate_detector(model, data.held, device, cfg.eval_batch_size)
        metrics["held_out"]["split"] = cfg.eval_split
    return metrics


def check_quality(metrics: dict[str, Any], cfg: DetectorTrainConfig) -> None:
    """Apply the quality floor to ``metrics["val"]`` (see the module docstring).

    Raises:
        WeakDetectorError: below ``cfg.min_balanced_accuracy`` without
            ``cfg.allow_weak_detector``.
    """
    bacc = float(metrics["val"]["balanced_patch_accuracy"])
    if bacc >= cfg.min_balanced_accuracy:
        return
    what = (
        f"the trained detector's balanced patch accuracy on its held-out labelled patches is "
        f"{bacc:.3f}, below the floor min_balanced_accuracy={cfg.min_balanced_accuracy:g} "
        f"(0.5 = chance; head {cfg.head!r}, {cfg.backbone}, best epoch "
        f"{metrics['best_epoch']} of {metrics['epochs_run']}, stopped by {metrics['stopped_by']})"
    )
    if cfg.allow_weak_detector:
        logger.warning("%s; going on because allow_weak_detector is set", what)
        return
    raise WeakDetectorError(
        f"{what}. Its masks would be near useless. Label more images, train longer "
        "(epochs; drop max_train_seconds), or set allow_weak_detector=True to go on anyway"
    )


def _write_outputs(
    model: Detector,
    data: _Data,
    metrics: dict[str, Any],
    cfg: DetectorTrainConfig,
    device: torch.device,
    s3: S3Options | None,
) -> None:
    """``detector.pt``, ``config.json``, ``mask_sheet.png`` (adds ``mask_sheet_ids`` to
    ``metrics``) and, last, ``metrics.json``."""
    meta = {"label_source": data.label_source, "train_config": cfg.to_dict()}
    meta["metrics"] = {k: v for k, v in metrics.items() if k in ("val", "held_out")}
    save_detector(model, join(cfg.out, "detector.pt"), meta=meta, s3=s3)
    write_text(join(cfg.out, "config.json"), json.dumps(cfg.to_dict(), indent=2), s3)
    if cfg.sheet_samples and (data.held is not None or len(data.val)):
        shown = data.held if data.held is not None else data.val
        shown = shown.subset(list(range(min(cfg.sheet_samples, len(shown)))))
        prob = predict_background_prob(model, shown.images, device, cfg.eval_batch_size)
        sheet = add_legend(mask_sheet(shown.images, prob, shown.masks, cfg.tight), SHEET_LEGEND)
        write_bytes(join(cfg.out, "mask_sheet.png"), encode_png(sheet), s3)
        metrics["mask_sheet_ids"] = list(shown.ids)
    write_text(join(cfg.out, "metrics.json"), json.dumps(metrics, indent=2), s3)


def train_detector(
    cfg: DetectorTrainConfig,
    manifest: pd.DataFrame,
    s3: S3Options | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Train a detector from patch labels and write its checkpoint, metrics and mask sheet.

    Steps: draw ``num_labelled`` images of ``label_split`` that have labels (a CSV record or a
    mask), split them 80/20 (``val_fraction``), build the detector, :func:`fit_detector`,
    evaluate on val and on up to ``eval_max`` masked images of ``eval_split``, write
    ``detector.pt``, ``metrics.json``, ``config.json`` and ``mask_sheet.png`` under
    ``cfg.out``.

    Args:
        cfg: the run's :class:`DetectorTrainConfig`.
        manifest: the data set manifest (``abs_ray.data.load_dataset``).
        s3: S3 settings; default from the environment.
        progress: a progress sink for the epochs (:class:`abs_ray.console.ProgressSink`).

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        DatasetError: too few labelled images, labels that match no image, unreadable rows.
        WeakDetectorError: below the quality floor (nothing written).
        ConfigError: inconsistent settings.
        WeightsUnavailableError: pretrained weights cannot be obtained.
        StorageError: reading or writing fails.
    """
    t_start = time.perf_counter()
    _check_inputs(cfg, manifest)
    data = _load_data(cfg, manifest, s3)
    t_loaded = time.perf_counter()
    logger.info(
        "labelled images: %d train, %d val; held-out: %d (%s); loaded in %.1f s",
        len(data.train),
        len(data.val),
        0 if data.held is None else len(data.held),
        cfg.eval_split,
        t_loaded - t_start,
    )
    device = torch.device(cfg.device)
    model = _build_model(cfg, device, s3)
    fit = fit_detector(model, data.train, data.val, cfg, progress=progress)
    t_fit = time.perf_counter()
    metrics = _evaluate(model, data, fit, cfg, device)
    check_quality(metrics, cfg)
    t_eval = time.perf_counter()
    metrics["seconds"] = {
        "load": t_loaded - t_start,
        "features": fit.feature_seconds,
        "fit": t_fit - t_loaded,
        "evaluate": t_eval - t_fit,
        "total": t_eval - t_start,
    }
    metrics.update(
        device=str(device),
        torch_threads=torch.get_num_threads(),
        label_source=data.label_source,
        detector={
            "name": cfg.backbone,
            "head": cfg.head,
            "grid": cfg.grid,
            "image_size": cfg.image_size,
        },
        history=fit.history,
    )
    _write_outputs(model, data, metrics, cfg, device, s3)
    logger.info(
        "detector trained in %.1f s: %s",
        metrics["seconds"]["total"],
        "; ".join(
            f"{k} {describe_metrics(metrics[k])}" for k in ("val", "held_out") if k in metrics
        ),
    )
    return metrics
