"""Settings of the labelling app: one frozen dataclass, filled by ``abs-ray label``.

Example:
    >>> cfg = LabelConfig(data="data/demo", labels="s3://b/labels/patches.csv")
    >>> cfg.detector_out
    's3://b/labels/patches-detector'
    >>> LabelConfig(data="d", labels="l.csv", grid=15)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: patch grid 15 must divide image size 224
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from abs_ray._checks import check_int
from abs_ray.errors import ConfigError
from abs_ray.models.detector_train import DetectorTrainConfig

__all__ = ["PRIORS", "LabelConfig", "default_train_config"]

#: Pre-fill sources used while there is no detector.
PRIORS = ("saliency", "none")


def default_train_config() -> DetectorTrainConfig:
    """The retraining recipe of the app: fast enough to run between labelling sessions on CPU.

    Lite0 (ImageNet, offline), the dense head on the frozen backbone, cached augmented views,
    at most 100 epochs or 5 minutes; a weak detector is kept (it only pre-fills labels).
    ``out``, ``data``, ``labels``, ``grid`` and the label selection are filled in for each
    round.
    """
    return DetectorTrainConfig(
        freeze_backbone=True,
        epochs=100,
        max_train_seconds=300.0,
        allow_weak_detector=True,
        num_labelled=None,
        eval_split=None,
        sheet_samples=8,
        num_workers=4,  # parallel image reads; the box has 2 cores, reads wait on I/O
    )


@dataclasses.dataclass(frozen=True)
class LabelConfig:
    """What the labelling app labels, where labels go, and how it retrains.

    Attributes:
        data: data set URI (any layout :func:`abs_ray.data.load_dataset` reads).
        labels: the ``info,mask`` CSV URI (local or ``s3://``); created on the first save,
            resumed when it exists (``info`` = manifest id, or a file name matching one).
        detector_checkpoint: detector checkpoint URI for pre-fill and active selection; None uses the
            latest retrained one under :attr:`detector_out` when there is one.
        out: folder for retrained detectors (``round-NNNN/`` each, plus ``latest.json``);
            None = the labels URI without ``.csv``, plus ``-detector``.
        grid: patches per side ``G`` (must match the detector and an existing CSV).
        target: how many labelled images the person aims for (the counter's denominator).
        split: which split's images are labelled; None = every split.
        prior: pre-fill without a detector: ``"saliency"`` (the zero-shot border-contrast
            prior of :mod:`abs_ray.models.saliency`) or ``"none"`` (empty grids).
        score_max: unlabelled images scored by the detector for active selection after each
            (re)load, in pool order; bounds the CPU spent (Lite0: ~25 ms an image on CPU).
        score_batch: images per scoring forward pass.
        lease_seconds: how long an image handed out by "next" is kept from other people.
        display_max: longest side of the image sent to the browser (larger ones are shrunk).
        holdout_fraction: share of the labels kept out of retraining to measure it.
        min_train_labels: labels needed before retraining (one held out, two to train).
        seed: seed of the pool order, the hold-out draw and training.
        detector: the detector retraining recipe; ``out``, ``data``, ``labels``, ``grid``,
            ``label_split``, ``num_labelled`` and ``eval_split`` are set per round.
        host: address the server binds (loopback by default: the app has no login).
        port: TCP port.

    Raises:
        ConfigError: a value out of range, an unknown prior, or a grid the training recipe's
            image size cannot take.
    """

    data: str
    labels: str
    detector_checkpoint: str | None = None
    out: str | None = None
    grid: int = 16
    target: int = 200
    split: str | None = "train"
    prior: str = "saliency"
    score_max: int = 1000
    score_batch: int = 8
    lease_seconds: float = 600.0
    display_max: int = 1024
    holdout_fraction: float = 0.2
    min_train_labels: int = 5
    seed: int = 0
    detector: DetectorTrainConfig = dataclasses.field(default_factory=default_train_config)
    host: str = "127.0.0.1"
    port: int = 8000

    def __post_init__(self) -> None:
        for name in ("data", "labels"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a non-empty URI, got {value!r}")
        for name in ("detector_checkpoint", "out", "split"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be None or a non-empty string, got {value!r}")
        check_int("grid", self.grid, 1)
        check_int("target", self.target, 1)
        check_int("score_max", self.score_max, 0)
        check_int("score_batch", self.score_batch, 1)
        check_int("display_max", self.display_max, 16)
        check_int("min_train_labels", self.min_train_labels, 3)
        check_int("seed", self.seed, 0)
        check_int("port", self.port, 0, 65535)
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if not _number_in(self.lease_seconds, 0.0, math.inf):
            raise ConfigError(f"lease_seconds must be a number > 0, got {self.lease_seconds!r}")
        if not _number_in(self.holdout_fraction, 0.0, 0.5, closed_high=True):
            raise ConfigError(
                f"holdout_fraction must be a number in (0, 0.5], got {self.holdout_fraction!r}"
            )
        if not isinstance(self.detector, DetectorTrainConfig):
            raise ConfigError(
                f"detector must be a DetectorTrainConfig, got {type(self.detector).__name__}"
            )
        dataclasses.replace(self.detector, grid=self.grid)  # grid vs the recipe's image size

    @property
    def detector_out(self) -> str:
        """Where retrained detectors are written."""
        if self.out is not None:
            return self.out.rstrip("/")
        stem = self.labels[:-4] if self.labels.lower().endswith(".csv") else self.labels
        return stem.rstrip("/") + "-detector"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (the training recipe nested)."""
        return dataclasses.asdict(self)


def _number_in(value: object, low: float, high: float, closed_high: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return False
    return low < value <= high if closed_high else low < value < high
