"""The audit's configuration: one frozen dataclass, written into ``audit.json``.

Example:
    >>> cfg = AuditConfig(data="runs/demo", model="runs/train/abs-efficientnet_lite0-s0",
    ...                   out="runs/audit")
    >>> cfg.splits, cfg.n_boot
    (('val', 'test'), 1000)
    >>> AuditConfig(data="d", model="m", out="o", splits=("val", "dev"))
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: splits must be among train, val, test, got 'dev'
"""

from __future__ import annotations

import dataclasses
from typing import Any

from abs_ray._checks import check_int, check_number
from abs_ray.errors import ConfigError

__all__ = ["SPLITS", "AuditConfig"]

#: The splits a disentangled data set can have.
SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Everything the audit needs; saved with its outputs.

    Attributes:
        data: the disentangled data set: a pipeline output folder (with ``data/``) or its
            Parquet folder, local or ``s3://``.
        model: the classifier: a training run folder (with ``report.json``), an MLflow model
            URI (``runs:/<run>/model``, ``models:/<name>/<version>``), or a ``.pt2`` /
            TorchScript file taking ``(B, H, W, 3)`` uint8 and returning ``(B, K)`` scores.
        out: where ``audit.json``, ``audit.md`` and the example grids go (local or ``s3://``).
        splits: the splits to audit (each must have rows).
        seed: seeds the partner draw (which background each mixed variant uses) and the
            bootstrap: the same seed gives the same variants and the same numbers.
        n_boot: bootstrap resamples of the ``bg_gap`` confidence interval.
        level: coverage of the interval.
        batch_size: rows per batch; the model is called once per variant on a batch's
            valid rows, so a call sees at most ``batch_size`` images (the training's
            ``eval_batch_size`` scale).
        pool_size: actors holding the model (each a copy; one per GPU on a GPU cluster).
        num_cpus: logical CPUs per model actor (a fraction leaves the decode tasks room on
            a small machine).
        num_gpus: GPUs per model actor; None: 1 when the cluster has GPUs, else 0.
        decode_num_cpus: logical CPUs per PNG decoding task.
        device: ``auto`` (a GPU when the actor has one), ``cpu``, ``cuda``, ``cuda:1``.
        in_process: run the model in this process, batch by batch, instead of a Ray Data
            actor pool (small sets, debugging; same numbers).
        examples: images per example grid (per variant and split; 0: no grids).
        mlflow_tracking_uri: tracking server of MLflow model URIs (default: the run
            folder's, else ``MLFLOW_TRACKING_URI``).
        log_mlflow: log the audit as a run nested under the model's MLflow run (when it
            came from one).
    """

    data: str
    model: str
    out: str
    splits: tuple[str, ...] = ("val", "test")
    seed: int = 0
    n_boot: int = 1000
    level: float = 0.95
    batch_size: int = 32
    pool_size: int = 1
    num_cpus: float = 0.5
    num_gpus: float | None = None
    decode_num_cpus: float = 0.25
    device: str = "auto"
    in_process: bool = False
    examples: int = 8
    mlflow_tracking_uri: str | None = None
    log_mlflow: bool = True

    def __post_init__(self) -> None:
        for name in ("data", "model", "out"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        splits = self.splits
        if isinstance(splits, str):
            splits = tuple(s.strip() for s in splits.split(",") if s.strip())
        splits = tuple(splits)
        if not splits:
            raise ConfigError("splits must name at least one split")
        for split in splits:
            if split not in SPLITS:
                raise ConfigError(f"splits must be among {', '.join(SPLITS)}, got {split!r}")
        if len(set(splits)) != len(splits):
            raise ConfigError(f"splits must be distinct, got {splits}")
        object.__setattr__(self, "splits", splits)
        check_int("seed", self.seed)
        check_int("n_boot", self.n_boot, minimum=1)
        check_number("level", self.level, 0, 1, low_open=True, high_open=True)
        object.__setattr__(self, "level", float(self.level))
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("pool_size", self.pool_size, minimum=1)
        check_int("examples", self.examples, minimum=0, maximum=64)
        check_number("num_cpus", self.num_cpus, 0, 1024, low_open=True)
        check_number("decode_num_cpus", self.decode_num_cpus, 0, 1024, low_open=True)
        if self.num_gpus is not None:
            check_number("num_gpus", self.num_gpus, 0, 64)
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be a device name or 'auto', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }
