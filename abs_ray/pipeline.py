"""The main job: detector → disentangle, streamed through Ray Data.

Stages (``PipelineConfig.stages``, default all, in this order):

1. ``detector`` — train the patch detector from patch labels (an ``info,mask`` CSV, or the
   data set's masks by coverage threshold), or load a given checkpoint. Training runs as one
   Ray task (on a GPU when the cluster has one).
2. ``disentangle`` — stream every image of the data set from storage through Ray Data:
   decode (tasks) → detector (actor pool) → masks + inpainting + PNG encoding (its own actor
   pool) → write. Models load once per actor.

Outputs under ``cfg.out`` (local folder or ``s3://`` prefix):

- ``detector/`` — ``detector.pt``, ``metrics.json``, ``mask_sheet.png`` (when trained here);
- ``data/`` — the disentangled data set, Parquet shards readable by Ray Data: id, source uri,
  label, split, group/place, ``foreground_png`` (RGBA: image + tight alpha),
  ``background_png`` (inpainted), ``patch_prob`` (the detector's G² grid of P(background)),
  and the detector/inpainter/code versions that made them;
- ``errors/`` — one record per input that failed: id, uri, stage, error type, message;
- ``swap_preview.png`` — a few foregrounds swapped onto other backgrounds;
- ``manifest.json`` — resolved config, code version, detector checkpoint, counts
  (``input = ok + errors``), seconds and images/s per stage.

Re-running into the same output replaces ``data/`` and ``errors/``; with ``resume`` the ids
already in either are skipped, which finishes an interrupted run without duplicating a row.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from abs_ray import __version__
from abs_ray.errors import AbsRayError, ConfigError
from abs_ray.io import (
    S3Options,
    check_readable,
    check_writable,
    delete,
    exists,
    join,
    read_text,
    write_bytes,
    write_text,
)

logger = logging.getLogger(__name__)

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


def _default_detector_train():
    from abs_ray.models.detector_train import DetectorTrainConfig

    # CPU-friendly: the backbone frozen but for its last 4 blocks (a fully frozen, pooled
    # backbone cannot localise: balanced patch accuracy 0.51 on the birds benchmark, 0.77 with
    # 4 blocks trainable at backbone_lr 0.3 and the patient schedule below; at the library
    # default backbone_lr 0.01 the same run stopped early at 0.52). On a GPU fine-tune
    # everything (freeze_backbone=False), as the paper.
    return DetectorTrainConfig(
        freeze_backbone=True,
        trainable_blocks=4,
        backbone_lr=0.3,
        plateau_patience=40,
        early_stop_patience=100,
        device="auto",
    )


def _default_train():
    from abs_ray.train import TrainConfig

    # The demo-sized default: Lite0 with a frozen backbone for a few epochs on 2 workers that
    # leave CPU for Ray Data's decode tasks. ``data``/``out`` are set by the pipeline.
    return TrainConfig(
        data="<pipeline output>", freeze_backbone=True, epochs=5, cpus_per_worker=0.5
    )


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything the main job needs; written to ``manifest.json`` with the outputs.

    Attributes:
        data: data set URI (any layout :func:`abs_ray.data.load_dataset` reads); None = the
            embedded demo, a synthetic data set generated into ``data/demo`` on first use.
        out: output URI (local folder or ``s3://bucket/prefix``).
        stages: which of :data:`STAGES` to run.
        resume: skip ids already in ``data/`` or ``errors/`` (and reuse a trained detector).
        detector_checkpoint: use this detector instead of training one.
        detector_train: how to train it (image size, grid, labels, recipe); ``out`` and
            ``data`` are set by the pipeline.
        train: the ``train`` stage's :class:`abs_ray.train.TrainConfig` (method, backbone,
            recipe, workers); it reads ``<out>/data`` and writes ``<out>/train``.
        mask_source: ``detector`` (the method) or ``truth``: the data set's own masks (the
            ``oracle`` upper bound; every image needs a ``mask_uri``; no detector is used).
        inpainter: registered inpainter name (``patchmatch``, ``telea``, ``torchscript``, ...).
        inpainter_kwargs: its arguments, e.g. ``{"dilate": 3}`` or ``{"uri": "s3://.../lama.pt"}``.
        tight: ``P(background)`` threshold of the tight (cut-out) mask; None = the detector's.
        loose: threshold of the loose (inpainted) mask; None = the detector's.
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
    """

    data: str | None = None
    out: str = "runs/demo"
    stages: tuple[str, ...] = STAGES
    resume: bool = False
    detector_checkpoint: str | None = None
    detector_train: Any = dataclasses.field(default_factory=_default_detector_train)
    mask_source: str = "detector"
    train: Any = dataclasses.field(default_factory=_default_train)
    inpainter: str = "patchmatch"
    inpainter_kwargs: dict = dataclasses.field(default_factory=dict)
    tight: float | None = None
    loose: float | None = None
    device: str = "auto"
    load: PoolConfig = PoolConfig(batch_size=32, num_cpus=0.25)
    detect: PoolConfig = PoolConfig(min_size=1, max_size=1, batch_size=32, num_cpus=0.5)
    inpaint: PoolConfig = PoolConfig(min_size=2, max_size=2, batch_size=8, num_cpus=0.5)
    max_pixels: int = 40_000_000
    rows_per_file: int = 512
    preview_samples: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ConfigError(
                f"unknown stage(s) {unknown or list(self.stages)}; known stages: {', '.join(STAGES)}"
            )
        if self.mask_source not in ("detector", "truth"):
            raise ConfigError(
                f"mask_source must be 'detector' or 'truth', got {self.mask_source!r}"
            )
        needs_detector = "disentangle" in self.stages and self.mask_source == "detector"
        if needs_detector and "detector" not in self.stages and not self.detector_checkpoint:
            raise ConfigError(
                "the disentangle stage needs a detector: add the detector stage or give detector_checkpoint"
            )
        for name in ("tight", "loose"):
            value = getattr(self, name)
            if value is not None and not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {value}")
        if self.max_pixels < 1 or self.preview_samples < 0:
            raise ConfigError("max_pixels must be >= 1 and preview_samples >= 0")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["detector_train"] = self.detector_train.to_dict()
        d["train"] = dataclasses.asdict(self.train)
        return d


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{__version__}+g{rev}" if rev else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def prepare_data(cfg: PipelineConfig, s3: S3Options | None = None) -> PipelineConfig:
    """Fill in ``cfg.data``, generating the embedded demo when it is None.

    The demo is a synthetic data set at 128 px (two shape classes on "water"/"land"
    textures, 100 % correlated in train, exact masks); its detector uses G = 16.
    """
    from abs_ray.data import SyntheticConfig, write_synthetic

    if cfg.data is not None:
        return cfg
    demo = SyntheticConfig(n_train=200, n_val=40, n_test=80, size=128, seed=cfg.seed)
    if not _same_demo(demo):
        logger.info("generating the demo data set in %s", DEMO_DATA)
        delete(DEMO_DATA)
        write_synthetic(DEMO_DATA, demo)
    # Small and quick: about two minutes of detector training on 2 CPU cores.
    train = dataclasses.replace(
        cfg.detector_train,
        image_size=demo.size,
        grid=16,
        num_labelled=160,
        eval_max=80,
        epochs=80,
        max_train_seconds=120,
    )
    return dataclasses.replace(cfg, data=DEMO_DATA, detector_train=train)


