"""Evaluation metrics: group accuracies (worst-group accuracy), balanced accuracy, mask IoU.

A *group* is a (class, background type) pair encoded as one int, e.g. Waterbirds'
``group = y * 2 + place``. Worst-group accuracy (WGA) is the minimum accuracy over the groups
that occur in the evaluated set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from abs_ray.errors import ConfigError

__all__ = ["GroupMetrics", "balanced_accuracy", "group_accuracy", "mask_iou"]


@dataclass(frozen=True)
class GroupMetrics:
    """Accuracy per group and its summaries.

    Attributes:
        per_group: group id -> accuracy in ``[0, 1]`` (``nan`` for a group with no samples,
            which only appears when ``num_groups`` was given).
        counts: group id -> number of samples.
        worst_group_accuracy: minimum of ``per_group`` over groups with ``count > 0``.
        mean_group_accuracy: mean of ``per_group`` over groups with ``count > 0``.
        overall_accuracy: fraction of all samples predicted correctly.

    Example:
        >>> m = group_accuracy([0, 1, 1], [0, 1, 0], [0, 1, 2])
        >>> m.to_flat_dict(prefix="test/")["test/worst_group_accuracy"]
        0.0
    """

    per_group: dict[int, float]
    counts: dict[int, int]
    worst_group_accuracy: float
    mean_group_accuracy: float
    overall_accuracy: float

    @property
    def worst_group(self) -> int:
        """Id of the (first) group with the lowest accuracy among groups with samples."""
        present = [g for g, c in self.counts.items() if c > 0]
        return min(present, key=lambda g: (self.per_group[g], g))

    def to_flat_dict(self, prefix: str = "") -> dict[str, float]:
        """Flat ``name -> float`` view for metric loggers (e.g. MLflow ``log_metrics``)."""
        out = {
            f"{prefix}overall_accuracy": self.overall_accuracy,
            f"{prefix}worst_group_accuracy": self.worst_group_accuracy,
            f"{prefix}mean_group_accuracy": self.mean_group_accuracy,
        }
        for group, acc in self.per_group.items():
            out[f"{prefix}group_{group}_accuracy"] = acc
            out[f"{prefix}group_{group}_count"] = float(self.counts[group])
        return out


def _as_int_vector(name: str, values: object) -> torch.Tensor:
    try:
        tensor = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"{name} must be a tensor or sequence of ints: {exc}") from exc
    if tensor.ndim == 1 and tensor.numel() == 0:  # [] parses as float32
        return tensor.long()
    if tensor.ndim != 1 or tensor.is_floating_point() or tensor.is_complex():
        raise ConfigError(
            f"{name} must be 1-D integers, got shape {tuple(tensor.shape)} dtype {tensor.dtype}"
        )
    return tensor.detach().cpu().long()


def group_accuracy(
    preds: torch.Tensor | Sequence[int],
    labels: torch.Tensor | Sequence[int],
    groups: torch.Tensor | Sequence[int],
    num_groups: int | None = None,
) -> GroupMetrics:
    """Accuracy overall and per group.

    Args:
        preds: ``(N,)`` predicted class ids, or ``(N, K)`` float scores/logits (arg-maxed).
        labels: ``(N,)`` true class ids.
        groups: ``(N,)`` group ids ``>= 0``.
        num_groups: when given, groups ``0 .. num_groups - 1`` are all reported (absent ones
            with count 0 and accuracy ``nan``) and every id must be below it; when ``None``,
            the groups present are reported.

    Returns:
        A :class:`GroupMetrics`.

    Raises:
        ConfigError: on empty input, length mismatch, non-integer ids, negative group ids, or
            group ids ``>= num_groups``.

    Example:
        >>> m = group_accuracy([1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1])
        >>> m.per_group, m.counts, m.worst_group_accuracy, m.overall_accuracy
        ({0: 0.5, 1: 1.0}, {0: 2, 1: 2}, 0.5, 0.75)
    """
    if isinstance(preds, torch.Tensor) and preds.ndim == 2 and preds.is_floating_point():
        preds = preds.argmax(dim=1)
    pred_t = _as_int_vector("preds", preds)
    label_t = _as_int_vector("labels", labels)
    group_t = _as_int_vector("groups", groups)
    n = pred_t.shape[0]
    if n == 0:
        raise ConfigError("group_accuracy needs at least one sample, got 0")
    if label_t.shape[0] != n or group_t.shape[0] != n:
        raise ConfigError(
            f"preds, labels and groups must have equal length, got {n}, {label_t.shape[0]}, "
            f"{group_t.shape[0]}"
        )
    if int(group_t.min()) < 0:
        raise ConfigError(f"group ids must be >= 0, got {int(group_t.min())}")
    if num_groups is not None:
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ConfigError(f"num_groups must be a positive int or None, got {num_groups!r}")
        if int(group_t.max()) >= num_groups:
            raise ConfigError(f"group id {int(group_t.max())} must be < num_groups {num_groups}")
    size = num_groups if num_groups is not None else int(group_t.max()) + 1
    correct = (pred_t == label_t).double()
    count_t = torch.bincount(group_t, minlength=size)
    hit_t = torch.bincount(group_t, weights=correct, minlength=size)
    ids = range(size) if num_groups is not None else sorted(set(group_t.tolist()))
    counts = {g: int(count_t[g]) for g in ids}
    per_group = {g: float(hit_t[g] / count_t[g]) if counts[g] else math.nan for g in ids}
    present = [per_group[g] for g in ids if counts[g]]
    return GroupMetrics(
        per_group=per_group,
        counts=counts,
        worst_group_accuracy=min(present),
        mean_group_accuracy=sum(present) / len(present),
        overall_accuracy=float(correct.mean()),
    )


def _as_bool(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value if value.dtype == torch.bool else value > 0.5


def balanced_accuracy(pred_bool: torch.Tensor, target_bool: torch.Tensor) -> float:
    """Mean of the true-positive and true-negative rates over all elements.

    Used as the detector's balanced patch accuracy (positives = background patches). When the
    target has only one class, the rate of that class alone is returned.

    Args:
        pred_bool: bool tensor of any shape (or float/int, read as ``> 0.5``).
        target_bool: tensor of the same shape (same reading).

    Returns:
        Balanced accuracy in ``[0, 1]`` as a Python float.

    Raises:
        ConfigError: if the inputs are not tensors, differ in shape, or are empty.

    Example:
        >>> pred = torch.tensor([True, True, False, False])
        >>> target = torch.tensor([True, False, False, False])
        >>> round(balanced_accuracy(pred, target), 4)  # (1/1 + 2/3) / 2
        0.8333
    """
    pred = _as_bool("pred_bool", pred_bool)
    target = _as_bool("target_bool", target_bool)
    if pred.shape != target.shape:
        raise ConfigError(
            f"pred_bool shape {tuple(pred.shape)} must equal target_bool {tuple(target.shape)}"
        )
    if target.numel() == 0:
        raise ConfigError("balanced_accuracy needs at least one element, got 0")
    positives = int(target.sum())
    negatives = target.numel() - positives
    rates = []
    if positives:
        rates.append(int((pred & target).sum()) / positives)
    if negatives:
        rates.append(int((~pred & ~target).sum()) / negatives)
    return sum(rates) / len(rates)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Intersection over union per sample.

    Args:
        pred: ``(B, ...)`` bool mask (or float/int, read as ``> 0.5``).
        target: ``(B, ...)`` mask of the same shape (same reading).

    Returns:
        ``(B,)`` float32 IoU in ``[0, 1]`` on the inputs' device; 1.0 where both masks are
        empty.

    Raises:
        ConfigError: if the inputs are not tensors, differ in shape, or have no batch dim.

    Example:
        >>> pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
        >>> target = torch.tensor([[0, 1, 1, 0], [0, 0, 0, 0]])
        >>> mask_iou(pred, target)
        tensor([0.3333, 1.0000])
    """
    p = _as_bool("pred", pred)
    t = _as_bool("target", target)
    if p.shape != t.shape or p.ndim < 1:
        raise ConfigError(
            f"pred shape {tuple(p.shape)} must equal target {tuple(t.shape)} with a batch dim"
        )
    p, t = p.reshape(p.shape[0], -1), t.reshape(t.shape[0], -1)
    inter = (p & t).sum(dim=1).float()
    union = (p | t).sum(dim=1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
