"""The few lines a person reads at the end of a pipeline run (``manifest.json`` has it all)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["rates_text", "summary_text", "train_text"]


def _num(value: Any, digits: int = 3) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{value:.{digits}g}"


def _accuracy(value: Any) -> str:
    return "n/a" if not isinstance(value, (int, float)) else f"{value:.3f}"


def rates_text(rates: Mapping[str, Any]) -> str:
    """End-to-end and per-worker images/s (``summary["images_per_s"]``) in words.

    >>> rates_text({"disentangle": 2.5, "load": 168.47, "detect": 9.0})
    '2.5 images/s end to end; per worker: load 168, detect 9'
    >>> rates_text({"disentangle": None})
    'no images processed in this run'
    """
    rates = dict(rates)
    total = rates.pop("disentangle", None)
    if total is None:
        return "no images processed in this run"
    stages = ", ".join(f"{k} {_num(v)}" for k, v in rates.items() if v is not None)
    return f"{_num(total)} images/s end to end" + (f"; per worker: {stages}" if stages else "")


def train_text(train: Mapping[str, Any]) -> str:
    """The train stage's result (``summary["train"]``) in one line; accuracies with three
    decimals, so a perfect score reads ``1.000`` like any other.

    >>> train_text({"method": "erm", "best": {"epoch": 4, "test": {"overall_accuracy": 0.98754,
    ...     "worst_group_accuracy": 1.0}}})
    'train (erm): best epoch 4, test accuracy 0.988, worst-group accuracy 1.000'
    >>> train_text({"method": "abs", "state": "failed", "error": "TrainingError: ..."})
    'train (abs): failed: TrainingError: ...'
    """
    if train.get("state") == "failed":
        return f"train ({train.get('method')}): failed: {train.get('error')}"
    best = train.get("best") or {}
    test = best.get("test") or {}
    return (
        f"train ({train.get('method')}): best epoch {best.get('epoch')}, test accuracy "
        f"{_accuracy(test.get('overall_accuracy'))}, worst-group accuracy "
        f"{_accuracy(test.get('worst_group_accuracy'))}"
    )


def summary_text(summary: Mapping[str, Any]) -> str:
    """Counts (by error type), rates, outputs, the training's worst-group accuracy and the
    MLflow run, one topic per line.

    >>> print(summary_text({"counts": {"input": 4, "ok": 3, "errors": 1},
    ...     "errors_by_type": {"DecodeError": 1}, "images_per_s": {"disentangle": 2.5,
    ...     "detect": 9.0}, "outputs": {"data": "out/data"},
    ...     "train": {"method": "abs", "best": {"epoch": 2, "test": {"overall_accuracy": 0.9,
    ...     "worst_group_accuracy": 0.75}}}}))
    summary: 4 images in, 3 ok, 1 errors (DecodeError: 1)
    rates: 2.5 images/s end to end; per worker: detect 9
    train (abs): best epoch 2, test accuracy 0.900, worst-group accuracy 0.750
    outputs: data out/data
    """
    lines = []
    counts = summary.get("counts") or {}
    if counts:
        by_type = summary.get("errors_by_type") or {}
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(by_type.items())) or "none"
        lines.append(
            f"summary: {counts.get('input', 0)} images in, {counts.get('ok', 0)} ok, "
            f"{counts.get('errors', 0)} errors ({kinds})"
        )
    rates = summary.get("images_per_s") or {}
    if rates:
        lines.append(f"rates: {rates_text(rates)}")
    train = summary.get("train") or {}
    if train:
        lines.append(train_text(train))
    outputs = {**(summary.get("outputs") or {})}
    if train.get("report"):
        outputs["train_report"] = train["report"]
    if outputs:
        lines.append("outputs: " + ", ".join(f"{k} {v}" for k, v in outputs.items()))
    mlflow = summary.get("mlflow") or {}
    if mlflow.get("run_id"):
        lines.append(f"mlflow: pipeline run {mlflow['run_id']} in {mlflow.get('tracking_uri')}")
    return "\n".join(lines)