def _same_demo(demo) -> bool:
    """True when ``DEMO_DATA`` holds exactly this synthetic configuration."""
    try:
        found = json.loads(read_text(join(DEMO_DATA, "config.json")))
    except (AbsRayError, ValueError):
        return False
    wanted = dataclasses.asdict(demo)
    return exists(join(DEMO_DATA, "metadata.csv")) and all(
        found.get(k) == v for k, v in wanted.items()
    )


def run(cfg: PipelineConfig, s3: S3Options | None = None) -> dict:
    """Run the configured stages; return the summary also written to ``manifest.json``.

    Raises:
        StorageNotFoundError / StorageAccessError: the data, output or checkpoint cannot be
            reached (checked before any work).
        LayoutError / ManifestRowError: the data set cannot be read.
        ConfigError: inconsistent settings (e.g. a grid that does not divide the image size).
    """
    from abs_ray.data import load_dataset

    s3 = s3 or S3Options.from_env()
    cfg = prepare_data(cfg, s3)
    # Fail fast, before any work: data readable, output writable, layout known, config sane.
    check_readable(cfg.data, s3)
    check_writable(cfg.out, s3)
    if cfg.detector_checkpoint:
        check_readable(cfg.detector_checkpoint, s3)
    manifest = load_dataset(cfg.data, s3)
    logger.info("data set %s: %d images; output %s", cfg.data, len(manifest), cfg.out)

    summary: dict[str, Any] = {
        "code_version": code_version(),
        "config": cfg.to_dict(),
        "storage": s3.public(),
        "seconds": {},
        "images_per_s": {},
    }
    checkpoint = cfg.detector_checkpoint
    if cfg.mask_source == "truth":
        checkpoint = None
    elif "detector" in cfg.stages and not checkpoint:
        checkpoint, metrics = run_detector_stage(cfg, manifest, s3)
        summary["detector_metrics"] = {k: metrics.get(k) for k in ("val", "held_out", "best_epoch")}
        summary["seconds"]["detector"] = round(metrics["seconds"]["total"], 2)
    summary["detector_checkpoint"] = checkpoint
    if "disentangle" in cfg.stages:
        summary.update(run_disentangle_stage(cfg, manifest, checkpoint, s3, summary))
    if "train" in cfg.stages:
        summary["train"] = run_train_stage(cfg, s3)
    write_text(
        join(cfg.out, "manifest.json"),
        json.dumps(summary, indent=2, sort_keys=True, default=str),
        s3,
    )
    return summary


