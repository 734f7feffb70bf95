"""Evaluation: predictions of a split on every worker, gathered, scored per group.

Scores use :func:`abs_ray.ops.group_accuracy`: overall accuracy, accuracy per group and the
worst-group accuracy (WGA) over the groups present. Rows without a group label (``-1``) count
in the overall accuracy only.

Example:
    >>> m = split_metrics(torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]),
    ...                   torch.tensor([0, 3, 1, 0]), loss_sum=2.0)
    >>> m["overall_accuracy"], m["worst_group_accuracy"], m["per_group"]
    (0.75, 0.0, {0: 1.0, 1: 0.0, 3: 1.0})
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from abs_ray.ops import group_accuracy, to_float_chw

__all__ = ["flat_metrics", "gather", "predict", "split_metrics"]


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    device: torch.device,
    inputs: Callable[[dict[str, torch.Tensor], torch.device], torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``model`` (in eval mode) over decoded batches.

    Args:
        model: classifier taking ``(B, 3, H, W)`` float in ``[0, 1]``.
        batches: dicts with ``image`` ``(B, H, W, 3)`` uint8 and ``(B,)`` ``label``,
            ``group`` and (optionally) ``split_code``; any device.
        device: where to run.
        inputs: ``(batch, device) -> (B, 3, H, W)`` float model input in ``[0, 1]`` on
            ``device`` (e.g. :func:`~abs_ray.train.swap_val.swap_val_inputs`); default the
            batch's ``image``.

    Returns:
        ``{"pred", "label", "group", "split_code", "loss"}``: ``(N,)`` tensors on CPU (long,
        and float32 per-sample unsmoothed cross-entropy for ``loss``).
    """
    was_training = model.training
    model.eval()
    out: dict[str, list[torch.Tensor]] = {k: [] for k in _KEYS}
    for batch in batches:
        if batch["label"].numel() == 0:
            continue
        images = inputs(batch, device) if inputs else to_float_chw(batch["image"], device)
        y = batch["label"].to(device).long()
        logits = model(images)
        out["loss"].append(F.cross_entropy(logits.float(), y, reduction="none").cpu())
        out["pred"].append(logits.argmax(dim=1).cpu())
        out["label"].append(batch["label"].cpu().long())
        out["group"].append(batch["group"].cpu().long())
        code = batch.get("split_code")
        out["split_code"].append(
            code.cpu().long() if code is not None else torch.zeros_like(out["label"][-1])
        )
    model.train(was_training)
    return {
        k: torch.cat(v) if v else torch.zeros(0, dtype=torch.float32 if k == "loss" else torch.long)
        for k, v in out.items()
    }


_KEYS = ("pred", "label", "group", "split_code", "loss")


def gather(results: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Concatenate every worker's :func:`predict` output (identity without a process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return results
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, {k: v.tolist() for k, v in results.items()})
    return {
        k: torch.tensor(
            [x for part in parts for x in part[k]],
            dtype=torch.float32 if k == "loss" else torch.long,
        )
        for k in _KEYS
    }


def split_metrics(
    preds: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor, loss_sum: float = 0.0
) -> dict[str, Any]:
    """Accuracy overall and per group of one split.

    Args:
        preds: ``(N,)`` predicted classes.
        labels: ``(N,)`` true classes.
        groups: ``(N,)`` group ids, ``-1`` for none.
        loss_sum: summed cross-entropy of the ``N`` samples.

    Returns:
        ``{"n", "loss", "overall_accuracy", "worst_group_accuracy", "mean_group_accuracy",
        "per_group": {g: acc}, "counts": {g: n}}``; group entries are ``nan``/empty when no row
        has a group.
    """
    n = int(labels.numel())
    if n == 0:
        nan = math.nan
        return {
            "n": 0,
            "loss": nan,
            "overall_accuracy": nan,
            "worst_group_accuracy": nan,
            "mean_group_accuracy": nan,
            "per_group": {},
            "counts": {},
        }
    overall = float((preds == labels).double().mean())
    known = groups >= 0
    if bool(known.any()):
        m = group_accuracy(preds[known], labels[known], groups[known])
        per_group, counts = m.per_group, m.counts
        worst, mean = m.worst_group_accuracy, m.mean_group_accuracy
    else:
        per_group, counts, worst, mean = {}, {}, math.nan, math.nan
    return {
        "n": n,
        "loss": loss_sum / n,
        "overall_accuracy": overall,
        "worst_group_accuracy": worst,
        "mean_group_accuracy": mean,
        "per_group": per_group,
        "counts": counts,
    }


def flat_metrics(metrics: dict[str, Any], prefix: str) -> dict[str, float]:
    """``split_metrics`` as flat MLflow metrics: ``<prefix>/loss``, ``<prefix>/accuracy``,
    ``<prefix>/worst_group_accuracy``, ``<prefix>/group_<g>_accuracy``, ... (nan dropped).

    >>> flat_metrics({"loss": 0.5, "overall_accuracy": 1.0, "worst_group_accuracy": 1.0,
    ...               "mean_group_accuracy": 1.0, "per_group": {2: 1.0}}, "val")
    ... # doctest: +NORMALIZE_WHITESPACE
    {'val/loss': 0.5, 'val/accuracy': 1.0, 'val/worst_group_accuracy': 1.0,
     'val/mean_group_accuracy': 1.0, 'val/group_2_accuracy': 1.0}
    """
    out = {
        f"{prefix}/loss": metrics["loss"],
        f"{prefix}/accuracy": metrics["overall_accuracy"],
        f"{prefix}/worst_group_accuracy": metrics["worst_group_accuracy"],
        f"{prefix}/mean_group_accuracy": metrics["mean_group_accuracy"],
    }
    for g, acc in sorted(metrics["per_group"].items()):
        out[f"{prefix}/group_{g}_accuracy"] = acc
    return {k: float(v) for k, v in out.items() if v is not None and not math.isnan(float(v))}
