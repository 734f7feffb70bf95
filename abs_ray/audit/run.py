"""The audit job: data set + model → variants → predictions → ``<out>/audit.json``.

Steps (:func:`run_audit`):

1. check before any work: the output is writable, the data set scans
   (:func:`abs_ray.train.data.scan_disentangled`), the requested splits have rows, the model
   resolves, loads and returns at least ``K`` scores on one image;
2. :func:`audit_table`: the requested splits' rows, sorted by id, with their partners drawn
   per split from a seeded generator over the whole split
   (:func:`abs_ray.audit.variants.sample_partners`) and the partners' background PNGs as
   columns;
3. predictions: a Ray Data stream (decode tasks → an actor pool of
   :class:`abs_ray.audit.stage.AuditPredictor`, GPU when the cluster has one), or the same
   callables batch by batch in this process (``in_process``);
4. :func:`abs_ray.audit.metrics.audit_metrics`, the example grids and ``audit.md``
   (:mod:`abs_ray.audit.report`), then ``audit.json`` last, written atomically: a run that
   fails leaves the previous ``audit.json`` as it was; MLflow logging (nested under the
   model's run) after that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import time
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from abs_ray.audit.config import AuditConfig
from abs_ray.audit.metrics import audit_metrics
from abs_ray.audit.models import ModelRef, load_model, resolve_model
from abs_ray.audit.stage import AuditPredictor, decode_audit_rows
from abs_ray.audit.variants import MIXED_VARIANTS, VARIANTS, sample_partners
from abs_ray.errors import ConfigError
from abs_ray.io import S3Options, check_writable, join, write_text
from abs_ray.train.data import DatasetInfo, scan_disentangled
from abs_ray.version import __version__

logger = logging.getLogger(__name__)

__all__ = ["AuditPlan", "audit_table", "check_model", "plan_audit", "predict", "run_audit"]

_COLUMNS = ("id", "label", "split", "group", "foreground_png", "background_png")


def check_model(ref: ModelRef, image_size: int, num_classes: int) -> int:
    """The number of scores the model returns for one ``image_size`` image.

    Raises:
        ConfigError: the model fails on it, or returns fewer than ``num_classes`` scores.
    """
    predictor = load_model(ref, "cpu")
    try:
        scores = predictor(torch.zeros(1, image_size, image_size, 3, dtype=torch.uint8))
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"model {ref.identity.get('source')} fails on a {image_size} px image: {exc}"
        ) from exc
    k = int(scores.shape[1])
    if k < num_classes:
        raise ConfigError(
            f"model {ref.identity.get('source')} returns {k} scores, the data set has "
            f"{num_classes} classes"
        )
    return k


def _split_seed(seed: int, split: str) -> int:
    """The partner draw's seed of one split (independent of which other splits are asked)."""
    return (seed * 1_000_003 + zlib.crc32(split.encode())) % (2**63)


def audit_table(
    info: DatasetInfo, splits: tuple[str, ...], seed: int, s3: S3Options | None = None
) -> pa.Table:
    """The rows to audit with their partners' backgrounds (see :mod:`abs_ray.audit.stage`).

    Each split's rows are sorted by id, so the partners depend on the seed and the data, not
    on how the rows are spread over files.

    Returns:
        ``id, label, split, group, foreground_png, background_png`` and per mixed variant
        ``v``: ``partner_<v>`` (the partner's id, null if none), ``bg_<v>_png``, ``valid_<v>``.
    """
    import pyarrow.dataset as pads

    from abs_ray.io import resolve

    fs, _ = resolve(info.files[0], s3)
    dataset = pads.dataset([resolve(f, s3)[1] for f in info.files], filesystem=fs)
    columns = [c for c in _COLUMNS if c in dataset.schema.names]
    parts = []
    for split in splits:
        table = dataset.to_table(columns=columns, filter=pc.field("split") == split)
        if "group" not in table.column_names:
            table = table.append_column("group", pa.array([-1] * table.num_rows, pa.int64()))
        table = table.sort_by("id")
        labels = torch.as_tensor(table["label"].to_numpy(zero_copy_only=False).astype(np.int64))
        partners = sample_partners(
            labels,
            labels,
            info.num_classes,
            torch.Generator().manual_seed(_split_seed(seed, split)),
            self_index=torch.arange(len(labels)),
        )
        for v in MIXED_VARIANTS:
            index = partners.index(v).numpy()
            taken = pa.array(np.maximum(index, 0), mask=index < 0)
            table = table.append_column(f"partner_{v}", pc.take(table["id"], taken))
            table = table.append_column(f"bg_{v}_png", pc.take(table["background_png"], taken))
            table = table.append_column(f"valid_{v}", pa.array(index >= 0))
        parts.append(table)
    return pa.concat_tables(parts, promote_options="default")


