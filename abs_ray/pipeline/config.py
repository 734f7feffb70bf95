"""The pipeline's configuration: stages, pools, :class:`PipelineConfig` and its defaults."""

from __future__ import annotations

import dataclasses
from typing import Any

from abs_ray.errors import ConfigError
from abs_ray.models.detector_train import DetectorTrainConfig
from abs_ray.train.config import TrainConfig

STAGES = ("detector", "disentangle", "train")
DEMO_DATA = "data/demo"


@dataclasses.dataclass(frozen=True)
class PoolConfig:
    """Size and resources of one Ray Data stage.

    Attributes:
        min_size: fewest actors (actor stages).
        max_size: most actors (actor stages); the pool grows with the backlog.
        batch_size: rows per call; bigger amortises model calls, smaller keeps memory low.
        num_cpus: logical CPUs per actor/task. Fractions keep a 2-CPU box from starving the
            read tasks (an actor pool that takes every CPU hangs the stream).
        num_gpus: GPUs per actor; None = 1 for model stages when the cluster has GPUs, else 0.
    """

    min_size: int = 1
    max_size: int = 2
    batch_size: int = 16
    num_cpus: float = 0.5
    num_gpus: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.min_size <= self.max_size:
            raise ConfigError(
                f"pool sizes need 1 <= min_size <= max_size, got {self.min_size}, {self.max_size}"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.num_cpus <= 0 or (self.num_gpus is not None and self.num_gpus < 0):
            raise ConfigError(
                f"num_cpus must be > 0 and num_gpus >= 0, got {self.num_cpus}, {self.num_gpus}"
            )


def _default_detector() -> DetectorTrainConfig:
    # The library's recipe (dense head on frozen Lite0, bench/results/detector.json), epoch-
    # bounded, with its quality floor; on a GPU see DetectorTrainConfig (README, "On a GPU").
    return DetectorTrainConfig(device="auto")


def _default_train() -> TrainConfig:
    # The demo-sized default: Lite0 with a frozen backbone for a few epochs on 2 workers that
    # leave CPU for Ray Data's decode tasks. ``data``/``out`` are set by the pipeline.
    return TrainConfig(
        data="<pipeline output>", freeze_backbone=True, epochs=5, cpus_per_worker=0.5
    )


#: Where the patch grid comes from: a trained ``detector``, the data set's masks (``truth``,
#: the oracle) or the zero-shot border-contrast ``saliency`` model (no training, no labels).
MASK_SOURCES = ("detector", "truth", "saliency")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything the main job needs; written to ``manifest.json`` with the outputs.

    Attributes:
        data: data set URI (any layout :func:`abs_ray.data.load_dataset` reads); None = the
            embedded demo, a synthetic data set generated into ``data/demo`` on first use.
        out: output URI (local folder or ``s3://bucket/prefix``).
        stages: which of :data:`STAGES` to run (a list, or one comma-separated string).
        resume: continue the newest unfinished run in ``out`` (skip ids already written,
            reuse its trained detector); settings must be those of that run.
        detector_checkpoint: use this detector instead of training one.
        detector: how to train it (image size, grid, labels, recipe); ``out`` and
            ``data`` are set by the pipeline. Recorded only when the detector is trained here.
        image_size: detector input side, when given: it must equal a given checkpoint's, else
            it replaces ``detector.image_size``. None = the checkpoint's, else
            ``detector``'s.
        grid: patches per side G, when given; as ``image_size``.
        train: the ``train`` stage's :class:`abs_ray.train.TrainConfig` (method, backbone,
            recipe, workers); it reads ``<out>/data`` and writes ``<out>/train``.
        mask_source: one of :data:`MASK_SOURCES`: ``detector`` (the method), ``truth`` (the
            data set's own masks, the ``oracle`` upper bound; every image needs a
            ``mask_uri``) or ``saliency`` (zero-shot, untrained: whatever contrasts with the
            image border; for data without labels, to look at before labelling).
        inpainter: registered inpainter name (``patchmatch``, ``telea``, ``torchscript``, ...).
        inpainter_kwargs: its arguments, e.g. ``{"dilate": 3}`` or ``{"uri": "s3://.../lama.pt"}``.
        tight: ``P(background)`` threshold of the tight (cut-out) mask; None = the detector's.
        loose: threshold of the loose (inpainted) mask; None = the detector's.
        val_fraction: when the data set has no ``val`` rows (e.g. class folders without split
            folders), this share of its train rows becomes val, chosen by a hash of the id
            (stable across runs and machines; recorded in ``manifest.json``). 0 = never; the
            train stage then refuses a data set without val rows.
        device: ``auto`` (GPU when an actor has one), ``cpu``, ``cuda``, ...
        load: decode tasks (``min_size``/``max_size`` unused).
        detect: detector actor pool.
        inpaint: inpainting actor pool (patch-based inpainting is the slowest step on CPU); it
            also PNG-encodes its outputs, so raw pixels never cross to another stage. A fixed
            size: an autoscaling 1–2 pool stayed at one actor on 2 CPUs (bench: 0.98× the
            plain loop against 1.36× with two fixed actors).
        max_pixels: images with more pixels are refused before decoding.
        rows_per_file: most rows per output Parquet file (a resume redoes at most a file's
            worth of rows per interrupted writer); 512 rows of 224² PNG pairs are ~100 MB.
        preview_samples: samples shown in ``swap_preview.png`` (0 = none).
        seed: seed of the demo and the preview.

    Raises:
        ConfigError: an unknown stage, mask source, inpainter or inpainter argument, a grid
            that does not divide the image size, a threshold out of range, or settings that
            contradict each other (e.g. a checkpoint with ``mask_source="truth"``).
    """

    data: str | None = None
    out: str = "runs/demo"
    stages: tuple[str, ...] | str = STAGES
    resume: bool = False
    detector_checkpoint: str | None = None
    detector: DetectorTrainConfig = dataclasses.field(default_factory=_default_detector)
    image_size: int | None = None
    grid: int | None = None
    mask_source: str = "detector"
    train: TrainConfig = dataclasses.field(default_factory=_default_train)
    inpainter: str = "patchmatch"
    inpainter_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    tight: float | None = None
    loose: float | None = None
    val_fraction: float = 0.2
    device: str = "auto"
    load: PoolConfig = PoolConfig(batch_size=32, num_cpus=0.25)
    detect: PoolConfig = PoolConfig(min_size=1, max_size=1, batch_size=32, num_cpus=0.5)
    inpaint: PoolConfig = PoolConfig(min_size=2, max_size=2, batch_size=8, num_cpus=0.5)
    max_pixels: int = 40_000_000
    rows_per_file: int = 512
    preview_samples: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        from abs_ray.models.inpainters import check_inpainter

        stages = self.stages
        if isinstance(stages, str):  # "detector,disentangle", as typed on a command line
            stages = [s.strip() for s in stages.split(",") if s.strip()]
        object.__setattr__(self, "stages", tuple(stages))
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ConfigError(
                f"unknown stage(s) {unknown or list(self.stages)}; known stages: {', '.join(STAGES)}"
            )
        if self.mask_source not in MASK_SOURCES:
            raise ConfigError(
                f"mask_source must be one of {', '.join(MASK_SOURCES)}, got {self.mask_source!r}"
            )
        if self.mask_source != "detector" and self.detector_checkpoint:
            raise ConfigError(
                f"mask_source {self.mask_source!r} uses no detector, but detector_checkpoint "
                f"is set ({self.detector_checkpoint}); drop one of them"
            )
        needs_detector = "disentangle" in self.stages and self.mask_source == "detector"
        if needs_detector and "detector" not in self.stages and not self.detector_checkpoint:
            raise ConfigError(
                "the disentangle stage needs a detector: add the detector stage or give detector_checkpoint"
            )
        if self.stages == ("detector",) and not self.trains_detector:
            raise ConfigError(
                "the detector stage alone has nothing to do: the detector is not trained here "
                f"(mask_source {self.mask_source!r}, checkpoint {self.detector_checkpoint})"
            )
        for name in ("image_size", "grid"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"{name} must be a positive int or None, got {value!r}")
        if self.image_size is not None or self.grid is not None:
            # Given explicitly: they are what the detector is trained at (a given checkpoint
            # must match them, checked when it is read). DetectorTrainConfig checks the pair.
            object.__setattr__(
                self,
                "detector",
                dataclasses.replace(
                    self.detector,
                    image_size=self.image_size or self.detector.image_size,
                    grid=self.grid or self.detector.grid,
                ),
            )
        if self.mask_source == "saliency" and self.detector.grid < 3:
            raise ConfigError(f"the saliency source needs grid >= 3, got {self.detector.grid}")
        check_inpainter(self.inpainter, self.inpainter_kwargs)
        for name in ("tight", "loose"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {value}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.max_pixels < 1 or self.preview_samples < 0:
            raise ConfigError("max_pixels must be >= 1 and preview_samples >= 0")

    @property
    def trains_detector(self) -> bool:
        """True when this run trains the detector (the detector stage with no checkpoint)."""
        return (
            "detector" in self.stages
            and self.mask_source == "detector"
            and not self.detector_checkpoint
        )

    @property
    def writes_data(self) -> bool:
        """True when this run produces a new output (and replaces the committed one)."""
        return "detector" in self.stages or "disentangle" in self.stages

    def to_dict(self) -> dict:
        """JSON-able; ``detector`` is None unless the detector is trained here."""
        d = dataclasses.asdict(self)
        d["detector"] = self.detector.to_dict() if self.trains_detector else None
        d["train"] = dataclasses.asdict(self.train)
        return d