#: Held-out balanced patch accuracy below which the pipeline warns about the detector.
WEAK_DETECTOR = 0.55
#: Share of images without any foreground above which the pipeline warns.
EMPTY_MASK_WARNING = 0.25


def run_detector_stage(cfg: PipelineConfig, manifest, s3: S3Options) -> tuple[str, dict]:
    """Train the detector as one Ray task (GPU when available); return (checkpoint, metrics)."""
    import ray

    from abs_ray.models.detector_train import train_detector

    out = join(cfg.out, "detector")
    checkpoint = join(out, "detector.pt")
    if cfg.resume and exists(checkpoint, s3) and exists(join(out, "metrics.json"), s3):
        logger.info("resume: reusing the detector at %s", checkpoint)
        return checkpoint, json.loads(read_text(join(out, "metrics.json"), s3))
    gpus = ray.cluster_resources().get("GPU", 0)
    cpus = max(1, min(8, int(ray.cluster_resources().get("CPU", 1))))
    device = cfg.detector_train.device
    if device == "auto":
        device = "cuda" if gpus else "cpu"
    train_cfg = dataclasses.replace(cfg.detector_train, out=out, data=cfg.data, device=device)
    logger.info(
        "training detector %s (G=%d, %d px) on %s",
        train_cfg.detector,
        train_cfg.grid,
        train_cfg.image_size,
        device,
    )
    task = ray.remote(train_detector).options(
        num_cpus=cpus, num_gpus=1 if gpus else 0, max_retries=0
    )
    metrics = ray.get(task.remote(train_cfg, manifest, s3))
    held = metrics.get("held_out") or metrics.get("val") or {}
    logger.info(
        "detector trained in %.0f s: %s",
        metrics["seconds"]["total"],
        {k: held.get(k) for k in ("balanced_patch_accuracy", "mask_iou")},
    )
    accuracy = held.get("balanced_patch_accuracy")
    if accuracy is not None and accuracy < WEAK_DETECTOR:
        logger.warning(
            "the detector's held-out balanced patch accuracy is %.2f (0.5 = chance): it hardly "
            "tells foreground from background; see %s. More labelled images, a coarser grid "
            "or more training time usually help.",
            accuracy,
            join(out, "mask_sheet.png"),
        )
    return checkpoint, metrics


