"""The detector's fit loop: BCE on patch labels, AdamW + one-cycle (default) or SGD +
plateau (the paper's), early stopping on validation balanced patch accuracy, best epoch kept.
Bounded by epochs: the same seed gives the same weights whatever the machine's load
(``max_train_seconds`` is an explicit opt-in).

Frozen backbone (``freeze_backbone=True``, for CPU runs): the frozen part never changes, so
its output for an augmented image is a pure function of the image and the augmentation draw.
With ``feature_cache_views = V > 0`` every training image is augmented ``V`` times up front,
the frozen part runs once per view, and each epoch then trains on one random cached view per
image: ``N * V`` backbone passes in all instead of ``N`` per epoch, at the price of drawing
augmentations from a fixed pool of ``V`` per image. Validation images are never augmented, so
their frozen outputs are computed once. ``feature_cache_views = 0`` runs the frozen part
(without autograd) on fresh augmentations every step. ``trainable_blocks = k`` leaves the
backbone's last ``k`` blocks trainable: the cache then holds the (small, e.g. 192 x 7 x 7 for
Lite0 with k = 1) activation map before those blocks, and training runs the blocks and head.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F

from abs_ray.errors import ConfigError
from abs_ray.models.detector import Detector
from abs_ray.models.detector_train.augment import (
    AugmentConfig,
    apply_augment,
    sample_augment_params,
)
from abs_ray.models.detector_train.config import DetectorTrainConfig
from abs_ray.models.detector_train.evaluate import to_float
from abs_ray.models.detector_train.labels import LabelledImages
from abs_ray.ops.metrics import balanced_accuracy

logger = logging.getLogger(__name__)
#: The progress stage :func:`fit_detector` reports its epochs under.
PROGRESS_STAGE = "detector epochs"

__all__ = ["FitResult", "fit_detector"]


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit_detector` did.

    Attributes:
        best_epoch: 1-based epoch whose weights were kept.
        best_val_balanced_accuracy: its val balanced patch accuracy in ``[0, 1]``.
        epochs_run: epochs trained before stopping.
        history: one dict per epoch: ``epoch``, ``loss``, ``val_loss``,
            ``val_balanced_accuracy``, ``lr``, ``seconds``.
        feature_seconds: time spent precomputing cached features (0 without a cache).
        stopped_by: ``"epochs"``, ``"early_stop"`` or ``"time_budget"``.
    """

    best_epoch: int
    best_val_balanced_accuracy: float
    epochs_run: int
    history: list[dict[str, float]]
    feature_seconds: float = 0.0
    stopped_by: str = "epochs"


def _loss(logits: torch.Tensor, fg: torch.Tensor, eps: float, pos_weight: torch.Tensor | None):
    """BCE on target ``1 - fg`` (1 = background) with label smoothing ``eps``."""
    target = (1.0 - fg) * (1.0 - eps) + 0.5 * eps
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


# --- the steps --------------------------------------------------------------------------------


def _check_data(
    model: Detector, train: LabelledImages, val: LabelledImages, cfg: DetectorTrainConfig
) -> None:
    if model.config.head != cfg.head:
        raise ConfigError(
            f"the detector has the {model.config.head!r} head, the recipe is for {cfg.head!r}"
        )
    g, s = model.config.grid, model.config.image_size
    for name, part in (("train", train), ("val", val)):
        if len(part) == 0:
            raise ConfigError(f"{name} set is empty")
        if tuple(part.labels.shape[-2:]) != (g, g) or tuple(part.images.shape[-2:]) != (s, s):
            raise ConfigError(
                f"{name} data is {tuple(part.images.shape[-2:])} px with "
                f"{tuple(part.labels.shape[-2:])} grids, the detector takes {s} px and G={g}"
            )


def _optimiser(model: Detector, cfg: DetectorTrainConfig, steps: int) -> tuple[Any, Any]:
    """The optimiser (head at ``lr``, trainable backbone parameters at ``backbone_lr``) and
    its schedule: OneCycleLR over ``steps`` batches (stepped per batch) or ReduceLROnPlateau
    on val balanced accuracy (stepped per epoch)."""
    weight_decay, backbone_lr = cfg.optimizer_settings
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    tail = [p for p in model.backbone.parameters() if p.requires_grad]
    if tail:
        groups.append({"params": tail, "lr": backbone_lr})
    if cfg.optimizer == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=weight_decay)
    if cfg.schedule == "onecycle":
        peaks = [g["lr"] for g in groups]
        return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peaks, total_steps=steps)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    return opt, sched