def _in_process(table: pa.Table, cfg: AuditConfig, ref: ModelRef, size: int, progress) -> dict:
    """The stage callables batch by batch in this process."""
    predictor = AuditPredictor(ref, cfg.device, progress)
    parts = []
    for batch in table.to_batches(max_chunksize=cfg.batch_size):
        columns = {
            name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names
        }
        parts.append(predictor(decode_audit_rows(columns, size=size)))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def _with_ray(table: pa.Table, cfg: AuditConfig, ref: ModelRef, size: int, progress) -> dict:
    """A Ray Data stream: decode tasks, then an actor pool holding the model."""
    import ray

    from abs_ray.devices import auto_device, cluster_gpus

    gpus = cluster_gpus()
    num_gpus = cfg.num_gpus if cfg.num_gpus is not None else (1.0 if gpus else 0.0)
    blocks = max(1, min(200, table.num_rows // cfg.batch_size))
    bounds = np.linspace(0, table.num_rows, blocks + 1).astype(int)
    chunks = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    keep = ["id", "label", "split", *(f"{p}_{v}" for v in VARIANTS for p in ("pred", "valid"))]
    ds = (
        ray.data.from_arrow(chunks)
        .map_batches(
            decode_audit_rows,
            fn_kwargs={"size": size},
            batch_size=cfg.batch_size,
            num_cpus=cfg.decode_num_cpus,
        )
        .map_batches(
            AuditPredictor,
            fn_constructor_kwargs={
                "model": ref,
                "device": auto_device(cfg.device, num_gpus),
                "progress": progress,
            },
            batch_size=cfg.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=cfg.pool_size),
            num_cpus=cfg.num_cpus,
            num_gpus=num_gpus,
        )
        .select_columns(keep)
    )
    frame = ds.to_pandas()
    return {k: frame[k].to_numpy() for k in keep}


def predict(
    table: pa.Table, cfg: AuditConfig, ref: ModelRef, size: int, progress=None
) -> dict[str, np.ndarray]:
    """Per-row predictions of every variant: ``id, label, split, pred_<v>, valid_<v>``
    (in-process or on Ray, by ``cfg.in_process``; Ray must be initialised for the latter)."""
    run = _in_process if cfg.in_process else _with_ray
    return run(table, cfg, ref, size, progress)


@contextlib.contextmanager
def _progress(total: int, in_process: bool) -> Iterator[Any]:
    """A progress sink for the ``audit`` stage: a board here, a remote one for Ray actors."""
    if in_process:
        from abs_ray.console import ProgressBoard

        board = ProgressBoard()
        board.progress("audit", total=total, unit="img")
        try:
            yield board
        finally:
            board.finish("audit")
        return
    from abs_ray.console import RemoteProgress

    with RemoteProgress() as remote:
        remote.progress("audit", total=total, unit="img")
        yield remote.handle


@dataclasses.dataclass(frozen=True)
class AuditPlan:
    """An audit checked against the world, ready to run (:func:`plan_audit`).

    Attributes:
        cfg: the settings.
        info: the data set's scan.
        model: the classifier, read and loaded once.
        num_scores: the model's outputs (``>= info.num_classes``).
    """

    cfg: AuditConfig
    info: DatasetInfo
    model: ModelRef
    num_scores: int


def plan_audit(cfg: AuditConfig, s3: S3Options | None = None) -> AuditPlan:
    """Every check before work: the output is writable, the data set scans and has the
    requested splits, the model resolves, loads and fits the data.

    Raises:
        ConfigError, StorageError, DatasetError: as :func:`run_audit`.
    """
    if not isinstance(cfg, AuditConfig):
        raise ConfigError(f"cfg must be an AuditConfig, got {type(cfg).__name__}")
    s3 = s3 or S3Options.from_env()
    check_writable(cfg.out, s3)
    info = scan_disentangled(cfg.data, s3)
    missing = [s for s in cfg.splits if not info.counts.get(s)]
    if missing:
        raise ConfigError(
            f"split(s) {', '.join(missing)} have no rows in {info.uri} (rows per split: "
            f"{info.counts})"
        )
    ref = resolve_model(cfg.model, tracking_uri=cfg.mlflow_tracking_uri, s3=s3)
    k = check_model(ref, info.image_size, info.num_classes)
    return AuditPlan(cfg, info, ref, k)


def run_audit(cfg: AuditConfig | AuditPlan, s3: S3Options | None = None) -> dict[str, Any]:
    """Run the audit (Ray initialised unless ``cfg.in_process``); its ``audit.json`` content.

    Args:
        cfg: the settings, or a plan :func:`plan_audit` made of them (checked already).
        s3: S3 settings; default from the environment.

    Raises:
        ConfigError: bad settings, splits without rows, a model that does not fit the data.
        StorageError: the data, model or output location cannot be read or written.
        DatasetError: the data set is not a disentangled one.
    """
    from abs_ray.audit.report import log_to_mlflow, write_report

    s3 = s3 or S3Options.from_env()
    plan = cfg if isinstance(cfg, AuditPlan) else plan_audit(cfg, s3)
    cfg, info, ref, k = plan.cfg, plan.info, plan.model, plan.num_scores
    t0 = time.perf_counter()
    table = audit_table(info, cfg.splits, cfg.seed, s3)
    with _progress(table.num_rows, cfg.in_process) as sink:
        rows = predict(table, cfg, ref, info.image_size, sink)
    figures = audit_metrics(
        rows, cfg.splits, info.num_classes, n_boot=cfg.n_boot, seed=cfg.seed, level=cfg.level
    )
    report = {
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "code_version": __version__,
        "config": cfg.to_dict(),
        "model": {**ref.identity, "num_scores": k},
        "data": info.to_dict(),
        "rows": {"audited": int(table.num_rows), "predicted": len(rows.get("id", []))},
        "seconds": round(time.perf_counter() - t0, 3),
        "splits": figures,
    }
    report["artifacts"], files = write_report(report, table, cfg, info.image_size, s3)
    # MLflow before audit.json: a run that fails there leaves the previous audit.json as is.
    report["mlflow"] = log_to_mlflow(report, files, cfg) if cfg.log_mlflow else None
    write_text(join(cfg.out, "audit.json"), json.dumps(report, indent=2, default=str), s3)
    _log_summary(report)
    return report


def _log_summary(report: dict[str, Any]) -> None:
    for split, fig in report["splits"].items():
        acc = {v: fig["variants"][v]["accuracy"] for v in VARIANTS}
        gap = fig["bg_gap"]
        logger.info(
            "audit %s (%d rows): %s; bg_gap %.3f [%.3f, %.3f]",
            split,
            fig["n"],
            ", ".join(f"{v} {a:.3f}" for v, a in acc.items()),
            gap["gap"],
            gap["ci_low"],
            gap["ci_high"],
        )
