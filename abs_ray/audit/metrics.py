"""The audit's figures: accuracy per variant, per split and per class, and ``bg_gap``.

``bg_gap = acc(mixed_same) - acc(mixed_rand)`` (Xiao et al. 2020): how much accuracy a model
loses when the background stops agreeing with the foreground's class. Its 95 % confidence
interval is a paired bootstrap over the rows that have both variants: rows are resampled with
replacement, the same rows for both variants, ``n_boot`` times, from a seeded numpy
``Generator``; the interval is the percentile one. Plain numpy: no torch, no Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from abs_ray.audit.variants import VARIANTS
from abs_ray.errors import ConfigError

__all__ = ["audit_metrics", "bg_gap", "variant_accuracy"]


def _vector(name: str, value: object, n: int | None = None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1 or (n is not None and array.shape[0] != n):
        rows = f" of {n} rows" if n is not None else ""
        raise ConfigError(f"{name} must be a 1-D array{rows}, got shape {array.shape}")
    return array


def variant_accuracy(correct: np.ndarray, valid: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy of one variant over its valid rows, overall and per class.

    Args:
        correct: ``(N,)`` bool, the prediction equals the label.
        valid: ``(N,)`` bool, the row has this variant (a partner existed).
        labels: ``(N,)`` int classes.

    Returns:
        ``{"accuracy", "n", "n_invalid", "per_class": {class: {"accuracy", "n"}}}``;
        accuracy is NaN where no row is valid.

    Raises:
        ConfigError: arrays of different lengths or not 1-D.

    Example:
        >>> variant_accuracy(np.array([1, 0, 1], bool), np.array([1, 1, 0], bool),
        ...                  np.array([0, 1, 1]))["per_class"]
        {'0': {'accuracy': 1.0, 'n': 1}, '1': {'accuracy': 0.0, 'n': 1}}
    """
    correct = _vector("correct", correct).astype(bool)
    valid = _vector("valid", valid, correct.shape[0]).astype(bool)
    labels = _vector("labels", labels, correct.shape[0]).astype(np.int64)

    def acc(rows: np.ndarray) -> float:
        return float(correct[rows].mean()) if rows.any() else math.nan

    per_class = {}
    for k in np.unique(labels):
        rows = valid & (labels == k)
        per_class[str(int(k))] = {"accuracy": acc(rows), "n": int(rows.sum())}
    return {
        "accuracy": acc(valid),
        "n": int(valid.sum()),
        "n_invalid": int((~valid).sum()),
        "per_class": per_class,
    }


def bg_gap(
    correct_same: np.ndarray,
    correct_rand: np.ndarray,
    valid: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """``mixed_same - mixed_rand`` accuracy over the rows that have both, with a paired
    bootstrap percentile interval.

    Args:
        correct_same: ``(N,)`` bool, correct on ``mixed_same``.
        correct_rand: ``(N,)`` bool, correct on ``mixed_rand``.
        valid: ``(N,)`` bool, the row has both variants.
        n_boot: bootstrap resamples, ``>= 1``.
        seed: seed of the numpy ``Generator`` (same seed, same interval).
        level: interval coverage in ``(0, 1)``.

    Returns:
        ``{"gap", "ci_low", "ci_high", "level", "n", "n_boot", "seed"}`` (NaN without rows).

    Raises:
        ConfigError: bad lengths, ``n_boot < 1`` or ``level`` outside ``(0, 1)``.

    Example:
        >>> ones, zeros = np.ones(50, bool), np.zeros(50, bool)
        >>> g = bg_gap(ones, zeros, ones, n_boot=100)
        >>> g["gap"], g["ci_low"], g["ci_high"], g["n"]
        (1.0, 1.0, 1.0, 50)
    """
    same = _vector("correct_same", correct_same).astype(np.float64)
    rand = _vector("correct_rand", correct_rand, same.shape[0]).astype(np.float64)
    valid = _vector("valid", valid, same.shape[0]).astype(bool)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ConfigError(f"n_boot must be an int >= 1, got {n_boot!r}")
    if not isinstance(level, float) or not 0.0 < level < 1.0:
        raise ConfigError(f"level must be a float in (0, 1), got {level!r}")
    diff = (same - rand)[valid]
    out = {"level": level, "n": int(diff.shape[0]), "n_boot": n_boot, "seed": int(seed)}
    if diff.shape[0] == 0:
        return {"gap": math.nan, "ci_low": math.nan, "ci_high": math.nan, **out}
    rng = np.random.default_rng(seed)
    # One (n_boot, n) index matrix in chunks: the same rows for both variants (paired).
    means = np.empty(n_boot)
    chunk = max(1, 2_000_000 // diff.shape[0])
    for start in range(0, n_boot, chunk):
        rows = rng.integers(0, diff.shape[0], size=(min(chunk, n_boot - start), diff.shape[0]))
        means[start : start + rows.shape[0]] = diff[rows].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"gap": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), **out}


def audit_metrics(
    rows: Mapping[str, np.ndarray],
    splits: Sequence[str],
    num_classes: int,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Every figure of the audit from its per-row predictions.

    Args:
        rows: ``label`` and ``split`` ``(N,)``, and for each variant ``v`` of
            :data:`~abs_ray.audit.variants.VARIANTS`: ``pred_<v>`` ``(N,)`` int predicted
            class and ``valid_<v>`` ``(N,)`` bool.
        splits: the splits to report, in order (each must have rows).
        num_classes: ``K`` (the chance level is ``1 / K``).
        n_boot, seed, level: of :func:`bg_gap`.

    Returns:
        ``{split: {"n", "chance", "variants": {v: variant_accuracy}, "bg_gap": bg_gap}}``.

    Raises:
        ConfigError: a missing column, a requested split without rows.
    """
    missing = [
        c
        for c in ("label", "split", *(f"{p}_{v}" for v in VARIANTS for p in ("pred", "valid")))
        if c not in rows
    ]
    if missing:
        raise ConfigError(f"prediction rows lack column(s) {', '.join(missing)}")
    split = np.asarray(rows["split"]).astype(str)
    labels = np.asarray(rows["label"]).astype(np.int64)
    out: dict[str, Any] = {}
    for name in splits:
        keep = split == name
        if not keep.any():
            raise ConfigError(f"split {name!r} has no rows (splits: {sorted(set(split.tolist()))})")
        y = labels[keep]
        correct = {v: np.asarray(rows[f"pred_{v}"])[keep] == y for v in VARIANTS}
        valid = {v: np.asarray(rows[f"valid_{v}"])[keep].astype(bool) for v in VARIANTS}
        out[name] = {
            "n": int(keep.sum()),
            "chance": 1.0 / num_classes,
            "variants": {v: variant_accuracy(correct[v], valid[v], y) for v in VARIANTS},
            "bg_gap": bg_gap(
                correct["mixed_same"],
                correct["mixed_rand"],
                valid["mixed_same"] & valid["mixed_rand"],
                n_boot=n_boot,
                seed=seed,
                level=level,
            ),
        }
    return out
