"""What a person reads of an audit: ``audit.md``, example grids, and the MLflow run.

- ``<out>/audit.md``: per split, a table of accuracy per variant (valid rows, rows without a
  partner) and ``bg_gap`` with its confidence interval;
- ``<out>/examples/<variant>.png``: the first ``examples`` rows of each split (by id) as
  that variant, one labelled row per split (``torchvision.utils.make_grid``,
  :func:`abs_ray.io.captions.label_rows`); invalid rows show black;
- MLflow: a run nested under the model's run (``mlflow.parentRunId``) in its experiment,
  with the figures as metrics and ``audit.json``, ``audit.md`` and the grids as artifacts.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from abs_ray.audit.config import AuditConfig
from abs_ray.audit.stage import decode_audit_rows
from abs_ray.audit.variants import MIXED_VARIANTS, VARIANTS, composite_variants
from abs_ray.io import S3Options, encode_png, join, write_bytes, write_text
from abs_ray.io.captions import label_rows
from abs_ray.ops.convert import to_float_chw, to_uint8_hwc

logger = logging.getLogger(__name__)

__all__ = ["example_grids", "log_to_mlflow", "markdown", "write_report"]


def _fmt(value: float) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.3f}"


def markdown(report: dict[str, Any]) -> str:
    """``audit.md`` of an audit report (see :func:`abs_ray.audit.run.run_audit`).

    Example:
        >>> fig = {"n": 2, "chance": 0.5, "bg_gap": {"gap": 0.5, "ci_low": 0.0,
        ...        "ci_high": 1.0, "level": 0.95, "n": 2},
        ...        "variants": {v: {"accuracy": 1.0, "n": 2, "n_invalid": 0} for v in VARIANTS}}
        >>> text = markdown({"model": {"source": "m.pt"}, "data": {"root": "d"},
        ...                  "config": {"seed": 0}, "splits": {"val": fig}})
        >>> "| mixed_rand | 1.000 | 2 | 0 |" in text, "bg_gap = 0.500" in text
        (True, True)
    """
    model, data = report["model"], report["data"]
    lines = [
        "# Background-reliance audit",
        "",
        f"- model: `{model.get('source')}`"
        + (f" (MLflow `{model['model_uri']}`)" if model.get("model_uri") else ""),
        f"- data: `{data.get('root')}` (rows sha256 `{str(data.get('rows_sha256'))[:16]}`)",
        f"- seed: {report['config'].get('seed')}; variants after Xiao et al. 2020 "
        "(ImageNet-9 backgrounds challenge)",
    ]
    for split, fig in report["splits"].items():
        gap = fig["bg_gap"]
        lines += [
            "",
            f"## {split} ({fig['n']} images, chance {_fmt(fig['chance'])})",
            "",
            "| variant | accuracy | images | without partner |",
            "|---|---|---|---|",
        ]
        for v in VARIANTS:
            a = fig["variants"][v]
            lines.append(f"| {v} | {_fmt(a['accuracy'])} | {a['n']} | {a['n_invalid']} |")
        lines += [
            "",
            f"bg_gap = {_fmt(gap['gap'])} (mixed_same − mixed_rand), "
            f"{round(100 * gap['level'])} % CI [{_fmt(gap['ci_low'])}, {_fmt(gap['ci_high'])}] "
            f"(paired bootstrap over {gap['n']} images)",
        ]
    lines += ["", "Examples: `examples/<variant>.png` (one row per split; black: no partner)."]
    return "\n".join(lines) + "\n"


def example_grids(
    table: pa.Table, splits: tuple[str, ...], n: int, size: int
) -> dict[str, np.ndarray]:
    """``{variant: (H, W, 3) uint8}``: the first ``n`` rows of each split as that variant,
    one labelled row per split. Built on the CPU with the audit's own functions."""
    from torchvision.utils import make_grid

    rows: dict[str, list[torch.Tensor]] = {v: [] for v in VARIANTS}
    for split in splits:
        part = table.filter(pc.equal(table["split"], split)).slice(0, n)
        batch = {c: part[c].to_numpy(zero_copy_only=False) for c in part.column_names}
        dec = decode_audit_rows(batch, size=size)
        valid = {v: torch.as_tensor(dec[f"valid_{v}"]) for v in MIXED_VARIANTS}
        built = composite_variants(
            to_float_chw(dec["image"]),
            to_float_chw(dec["alpha"]).contiguous(),
            to_float_chw(dec["background"]).contiguous(),
            {v: to_float_chw(dec[f"bg_{v}"]).contiguous() for v in MIXED_VARIANTS},
            valid,
        )
        for v in VARIANTS:
            images = built[v]
            if images.shape[0] < n:  # pad a short split with white tiles
                pad = torch.ones(n - images.shape[0], *images.shape[1:])
                images = torch.cat([images, pad])
            rows[v].append(images)
    out = {}
    for v in VARIANTS:
        grid = make_grid(torch.cat(rows[v]), nrow=n, padding=2, pad_value=1.0)
        out[v] = label_rows(to_uint8_hwc(grid[None])[0].numpy(), list(splits))
    return out


def write_report(
    report: dict[str, Any], table: pa.Table, cfg: AuditConfig, size: int, s3: S3Options
) -> tuple[list[str], dict[str, bytes]]:
    """Write ``audit.md`` and the grids under ``cfg.out``.

    Returns:
        ``(relative paths written, {relative path: bytes})`` (the bytes for MLflow).
    """
    files = {"audit.md": markdown(report).encode()}
    if cfg.examples:
        for v, image in example_grids(table, cfg.splits, cfg.examples, size).items():
            files[f"examples/{v}.png"] = encode_png(image)
    for name, data in files.items():
        if name.endswith(".md"):
            write_text(join(cfg.out, name), data.decode(), s3)
        else:
            write_bytes(join(cfg.out, name), data, s3)
    return sorted(files), files


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    out = {}
    for split, fig in report["splits"].items():
        for v in VARIANTS:
            out[f"{split}/{v}/accuracy"] = fig["variants"][v]["accuracy"]
        for key in ("gap", "ci_low", "ci_high"):
            out[f"{split}/bg_gap/{key}"] = fig["bg_gap"][key]
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def log_to_mlflow(
    report: dict[str, Any], files: dict[str, bytes], cfg: AuditConfig
) -> dict[str, str] | None:
    """Log the audit as a run nested under the model's MLflow run; None (nothing logged)
    when the model did not come from an MLflow run.

    Returns:
        ``{"tracking_uri", "run_id", "parent_run_id"}``.
    """
    model = report["model"]
    parent = model.get("run_id")
    if not parent:
        logger.info("the model has no MLflow run: the audit is not logged to MLflow")
        return None
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    tracking = model.get("tracking_uri") or cfg.mlflow_tracking_uri
    client = MlflowClient(tracking)
    experiment = client.get_run(parent).info.experiment_id
    run = client.create_run(
        experiment,
        run_name=f"audit-{cfg.seed}",
        tags={"mlflow.parentRunId": parent, "abs_ray.kind": "audit"},
    )
    run_id = run.info.run_id
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in _metrics(report).items()]
        client.log_batch(run_id, metrics=metrics)
        client.log_dict(run_id, report, "audit.json")
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                path = os.path.join(tmp, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            client.log_artifacts(run_id, tmp)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    logger.info("audit logged to MLflow run %s (under %s)", run_id, parent)
    return {"tracking_uri": tracking, "run_id": run_id, "parent_run_id": parent}
