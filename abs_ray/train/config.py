"""The classifier-training configuration: one frozen dataclass, saved with every run.

Defaults follow the paper's Waterbirds recipe (SGD momentum 0.9, batch 32, 50 epochs, lr 1e-3,
weight decay 1e-3, label smoothing 0.1, swap probability 1, swap scale U(0.5, 1.5), rotation
+-30 deg, shift +-32 px at 224 px, then RandomResizedCrop(scale 0.7-1.0) and a horizontal
flip; model selection on in-distribution validation accuracy), except the backbone: the
paper's ResNet-50 needs torchvision's ImageNet download, so the default is the offline
pretrained ``efficientnet_lite0`` (pass ``backbone="resnet50"`` where the internet or a
state-dict file is at hand).

Example:
    >>> cfg = TrainConfig(data="runs/demo", method="erm")
    >>> cfg.resolved_run_name, cfg.per_worker_batch_size
    ('erm-efficientnet_lite0-s0', 16)
    >>> TrainConfig(data="runs/demo", method="mixup")
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: unknown method 'mixup'; known: abs, erm, erm_aug, oracle
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from abs_ray._checks import check_int, check_number
from abs_ray.errors import ConfigError

__all__ = [
    "METHODS",
    "RESUMABLE_CHANGES",
    "SELECTION_METRICS",
    "SELECT_BY",
    "TrainConfig",
    "cpu_request",
    "flatten_dict",
]

#: Training methods sharing one loop: ``abs`` (the paper's swap with the detector's masks),
#: ``erm`` (original images), ``erm_aug`` (original images with colour jitter, RandAugment and
#: CutMix: the strong-augmentation baseline), ``oracle`` (the swap with true masks).
METHODS: tuple[str, ...] = ("abs", "erm", "erm_aug", "oracle")
#: Model-selection metrics and where each epoch's value is read: ``(history entry key, metric
#: of that entry)``. ``val_*`` score the val split as it is; ``swap_val_accuracy`` (label-free)
#: scores its mixed-rand variant: each val foreground on another val image's inpainted
#: background (:mod:`abs_ray.train.swap_val`), logged as ``swap_val/accuracy``.
SELECTION_METRICS: dict[str, tuple[str, str]] = {
    "val_accuracy": ("val", "overall_accuracy"),
    "val_worst_group_accuracy": ("val", "worst_group_accuracy"),
    "swap_val_accuracy": ("swap_val", "overall_accuracy"),
}
#: Model-selection metrics (on the val split, as it is or background-swapped).
SELECT_BY: tuple[str, ...] = tuple(SELECTION_METRICS)
#: Fields a resumed run may change (resources, budget, bookkeeping); every other field must
#: equal the stored run's.
RESUMABLE_CHANGES: frozenset[str] = frozenset(
    {
        "epochs",
        "num_workers",
        "use_gpu",
        "cpus_per_worker",
        "decode_num_cpus",
        "max_failures",
        "checkpoints_to_keep",
        "eval_batch_size",
        "mlflow_tracking_uri",
        "mlflow_artifact_location",
        "mlflow_parent_run_id",
        "register_model",
    }
)
#: Side of the paper's classifier input; the swap shift scales with ``image_size / 224``.
PAPER_SIZE = 224
PAPER_TRANSLATE = 32.0
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _pair(name: str, value: object, low: float, high: float) -> tuple[float, float]:
    if not isinstance(value, tuple | list) or len(value) != 2:
        raise ConfigError(f"{name} must be a (low, high) pair, got {value!r}")
    lo = check_number(f"{name}[0]", value[0], low, high, low_open=True)
    hi = check_number(f"{name}[1]", value[1], low, high, low_open=True)
    if lo > hi:
        raise ConfigError(f"{name} must satisfy low <= high, got ({lo}, {hi})")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a classifier-training run needs; logged to MLflow and saved with the run.

    Attributes:
        data: URI of a disentangled data set: the pipeline's output folder (holding
            ``data/*.parquet``) or the ``data`` folder itself, local or ``s3://``.
        out: output URI; the run writes ``<out>/<run name>/`` (report, config), Ray Train
            checkpoints under ``<out>/ray/<run name>/``, and (local ``out``) the default MLflow
            store ``<out>/mlflow.db`` with artifacts in ``<out>/mlartifacts``.
        method: one of :data:`METHODS`.
        run_name: Ray Train run name and MLflow run name; a job submitted again with the same
            name and ``out`` resumes that run. None: ``<method>-<backbone>-s<seed>``.
        backbone: classifier backbone, see :func:`abs_ray.models.classifier_names`.
        weights: backbone weights: ``"default"``/``"imagenet"`` (pretrained), None (random
            init) or the URI of a backbone state-dict file.
        freeze_backbone: train the linear head only (features from the pretrained backbone).
        dropout: dropout before the linear head, in ``[0, 1)``.
        num_classes: classifier outputs; None = ``max(label) + 1`` of the data.
        epochs: training epochs (paper: 50 on Waterbirds).
        batch_size: global batch size, split evenly over the workers (paper: 32).
        lr: SGD learning rate (paper: 1e-3).
        momentum: SGD momentum (paper: 0.9).
        weight_decay: SGD weight decay (paper: 1e-3).
        label_smoothing: cross-entropy label smoothing (paper: 0.1).
        lr_schedule: ``"constant"`` (the paper's) or ``"cosine"`` (per epoch, to 0).
        image_size: side of the square training and evaluation input; None = the data's.
        crop_scale: RandomResizedCrop area range, ``0 < low <= high <= 1`` (paper: 0.7-1.0).
        hflip: random horizontal flip after the crop (paper: yes).
        swap_prob: probability that a training sample is swapped (paper: 1.0).
        swap_scale: foreground scale range (paper: 0.5-1.5 on Waterbirds).
        swap_degrees: rotation range +- degrees (paper: 30 on Waterbirds, 0 elsewhere).
        swap_translate: shift range +- pixels at the data's resolution; None = 32 px at 224 px,
            scaled to the image size (the paper's Waterbirds setting; 64 elsewhere).
        feather_sigma: inward alpha feathering in pixels (0 = the paper's hard alpha).
        bank_size: backgrounds kept per worker (the current batch's plus recent batches'),
            from which each sample's background is drawn class-uniformly.
        select_by: model selection metric: ``val_accuracy`` (the paper's),
            ``val_worst_group_accuracy`` (needs group labels in val) or ``swap_val_accuracy``
            (label-free: accuracy with each val foreground on another val image's inpainted
            background; needs the val rows' alphas and backgrounds), see :data:`SELECT_BY`.
        eval_batch_size: per-worker evaluation batch size.
        num_workers: Ray Train workers (one process each; gloo on CPU, NCCL on GPUs).
        use_gpu: one GPU per worker; None = when the cluster has GPUs.
        cpus_per_worker: logical CPUs per training worker; keep some for the Ray Data decode
            tasks (on a 2-CPU box two workers at 1 CPU leave none and the stream stalls: the
            default, 0.5, leaves one; :func:`cpu_request` is what a run asks for).
        decode_num_cpus: logical CPUs per PNG-decoding task.
        shuffle_buffer: rows in each worker's local shuffle buffer (0 = no local shuffle).
        max_failures: worker-group restarts (from the last checkpoint) before the run fails.
        checkpoints_to_keep: newest checkpoints kept in storage.
        mlflow_tracking_uri: tracking URI; None = ``MLFLOW_TRACKING_URI``, else a sqlite store
            in a local ``out``.
        mlflow_experiment: experiment name.
        mlflow_artifact_location: artifact root of a newly created experiment; None = where
            a tracking server says (``http(s)://`` URI), else ``<out>/mlartifacts``.
        mlflow_parent_run_id: the run is nested under this MLflow run (the pipeline's).
        register_model: register the selected epoch's model under this name (a new
            version, tagged with method, data digest, detector, test worst-group accuracy).
        sample_grid: training samples drawn in the logged composite grid (0 = none).
        seed: seed of initialisation, shuffling, swaps and crops.

    Raises:
        ConfigError: a value out of range, an unknown name, or inconsistent settings.
    """

    data: str
    out: str = "runs/train"
    method: str = "abs"
    run_name: str | None = None
    backbone: str = "efficientnet_lite0"
    weights: str | None = "default"
    freeze_backbone: bool = False
    dropout: float = 0.0
    num_classes: int | None = None
    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-3
    label_smoothing: float = 0.1
    lr_schedule: str = "constant"
    image_size: int | None = None
    crop_scale: tuple[float, float] = (0.7, 1.0)
    hflip: bool = True
    swap_prob: float = 1.0
    swap_scale: tuple[float, float] = (0.5, 1.5)
    swap_degrees: float = 30.0
    swap_translate: float | None = None
    feather_sigma: float = 0.0
    bank_size: int = 256
    select_by: str = "val_accuracy"
    eval_batch_size: int = 128
    num_workers: int = 2
    use_gpu: bool | None = None
    cpus_per_worker: float = 0.5
    decode_num_cpus: float = 0.25
    shuffle_buffer: int = 256
    max_failures: int = 3
    checkpoints_to_keep: int = 2
    mlflow_tracking_uri: str | None = None
    mlflow_experiment: str = "abs-ray"
    mlflow_artifact_location: str | None = None
    mlflow_parent_run_id: str | None = None
    register_model: str | None = None
    sample_grid: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        from abs_ray.models.backbones import check_backbone  # torch: only when a config is built

        for name in ("data", "out", "mlflow_experiment"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name} must be a non-empty string, got {value!r}")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; known: {', '.join(METHODS)}")
        if self.select_by not in SELECT_BY:
            raise ConfigError(
                f"unknown select_by {self.select_by!r}; known: {', '.join(SELECT_BY)}"
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(
                f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
            )
        if self.run_name is not None and not _RUN_NAME.match(str(self.run_name)):
            raise ConfigError(
                "run_name must be 1-128 characters of letters, digits, '.', '_' or '-' "
                f"starting with a letter or digit, got {self.run_name!r}"
            )
        for name in ("register_model", "mlflow_parent_run_id", "mlflow_artifact_location"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(f"{name} must be None or a non-empty string, got {value!r}")
        if self.weights is not None and (not isinstance(self.weights, str) or not self.weights):
            raise ConfigError(f"weights must be None or a non-empty string, got {self.weights!r}")
        check_backbone(self.backbone, "classifier", weights=self.weights)  # name, weights
        for name in ("freeze_backbone", "hflip"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.use_gpu is not None and not isinstance(self.use_gpu, bool):
            raise ConfigError(f"use_gpu must be True, False or None (auto), got {self.use_gpu!r}")
        for name, minimum in (
            ("epochs", 1),
            ("batch_size", 1),
            ("eval_batch_size", 1),
            ("bank_size", 1),
            ("num_workers", 1),
            ("shuffle_buffer", 0),
            ("max_failures", 0),
            ("checkpoints_to_keep", 1),
            ("sample_grid", 0),
            ("seed", 0),
        ):
            check_int(name, getattr(self, name), minimum)
        if self.num_classes is not None:
            check_int("num_classes", self.num_classes, 2)
        if self.image_size is not None:
            check_int("image_size", self.image_size, 16)
        if self.batch_size % self.num_workers:
            raise ConfigError(
                f"batch_size {self.batch_size} must be a multiple of num_workers "
                f"{self.num_workers} (the global batch is split evenly)"
            )
        check_number("dropout", self.dropout, 0.0, 0.99)
        check_number("lr", self.lr, 0.0, 100.0, low_open=True)
        check_number("momentum", self.momentum, 0.0, 0.999)
        check_number("weight_decay", self.weight_decay, 0.0, 1.0)
        check_number("label_smoothing", self.label_smoothing, 0.0, 0.99)
        check_number("swap_prob", self.swap_prob, 0.0, 1.0)
        check_number("feather_sigma", self.feather_sigma, 0.0, 100.0)
        check_number("cpus_per_worker", self.cpus_per_worker, 0.0, 1024.0, low_open=True)
        check_number("decode_num_cpus", self.decode_num_cpus, 0.0, 1024.0, low_open=True)
        object.__setattr__(self, "crop_scale", _pair("crop_scale", self.crop_scale, 0.0, 1.0))
        object.__setattr__(self, "swap_scale", _pair("swap_scale", self.swap_scale, 0.0, 10.0))
        check_number("swap_degrees", self.swap_degrees, 0.0, 180.0)
        if self.swap_translate is not None:
            check_number("swap_translate", self.swap_translate, 0.0, 1e6)

    # --- derived values ---------------------------------------------------------------------

    @property
    def resolved_run_name(self) -> str:
        """``run_name``, or ``<method>-<backbone>-s<seed>`` when it is None."""
        return self.run_name or f"{self.method}-{self.backbone}-s{self.seed}"

    @property
    def per_worker_batch_size(self) -> int:
        """``batch_size // num_workers``."""
        return self.batch_size // self.num_workers

    @property
    def swaps(self) -> bool:
        """True for the methods that composite (``abs``, ``oracle``)."""
        return self.method in ("abs", "oracle")

    def translate_pixels(self, size: int) -> float:
        """The swap shift range in pixels for images of side ``size``."""
        if self.swap_translate is not None:
            return float(self.swap_translate)
        return PAPER_TRANSLATE * size / PAPER_SIZE

    # --- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            ConfigError: unknown keys, or a value :class:`TrainConfig` rejects.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training settings: {', '.join(unknown)}")
        values = dict(values)
        for key in ("crop_scale", "swap_scale"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def changes_from(self, stored: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Fields that differ from a stored run's :meth:`to_dict`, ``{name: (stored, now)}``,
        excluding :data:`RESUMABLE_CHANGES`."""
        now = self.to_dict()
        return {
            k: (stored.get(k), v)
            for k, v in now.items()
            if k not in RESUMABLE_CHANGES and stored.get(k) != v
        }


def cpu_request(cfg: TrainConfig) -> float:
    """Logical CPUs a run holds at once: its workers and one PNG-decoding task beside them
    (with less, the decode stream waits for CPUs the workers never give back).

    >>> cpu_request(TrainConfig(data="d", out="o"))  # fits a 2-CPU machine
    1.25
    """
    return cfg.num_workers * cfg.cpus_per_worker + cfg.decode_num_cpus


def flatten_dict(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to ``{"a.b": "value"}`` strings (MLflow params).

    >>> flatten_dict({"a": 1, "b": {"c": [1, 2]}, "d": None})
    {'a': '1', 'b.c': '[1, 2]', 'd': 'None'}
    """
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_dict(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out
