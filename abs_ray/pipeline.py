"""The main job's orchestration: configuration and the stages that exist so far.

Stages (``PipelineConfig.stages``):

- ``labels``: stream every image and mask of the data set from storage through Ray Data,
  decode them safely, and turn the masks into G×G patch labels in the published ``info,mask``
  CSV format (what the detector trains from). Bad inputs land in ``errors/``.
- ``preview``: composite background swaps for a few samples with the true masks and the
  mean-colour fill (one of the paper's ablation fills) and write ``swap_preview.png``.

The detector, disentangle (inference + inpainting), train and evaluate stages come with the
model, pipeline and training issues; this module grows with them.

Outputs under ``cfg.out`` (a local folder or ``s3://`` prefix):
``samples/`` (Parquet, one row per loaded input), ``errors/`` (Parquet, one row per failed
input: uri, stage, error type, message), ``patch_labels.csv``, ``swap_preview.png`` and
``manifest.json`` (resolved config, code version, counts with input = ok + errors).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import posixpath
import subprocess
import time
from pathlib import Path

import numpy as np

from abs_ray import __version__
from abs_ray.errors import ConfigError
from abs_ray.io import (
    S3Options,
    check_readable,
    check_writable,
    delete,
    exists,
    join,
    resolve,
    write_bytes,
    write_text,
)

logger = logging.getLogger(__name__)

STAGES = ("labels", "preview")
#: Columns of the ``errors/`` records (see :func:`abs_ray.stages.error_records`).
ERROR_RECORD_COLUMNS = ("id", "uri", "stage", "error_type", "message")
DEMO_DATA = "data/demo"


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """Everything the main job needs; written to ``manifest.json`` with the outputs.

    Attributes:
        data: data set URI (any layout :func:`abs_ray.data.load_dataset` reads); None = the
            embedded demo (a synthetic data set generated into ``data/demo`` on first use).
        out: output URI (local folder or ``s3://bucket/prefix``).
        stages: which stages to run, in order.
        image_size: side length images are resized to (224 for real data, as in the paper).
        grid: patch grid side G (must divide ``image_size``).
        coverage_threshold: foreground coverage from which a patch counts as foreground
            (0.25 on Waterbirds).
        load_batch_size: rows per decode task; small enough that a batch of 224² images stays
            a few MB, large enough to amortise task overhead.
        preview_samples: how many samples ``preview`` composites.
        seed: seed of every random draw.
        demo_size: per-split sizes (train, val, test) of the generated demo.
    """

    data: str | None = None
    out: str = "runs/demo"
    stages: tuple[str, ...] = STAGES
    image_size: int = 224
    grid: int = 16
    coverage_threshold: float = 0.25
    load_batch_size: int = 32
    preview_samples: int = 8
    seed: int = 0
    demo_size: tuple[int, int, int] = (160, 40, 80)

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ConfigError(
                f"unknown stage(s) {unknown or list(self.stages)}; known stages: {', '.join(STAGES)}"
            )
        if self.image_size % self.grid:
            raise ConfigError(f"patch grid {self.grid} must divide image size {self.image_size}")
        if not 0.0 < self.coverage_threshold <= 1.0:
            raise ConfigError(
                f"coverage_threshold must be in (0, 1], got {self.coverage_threshold}"
            )
        if self.load_batch_size < 1 or self.preview_samples < 1:
            raise ConfigError("load_batch_size and preview_samples must be at least 1")


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
        return f"{__version__}+g{rev}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def prepare_data(cfg: PipelineConfig) -> tuple[str, PipelineConfig]:
    """Return the data URI to use, generating the embedded demo when ``cfg.data`` is None."""
    from abs_ray.data import SyntheticConfig, write_synthetic

    if cfg.data is not None:
        return cfg.data, cfg
    n_train, n_val, n_test = cfg.demo_size
    demo = SyntheticConfig(n_train=n_train, n_val=n_val, n_test=n_test, size=64, seed=cfg.seed)
    if not exists(join(DEMO_DATA, "metadata.csv")):
        logger.info("generating the demo data set in %s", DEMO_DATA)
        write_synthetic(DEMO_DATA, demo)
    # The demo images are 64 px: keep them at their size, with a grid that divides it.
    return DEMO_DATA, dataclasses.replace(
        cfg, image_size=demo.size, grid=16 if demo.size % 16 == 0 else 8
    )


def run(cfg: PipelineConfig, s3: S3Options | None = None) -> dict:
    """Run the configured stages; return the summary also written to ``manifest.json``.

    Raises:
        StorageNotFoundError / StorageAccessError: the data or the output cannot be reached
            (checked before any work).
        LayoutError / ManifestRowError: the data set cannot be read.
    """
    import ray

    from abs_ray.data import load_dataset
    from abs_ray.stages import LoadImages, error_records
    from abs_ray.stages.patch_labels import MaskToPatchLabels

    s3 = s3 or S3Options.from_env()
    data_uri, cfg = prepare_data(cfg)
    check_readable(data_uri, s3)
    check_writable(cfg.out, s3)
    manifest = load_dataset(data_uri, s3)
    t0 = time.perf_counter()
    logger.info("data set %s: %d images; output %s", data_uri, len(manifest), cfg.out)

    blocks = max(1, min(64, len(manifest) // cfg.load_batch_size))
    # Split here: from_pandas(override_num_blocks=) hands ndarrays to Ray with pandas 3.
    chunks = [manifest.iloc[idx] for idx in np.array_split(np.arange(len(manifest)), blocks)]
    ds = ray.data.from_pandas(chunks)
    loaded = (
        ds.map_batches(
            LoadImages,
            fn_constructor_kwargs={"size": (cfg.image_size, cfg.image_size), "s3": s3},
            batch_size=cfg.load_batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
            # Fractional CPUs so decode actors never starve the read tasks on a 2-CPU box.
            num_cpus=0.5,
        )
        .map_batches(
            MaskToPatchLabels,
            fn_constructor_kwargs={"grid": cfg.grid, "threshold": cfg.coverage_threshold},
            batch_size=cfg.load_batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=2),
            num_cpus=0.5,
        )
        .materialize()
    )
    load_s = time.perf_counter() - t0

    fs, out_path = resolve(cfg.out, s3)
    errors = loaded.map_batches(error_records, batch_size=None).materialize()
    n_errors = errors.count()
    # Ray writes no file for zero rows: clear old records first so errors/ is always current.
    delete(join(cfg.out, "errors"), s3)
    if n_errors:
        errors.write_parquet(posixpath.join(out_path, "errors"), filesystem=fs)
    else:  # an empty shard with the schema, so readers of errors/ always find a table
        write_bytes(join(cfg.out, "errors", "empty.parquet"), _empty_errors_parquet(), s3)
    ok = loaded.filter(expr="error_type == ''")
    meta_cols = [c for c in manifest.columns] + ["patch_labels"]
    ok.select_columns(meta_cols).write_parquet(
        posixpath.join(out_path, "samples"), filesystem=fs, mode=ray.data.SaveMode.OVERWRITE
    )

    rows = ok.select_columns(["id", "patch_labels"]).take_all()
    from abs_ray.ops.label_csv import PatchLabel, format_patch_label_csv

    labels = [PatchLabel(r["id"], _grid_from_string(r["patch_labels"], cfg.grid)) for r in rows]
    write_text(join(cfg.out, "patch_labels.csv"), format_patch_label_csv(labels), s3)

    summary = {
        "code_version": code_version(),
        "config": dataclasses.asdict(dataclasses.replace(cfg, data=data_uri)),
        "storage": s3.public(),
        "counts": {"input": len(manifest), "ok": len(rows), "errors": n_errors},
        "seconds": {"labels": round(load_s, 2)},
        "images_per_s": {"labels": round(len(manifest) / max(load_s, 1e-9), 1)},
        "outputs": {
            "samples": join(cfg.out, "samples"),
            "errors": join(cfg.out, "errors"),
            "patch_labels": join(cfg.out, "patch_labels.csv"),
        },
    }
    if "preview" in cfg.stages:
        preview = ok.limit(max(cfg.preview_samples * 4, 32)).take_all()
        png = swap_preview(preview, cfg)
        write_bytes(join(cfg.out, "swap_preview.png"), png, s3)
        summary["outputs"]["swap_preview"] = join(cfg.out, "swap_preview.png")
    write_text(join(cfg.out, "manifest.json"), json.dumps(summary, indent=2, sort_keys=True), s3)
    return summary


def _empty_errors_parquet() -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: pa.array([], pa.string()) for c in ERROR_RECORD_COLUMNS})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _grid_from_string(mask: str, grid: int):
    import torch

    return torch.tensor([c == "1" for c in mask], dtype=torch.float32).reshape(grid, grid)


def swap_preview(rows: list[dict], cfg: PipelineConfig) -> bytes:
    """Composite swaps for a few loaded rows (true masks, mean-colour fill) → PNG sheet.

    Sheet rows: input, completed background (mean fill of the dilated mask), swapped sample.
    """
    import torch

    from abs_ray.io import encode_png
    from abs_ray.ops import SwapConfig, dilate_mask, fill_mean, sample_swap_params, swap_backgrounds

    if not rows:
        raise ConfigError("no image loaded without error: nothing to preview")
    images = (
        torch.from_numpy(np.stack([r["image"] for r in rows])).permute(0, 3, 1, 2).float() / 255
    )
    alpha = torch.from_numpy(np.stack([r["mask"] for r in rows])).float().unsqueeze(1) / 255
    labels = torch.tensor([int(r["label"]) for r in rows])
    backgrounds = fill_mean(images, dilate_mask(alpha, max(1, cfg.image_size // 64)))
    scale = cfg.image_size / 224
    swap_cfg = SwapConfig(translate=max(1, round(32 * scale)))
    gen = torch.Generator().manual_seed(cfg.seed)
    n = min(cfg.preview_samples, len(rows))
    params = sample_swap_params(alpha[:n], labels[:n], labels, swap_cfg, gen)
    swapped, _ = swap_backgrounds(images[:n], alpha[:n], backgrounds, params)
    sheet = torch.cat(
        [torch.cat(list(t), dim=2) for t in (images[:n], backgrounds[:n], swapped)], dim=1
    )
    return encode_png((sheet.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
