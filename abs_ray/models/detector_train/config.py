"""The detector training run's settings: :class:`DetectorTrainConfig`, saved as
``config.json`` beside its outputs and inside the checkpoint's ``meta``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from abs_ray._checks import check_int, check_number
from abs_ray.errors import ConfigError
from abs_ray.models.backbones import check_backbone
from abs_ray.models.detector import DetectorConfig, check_trainable_blocks
from abs_ray.models.detector_train.augment import AugmentConfig

__all__ = ["OPTIMIZERS", "SCHEDULES", "DetectorTrainConfig"]

#: ``optimizer`` values: AdamW (the default recipe) or SGD with momentum (the paper's).
OPTIMIZERS = ("adamw", "sgd")
#: ``schedule`` values: one-cycle over the fixed number of steps (the default recipe) or
#: ReduceLROnPlateau on val balanced patch accuracy (the paper's).
SCHEDULES = ("onecycle", "plateau")
#: Defaults of ``weight_decay`` and ``backbone_lr`` per optimizer, when left None.
_OPTIMIZER_DEFAULTS = {"adamw": (1e-2, 1e-4), "sgd": (1e-5, 1e-2)}


@dataclasses.dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything a detector training run needs; saved as ``config.json`` beside its outputs.

    The defaults are the recipe that won on the birds benchmark (``bench/detector.py``): the
    dense head on a frozen Lite0, 4 cached augmented views per labelled image, AdamW at lr
    3e-3 with a one-cycle schedule, 40 epochs; a few minutes on 2 CPU cores for 200 labelled
    images at 224 px. The paper's recipe is ``head="pooled", optimizer="sgd",
    schedule="plateau", lr=0.3, epochs=200`` (and the backbone unfrozen on a GPU).

    Training is bounded by ``epochs`` (and early stopping): the same seed gives the same
    detector on an idle or a loaded machine. ``max_train_seconds`` is an explicit opt-in.

    Attributes:
        out: output folder URI (local or ``s3://``).
        data: data set URI the manifest was read from (recorded as the label source).
        backbone: backbone name (see :func:`~abs_ray.models.detector.create_detector`).
        head: ``"dense"`` (per patch, from the backbone's feature maps) or ``"pooled"`` (the
            paper's MLP on the pooled feature).
        weights: backbone weights (``"default"``, ``"imagenet"``, None or a state-dict URI).
        grid: patches per side ``G``.
        image_size: detector input side ``S``.
        dropout: head dropout.
        freeze_backbone: freeze the backbone and train the head (fast on CPU).
        trainable_blocks: with ``freeze_backbone``, leave the backbone's last ``k`` blocks
            trainable too (0 = head only; ignored without ``freeze_backbone``; pooled head
            only). Pooled features of a frozen backbone localise poorly; training the last
            blocks recovers some of that on CPU; the dense head does not need it.
        feature_cache_views: with a frozen backbone, augmented views per training image whose
            frozen-prefix outputs are computed once (0 = run the frozen prefix on fresh
            augmentations every step).
        labels: URI of an ``info,mask`` CSV; None makes labels from masks.
        coverage_threshold: foreground coverage from which a patch is foreground (masks).
        label_split: manifest split the labelled images are drawn from.
        num_labelled: labelled images used (paper: 200 Waterbirds, 400 others); None = all.
        val_fraction: share of the labelled images held out for validation (paper: 0.2).
        eval_split: split of extra held-out images (with masks) to report on; None = none.
        eval_max: cap on held-out images (seeded sample); None = all.
        epochs: maximum epochs (paper: 200-300; the default recipe: 40).
        batch_size: training batch size.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum ``momentum``; the paper's).
        schedule: ``"onecycle"`` (peak ``lr``, stepped per batch over all ``epochs``) or
            ``"plateau"`` (ReduceLROnPlateau on val balanced patch accuracy; the paper's).
        lr: learning rate of the head (the peak one with ``onecycle``; paper, SGD: 0.3-1.0).
        backbone_lr: learning rate of an unfrozen backbone; None = 1e-4 (AdamW) or 0.01 (SGD;
            our choice: pretrained features do not survive lr 0.3).
        momentum: SGD momentum.
        weight_decay: weight decay; None = 1e-2 (AdamW) or 1e-5 (SGD, the paper's).
        label_smoothing: BCE label smoothing ``eps``: targets become ``t (1 - eps) + eps / 2``.
        balance_classes: weight the BCE so background and foreground patches count equally
            (``pos_weight = fg / bg``). Not in the paper: with few foreground patches (about
            13 % on the birds benchmark) plain BCE first fits the prior "all background", and
            with a frozen backbone it stays there for many epochs.
        plateau_factor: ReduceLROnPlateau factor (on val balanced patch accuracy).
        plateau_patience: ReduceLROnPlateau patience, in epochs.
        early_stop_patience: stop after this many epochs without a better val balanced patch
            accuracy; the best epoch's weights are kept.
        max_train_seconds: explicit opt-in wall-clock cap: stop after the epoch during which
            training (feature caching included) passed this many seconds, keeping the best
            epoch; None (default) = no limit. A cap makes the result depend on the machine's
            load (a busy box stops early with a weaker detector), so it is off by default.
        min_balanced_accuracy: quality floor: after training, a val (held-out labelled
            patches) balanced patch accuracy below this raises
            :class:`~abs_ray.errors.WeakDetectorError` before anything is written (0.5 is
            chance). 0 disables the floor.
        allow_weak_detector: go on (write the detector, log a warning) below the floor.
        augment: the :class:`AugmentConfig`.
        tight: tight-mask threshold (IoU is measured on ``p < tight``; paper 0.33 Waterbirds).
        loose: loose-mask threshold stored with the detector.
        device: torch device string.
        seed: seed of the selection, split, initialisation and augmentation.
        eval_batch_size: batch size for feature extraction and evaluation.
        num_workers: parallel image reads.
        sheet_samples: held-out images drawn on ``mask_sheet.png`` (0 = no sheet).
        log_every: log a progress line every this many epochs.

    Raises:
        ConfigError: a value out of range or inconsistent (e.g. grid vs image size).
    """

    out: str = "runs/detector"
    data: str | None = None
    backbone: str = "efficientnet_lite0"
    head: str = "dense"
    weights: str | None = "default"
    grid: int = 16
    image_size: int = 224
    dropout: float = 0.2
    freeze_backbone: bool = True
    trainable_blocks: int = 0
    feature_cache_views: int = 4
    labels: str | None = None
    coverage_threshold: float = 0.25
    label_split: str = "train"
    num_labelled: int | None = 200
    val_fraction: float = 0.2
    eval_split: str | None = "test"
    eval_max: int | None = 200
    epochs: int = 40
    batch_size: int = 32
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    lr: float = 3e-3
    backbone_lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    label_smoothing: float = 0.1
    balance_classes: bool = False
    plateau_factor: float = 0.3
    plateau_patience: int = 20
    early_stop_patience: int = 60
    max_train_seconds: float | None = None
    min_balanced_accuracy: float = 0.6
    allow_weak_detector: bool = False
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    tight: float = 0.5
    loose: float = 0.9
    device: str = "cpu"
    seed: int = 0
    eval_batch_size: int = 64
    num_workers: int = 8
    sheet_samples: int = 24
    log_every: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.out, str) or not self.out:
            raise ConfigError(f"out must be a non-empty URI, got {self.out!r}")
        DetectorConfig(  # name, head, grid vs image size, dropout, thresholds
            name=self.backbone,
            head=self.head,
            grid=self.grid,
            image_size=self.image_size,
            dropout=self.dropout,
            tight=self.tight,
            loose=self.loose,
        )
        check_number("coverage_threshold", self.coverage_threshold, 0.0, 1.0, low_open=True)
        check_number("val_fraction", self.val_fraction, 0.0, 0.99, low_open=True)
        check_number("label_smoothing", self.label_smoothing, 0.0, 0.99)
        check_number("lr", self.lr, 0.0, 100.0, low_open=True)
        for name, values in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in values:
                raise ConfigError(
                    f"unknown {name} {getattr(self, name)!r}; known: {', '.join(values)}"
                )
        if self.backbone_lr is not None:
            check_number("backbone_lr", self.backbone_lr, 0.0, 100.0)
        check_number("momentum", self.momentum, 0.0, 0.999)
        if self.weight_decay is not None:
            check_number("weight_decay", self.weight_decay, 0.0, 1.0)
        check_number("min_balanced_accuracy", self.min_balanced_accuracy, 0.0, 1.0)
        if not isinstance(self.allow_weak_detector, bool):
            raise ConfigError(
                f"allow_weak_detector must be a bool, got {self.allow_weak_detector!r}"
            )
        check_number("plateau_factor", self.plateau_factor, 0.0, 0.999, low_open=True)
        for name, minimum in (
            ("epochs", 1),
            ("batch_size", 1),
            ("eval_batch_size", 1),
            ("plateau_patience", 0),
            ("early_stop_patience", 1),
            ("feature_cache_views", 0),
            ("trainable_blocks", 0),
            ("num_workers", 1),
            ("sheet_samples", 0),
            ("log_every", 1),
            ("seed", 0),
        ):
            check_int(name, getattr(self, name), minimum)
        check_backbone(  # weights and partial freezing, before any image is read
            self.backbone, "detector", weights=self.weights, trainable_blocks=self.freezing[1]
        )
        check_trainable_blocks(self.backbone, self.head, self.freezing[1])
        for name in ("num_labelled", "eval_max"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 2 if name == "num_labelled" else 1)
        if self.max_train_seconds is not None:
            check_number("max_train_seconds", self.max_train_seconds, 0.0, 1e9, low_open=True)
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError(
                f"augment must be an AugmentConfig, got {type(self.augment).__name__}"
            )

    @property
    def freezing(self) -> tuple[bool, int]:
        """``(freeze_backbone, trainable_blocks)`` as the model gets them: the trainable
        blocks count only under a frozen backbone (an unfrozen one trains every block)."""
        return self.freeze_backbone, self.trainable_blocks if self.freeze_backbone else 0

    @property
    def optimizer_settings(self) -> tuple[float, float]:
        """``(weight_decay, backbone_lr)`` with the optimizer's defaults filled in."""
        wd, blr = _OPTIMIZER_DEFAULTS[self.optimizer]
        return (
            wd if self.weight_decay is None else self.weight_decay,
            blr if self.backbone_lr is None else self.backbone_lr,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (nested ``augment`` included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorTrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown detector training settings: {', '.join(unknown)}")
        values = dict(values)
        if isinstance(values.get("augment"), Mapping):
            values["augment"] = AugmentConfig(**values["augment"])
        return cls(**values)