def mask_summary(fractions: list[float]) -> dict:
    """Foreground share of the written rows; warns when many masks are empty.

    An image whose tight mask is empty gives ``abs`` training nothing to paste: the swap shows
    a background alone under the image's label. A detector that finds nothing (too few labels,
    a grid too fine for the image size) turns ``abs`` into training on backgrounds.

    >>> mask_summary([0.0, 0.2, 0.4, 0.0])["empty_share"]
    0.5
    """
    if not fractions:
        return {"rows": 0, "mean_foreground_fraction": None, "empty_share": None}
    values = np.asarray(fractions, np.float64)
    empty = float((values <= 0).mean())
    out = {
        "rows": len(values),
        "mean_foreground_fraction": round(float(values.mean()), 4),
        "empty_share": round(empty, 4),
    }
    if empty > EMPTY_MASK_WARNING:
        logger.warning(
            "%.0f %% of the images have an empty foreground mask: swaps would paste nothing "
            "there. Check the detector's held-out metrics (detector/metrics.json, "
            "mask_sheet.png); label more images, use a coarser grid or a lower tight threshold.",
            100 * empty,
        )
    return out


def run_disentangle_stage(
    cfg: PipelineConfig, manifest, checkpoint: str, s3: S3Options, summary: dict
) -> dict:
    """Stream every image through decode → detect → inpaint + encode → write."""
    import ray

    from abs_ray.models import load_detector
    from abs_ray.stages import LoadImages
    from abs_ray.stages.disentangle import (
        DetectPatches,
        InpaintBackgrounds,
        masks_from_truth,
    )
    from abs_ray.stages.sink import (
        SplitParquetSink,
        clear_outputs,
        read_columns,
        read_ids,
        unique_count,
        write_empty_errors,
    )

    truth = cfg.mask_source == "truth"
    if truth:
        size, grid = cfg.detector_train.image_size, cfg.detector_train.grid
        tight, loose = cfg.detector_train.tight, cfg.detector_train.loose
        if manifest["mask_uri"].isna().all():
            raise ConfigError("mask_source='truth' needs masks, but the data set has no mask_uri")
    else:
        detector = load_detector(checkpoint, s3=s3)  # fails here, before the stream, if unusable
        size, grid = detector.config.image_size, detector.config.grid
        tight, loose = detector.config.tight, detector.config.loose
        del detector
    tight = cfg.tight if cfg.tight is not None else tight
    loose = cfg.loose if cfg.loose is not None else loose
    if tight > loose:
        raise ConfigError(f"tight threshold {tight} must not exceed loose threshold {loose}")

    todo = manifest
    if cfg.resume:
        done = set(read_ids(join(cfg.out, "data"), s3)) | set(read_ids(join(cfg.out, "errors"), s3))
        todo = manifest[~manifest["id"].astype(str).isin(done)]
        logger.info(
            "resume: %d of %d ids already written; %d to do", len(done), len(manifest), len(todo)
        )
    else:
        clear_outputs(cfg.out, ("data", "errors"), s3)

    has_gpu = ray.cluster_resources().get("GPU", 0) > 0

    def gpus(pool: PoolConfig) -> float:
        return pool.num_gpus if pool.num_gpus is not None else (1.0 if has_gpu else 0.0)

    sink = SplitParquetSink(
        cfg.out,
        s3,
        constant_columns={
            "detector": checkpoint or "truth",
            "inpainter": json.dumps(
                {"name": cfg.inpainter, **cfg.inpainter_kwargs}, sort_keys=True
            ),
            "code_version": summary["code_version"],
        },
        rows_per_file=cfg.rows_per_file,
    )
    t0 = time.perf_counter()
    if len(todo):
        blocks = max(1, min(200, len(todo) // cfg.load.batch_size))
        # Split here: from_pandas(override_num_blocks=) hands ndarrays to Ray with pandas 3.
        chunks = [todo.iloc[idx] for idx in np.array_split(np.arange(len(todo)), blocks)]
        ds = ray.data.from_pandas(chunks).map_batches(
            LoadImages(size=(size, size), s3=s3, max_pixels=cfg.max_pixels, masks=truth),
            batch_size=cfg.load.batch_size,
            num_cpus=cfg.load.num_cpus,
        )
        if truth:
            ds = ds.map_batches(
                masks_from_truth,
                fn_kwargs={"grid": grid},
                batch_size=cfg.load.batch_size,
                num_cpus=cfg.load.num_cpus,
            )
        else:
            ds = ds.map_batches(
                DetectPatches,
                fn_constructor_kwargs={"checkpoint": checkpoint, "device": cfg.device, "s3": s3},
                batch_size=cfg.detect.batch_size,
                compute=ray.data.ActorPoolStrategy(
                    min_size=cfg.detect.min_size, max_size=cfg.detect.max_size
                ),
                num_cpus=cfg.detect.num_cpus,
                num_gpus=gpus(cfg.detect),
            )
        ds = ds.map_batches(
            InpaintBackgrounds,
            fn_constructor_kwargs={
                "inpainter": cfg.inpainter,
                "inpainter_kwargs": cfg.inpainter_kwargs,
                "tight": tight,
                "loose": loose,
                "device": cfg.device,
                "encode": True,
            },
            batch_size=cfg.inpaint.batch_size,
            compute=ray.data.ActorPoolStrategy(
                min_size=cfg.inpaint.min_size, max_size=cfg.inpaint.max_size
            ),
            num_cpus=cfg.inpaint.num_cpus,
            # Weight-free inpainters run on CPU; a torchscript one gets the GPU.
            num_gpus=gpus(cfg.inpaint) if cfg.inpainter == "torchscript" else 0.0,
        )
        ds.write_datasink(sink)
    wall = time.perf_counter() - t0

    written = read_columns(
        join(cfg.out, "data"), ("id", "foreground_fraction"), s3, drop_unreadable=False
    )
    ok_ids = written["id"]
    err_ids = read_ids(join(cfg.out, "errors"), s3, drop_unreadable=False)
    if not err_ids and not exists(join(cfg.out, "errors"), s3):
        write_empty_errors(cfg.out, s3)
    counts = {"input": len(manifest), "ok": unique_count(ok_ids), "errors": unique_count(err_ids)}
    if len(ok_ids) != counts["ok"] or len(err_ids) != counts["errors"]:
        logger.error(
            "duplicate ids in the output: %d rows for %d ids",
            len(ok_ids) + len(err_ids),
            counts["ok"] + counts["errors"],
        )
    if counts["ok"] + counts["errors"] != counts["input"]:
        logger.error("counts do not add up: %s", counts)
    masks = mask_summary(written["foreground_fraction"])
    seconds = {
        "disentangle_wall": round(wall, 2),
        **{k: round(v, 2) for k, v in sink.result["seconds"].items()},
    }
    rates = {"disentangle": round(len(todo) / wall, 2) if len(todo) and wall > 0 else None}
    rates.update(
        {
            k: round(len(todo) / v, 1)
            for k, v in sink.result["seconds"].items()
            if v > 0 and len(todo)
        }
    )
    outputs = {
        "data": join(cfg.out, "data"),
        "errors": join(cfg.out, "errors"),
        "manifest": join(cfg.out, "manifest.json"),
    }
    if cfg.preview_samples and counts["ok"]:
        write_bytes(
            join(cfg.out, "swap_preview.png"),
            swap_preview(cfg.out, cfg.preview_samples, cfg.seed, s3),
            s3,
        )
        outputs["swap_preview"] = join(cfg.out, "swap_preview.png")
    logger.info(
        "disentangle: %d in, %d ok, %d errors; %.1f images/s over %.1f s (per-worker images/s by stage: %s); output %s",
        counts["input"],
        counts["ok"],
        counts["errors"],
        rates["disentangle"] or 0.0,
        wall,
        {k: v for k, v in rates.items() if k != "disentangle"},
        cfg.out,
    )
    return {
        "counts": counts,
        "masks": masks,
        "processed_this_run": {"rows": len(todo), **{k: sink.result[k] for k in ("ok", "errors")}},
        "seconds": {**summary["seconds"], **seconds},
        "images_per_s": rates,
        "outputs": outputs,
    }


def run_train_stage(cfg: PipelineConfig, s3: S3Options) -> dict:
    """Train the classifier on ``<out>/data`` (Ray Train, MLflow); return the report's summary.

    This is ``jobs/train.py`` with ``--data <out> --out <out>/train``; the training job's
    report (val and test: overall, per-group and worst-group accuracy) is its evaluation.
    """
    from abs_ray.train import run_training

    train_cfg = dataclasses.replace(cfg.train, data=cfg.out, out=join(cfg.out, "train"))
    t0 = time.perf_counter()
    report = run_training(train_cfg, s3)
    best = report.get("best") or {}
    logger.info(
        "train (%s): best epoch %s, test %s", train_cfg.method, best.get("epoch"), best.get("test")
    )
    return {
        "method": train_cfg.method,
        "seconds": round(time.perf_counter() - t0, 2),
        "report": join(train_cfg.out, report["run_name"], "report.json"),
        "best": best,
    }


def read_disentangled(out: str, s3: S3Options | None = None, limit: int | None = None):
    """The ``data/`` rows of a pipeline output as a pandas DataFrame (``limit`` rows at most)."""
    import io as _io

    import pandas as pd
    import pyarrow.parquet as pq

    from abs_ray.io import list_files, read_bytes

    frames, n = [], 0
    for uri in list_files(join(out, "data"), suffixes=[".parquet"], s3=s3):
        frames.append(pq.read_table(_io.BytesIO(read_bytes(uri, s3))).to_pandas())
        n += len(frames[-1])
        if limit is not None and n >= limit:
            break
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return df.head(limit) if limit is not None else df


def swap_preview(out: str, n: int, seed: int, s3: S3Options | None = None) -> bytes:
    """Swap a few disentangled foregrounds onto other backgrounds → PNG sheet.

    Sheet rows: source image, inpainted background, foreground swapped onto a background
    drawn class-uniformly (the training-time augmentation, paper ranges scaled to the size).
    """
    import torch

    from abs_ray.io import decode_image, encode_png
    from abs_ray.ops import SwapConfig, sample_swap_params, swap_backgrounds

    rows = read_disentangled(out, s3, limit=max(4 * n, 32))
    fg = np.stack([decode_image(b, alpha=True) for b in rows["foreground_png"]])
    bg = np.stack([decode_image(b) for b in rows["background_png"]])
    images = torch.from_numpy(fg[..., :3]).permute(0, 3, 1, 2).float() / 255
    alpha = torch.from_numpy(fg[..., 3:]).permute(0, 3, 1, 2).float() / 255
    backgrounds = torch.from_numpy(bg).permute(0, 3, 1, 2).float() / 255
    labels = torch.tensor(rows["label"].astype(int).to_numpy())
    size = images.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    k = min(n, len(rows))
    params = sample_swap_params(
        alpha[:k], labels[:k], labels, SwapConfig(translate=max(1.0, 32 * size / 224)), gen
    )
    swapped, _ = swap_backgrounds(images[:k], alpha[:k], backgrounds, params)
    sheet = torch.cat(
        [torch.cat(list(t), dim=2) for t in (images[:k], backgrounds[:k], swapped)], dim=1
    )
    return encode_png((sheet.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