def _pos_weight(
    train: LabelledImages, cfg: DetectorTrainConfig, device: torch.device
) -> torch.Tensor | None:
    """``fg / bg`` patch ratio of the training labels when ``balance_classes``, else None."""
    if not cfg.balance_classes:
        return None
    bg = float((train.labels < 0.5).float().mean())
    pos_weight = torch.tensor(max(1.0 - bg, 1e-3) / max(bg, 1e-3), device=device)
    logger.info("balanced loss: background fraction %.3f, pos_weight %.3f", bg, pos_weight)
    return pos_weight


@torch.no_grad()
def _frozen_features(
    model: Detector,
    data: LabelledImages,
    device: torch.device,
    batch_size: int,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-prefix outputs of every image (optionally augmented) and the matching labels."""
    feats, labels = [], []
    for start in range(0, len(data), batch_size):
        x = to_float(data.images[start : start + batch_size], device)
        y = data.labels[start : start + batch_size].to(device)
        if augment is not None:
            params = sample_augment_params(x.shape[0], augment, generator)
            x, y = apply_augment(x, y, params, augment.shift_fill)
        feats.append(model.frozen_features(x))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


@dataclasses.dataclass(frozen=True)
class _FeatureCache:
    """Frozen-prefix outputs computed before the epochs (all None without a frozen backbone).

    Attributes:
        val: ``(N_val, ...)`` outputs of the validation images.
        train: ``(N, V, ...)`` outputs of ``V`` augmented views per training image, or None.
        train_labels: ``(N, V, G, G)`` their augmented labels, or None.
        seconds: time spent.
    """

    val: torch.Tensor | None = None
    train: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    seconds: float = 0.0


def _cache_features(
    model: Detector,
    train: LabelledImages,
    val: LabelledImages,
    cfg: DetectorTrainConfig,
    device: torch.device,
    gen: torch.Generator,
) -> _FeatureCache:
    """Run the frozen prefix once on val and, with ``feature_cache_views``, on train views."""
    if not cfg.freeze_backbone:
        return _FeatureCache()
    t0 = time.perf_counter()
    model.eval()
    val_feats, _ = _frozen_features(model, val, device, cfg.eval_batch_size)
    train_feats = train_labels = None
    if cfg.feature_cache_views > 0:
        views = [
            _frozen_features(model, train, device, cfg.eval_batch_size, cfg.augment, gen)
            for _ in range(cfg.feature_cache_views)
        ]
        train_feats = torch.stack([f for f, _ in views], dim=1)  # (N, V, ...)
        train_labels = torch.stack([y for _, y in views], dim=1)  # (N, V, G, G)
    cache = _FeatureCache(val_feats, train_feats, train_labels, time.perf_counter() - t0)
    megabytes = sum(t.numel() * t.element_size() for t in (val_feats, train_feats) if t is not None)
    logger.info(
        "frozen backbone (%d trainable blocks): cached %d val%s in %.1f s (%.0f MB)",
        cfg.trainable_blocks,
        len(val),
        f" and {len(train)} x {cfg.feature_cache_views} augmented train" if train_feats is not None else "",
        cache.seconds,
        megabytes / 2**20,
    )  # fmt: skip
    return cache


def _train_epoch(
    model: Detector,
    train: LabelledImages,
    cache: _FeatureCache,
    opt: torch.optim.Optimizer,
    cfg: DetectorTrainConfig,
    device: torch.device,
    gen: torch.Generator,
    pos_weight: torch.Tensor | None,
    batch_sched: Any = None,
) -> float:
    """One pass over the training images in a seeded order; returns the mean loss.
    ``batch_sched`` (one-cycle) is stepped after every batch."""
    model.train()
    n = len(train)
    perm = torch.randperm(n, generator=gen)
    total = 0.0
    for start in range(0, n, cfg.batch_size):
        idx = perm[start : start + cfg.batch_size]
        if cache.train is not None:
            view = torch.randint(0, cfg.feature_cache_views, (idx.shape[0],), generator=gen)
            logits = model.logits_from_frozen(cache.train[idx, view])
            fg = cache.train_labels[idx, view]
        else:
            x = to_float(train.images[idx], device)
            fg = train.labels[idx].to(device)
            params = sample_augment_params(x.shape[0], cfg.augment, gen)
            x, fg = apply_augment(x, fg, params, cfg.augment.shift_fill)
            logits = model(x)
        loss = _loss(logits, fg, cfg.label_smoothing, pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if batch_sched is not None:
            batch_sched.step()
        total += float(loss.detach()) * idx.shape[0]
    return total / n


@torch.no_grad()
def _val_pass(
    model: Detector,
    val: LabelledImages,
    val_feats: torch.Tensor | None,
    device: torch.device,
    batch_size: int,
    eps: float,
    pos_weight: torch.Tensor | None,
) -> tuple[float, float]:
    """``(val loss, val balanced patch accuracy)`` of the model in eval mode."""
    model.eval()
    logits = []
    for start in range(0, len(val), batch_size):
        if val_feats is not None:
            logits.append(model.logits_from_frozen(val_feats[start : start + batch_size]))
        else:
            logits.append(model(to_float(val.images[start : start + batch_size], device)))
    logit = torch.cat(logits)
    fg = val.labels.to(device)
    loss = float(_loss(logit, fg, eps, pos_weight))
    return loss, balanced_accuracy(logit >= 0, fg < 0.5)


class _Best:
    """The best epoch so far (by val balanced accuracy) and a copy of its weights."""

    def __init__(self) -> None:
        self.score, self.epoch = -1.0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, score: float, model: Detector) -> None:
        if score > self.score + 1e-9:
            self.score, self.epoch = score, epoch
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def restore(self, model: Detector) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def _stop_reason(epoch: int, best: _Best, cfg: DetectorTrainConfig, t_begin: float) -> str | None:
    """``"early_stop"``, ``"time_budget"`` or None (go on)."""
    if epoch - best.epoch >= cfg.early_stop_patience:
        logger.info("early stop at epoch %d (best %d)", epoch, best.epoch)
        return "early_stop"
    budget = cfg.max_train_seconds
    if budget is not None and time.perf_counter() - t_begin > budget:
        logger.info(
            "time budget of %.0f s reached at epoch %d (best %d)", budget, epoch, best.epoch
        )
        return "time_budget"
    return None


def _log_epoch(entry: dict[str, float], best: _Best, log_every: int) -> None:
    if entry["epoch"] % log_every == 0:
        logger.info(
            "epoch %d: loss %.4f val_loss %.4f val_bacc %.4f (best %.4f @ %d) lr %.3g",
            entry["epoch"],
            entry["loss"],
            entry["val_loss"],
            entry["val_balanced_accuracy"],
            best.score,
            best.epoch,
            entry["lr"],
        )


# --- the loop ---------------------------------------------------------------------------------


def fit_detector(
    model: Detector,
    train: LabelledImages,
    val: LabelledImages,
    cfg: DetectorTrainConfig,
    progress: Any = None,
) -> FitResult:
    """Train ``model`` in place on patch labels; keep the weights of the best val epoch.

    Args:
        model: a :class:`Detector` with ``G`` and ``S`` matching the data, on ``cfg.device``;
            it is frozen as ``cfg.freeze_backbone`` / ``cfg.trainable_blocks`` say.
        train: training images and labels.
        val: validation images and labels, never augmented.
        cfg: the recipe.
        progress: a progress sink (:class:`abs_ray.console.ProgressSink`): epochs are
            reported under ``detector epochs``.

    Returns:
        A :class:`FitResult`; ``model`` holds the best epoch's weights, in eval mode.

    Raises:
        ConfigError: the data's grid or image size or the recipe's head does not match the
            model, a set is empty, or the backbone cannot be partly frozen.
    """
    _check_data(model, train, val, cfg)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    model.freeze_backbone(*cfg.freezing)
    steps = cfg.epochs * -(-len(train) // cfg.batch_size)
    opt, sched = _optimiser(model, cfg, steps)
    batch_sched = sched if cfg.schedule == "onecycle" else None
    pos_weight = _pos_weight(train, cfg, device)
    t_begin = time.perf_counter()
    cache = _cache_features(model, train, val, cfg, device, gen)
    best, stopped_by, history = _Best(), "epochs", []
    if progress is not None:
        progress.set_total(PROGRESS_STAGE, cfg.epochs)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        loss = _train_epoch(model, train, cache, opt, cfg, device, gen, pos_weight, batch_sched)
        val_loss, val_bacc = _val_pass(
            model, val, cache.val, device, cfg.eval_batch_size, cfg.label_smoothing, pos_weight
        )
        if batch_sched is None:
            sched.step(val_bacc)
        entry = {"epoch": epoch, "loss": loss, "val_loss": val_loss}
        entry.update(val_balanced_accuracy=val_bacc, lr=opt.param_groups[0]["lr"])
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        best.update(epoch, val_bacc, model)
        _log_epoch(entry, best, cfg.log_every)
        if progress is not None:
            progress.add(PROGRESS_STAGE, 1)
        reason = _stop_reason(epoch, best, cfg, t_begin)
        if reason is not None:
            stopped_by = reason
            break
    if progress is not None:
        progress.finish(PROGRESS_STAGE)
    best.restore(model)
    model.eval()
    return FitResult(
        best_epoch=best.epoch,
        best_val_balanced_accuracy=best.score,
        epochs_run=len(history),
        history=history,
        feature_seconds=cache.seconds,
        stopped_by=stopped_by,
    )
