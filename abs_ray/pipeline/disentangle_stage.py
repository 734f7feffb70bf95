"""The disentangle stage: its geometry, its Ray Data stream and the stage that writes it."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from abs_ray.devices import cluster_gpus
from abs_ray.errors import ConfigError
from abs_ray.io import S3Options, exists, join, write_bytes
from abs_ray.pipeline.config import PipelineConfig, PoolConfig
from abs_ray.pipeline.preview import swap_preview
from abs_ray.pipeline.report import rates_text
from abs_ray.pipeline.summary import (
    MIN_TIMED_SECONDS,
    _by_type_text,
    errors_by_type,
    mask_summary,
    stage_rates,
)

logger = logging.getLogger(__name__)


def stage_geometry(cfg: PipelineConfig, checkpoint: str | None, s3: S3Options):
    """``(image_size, grid, tight, loose)`` the disentangle stage runs at.

    A detector checkpoint defines them (a given ``cfg.image_size``/``cfg.grid`` must match);
    otherwise ``cfg.detector``'s. ``cfg.tight``/``cfg.loose`` override the thresholds.

    Raises:
        ConfigError: an explicit image size or grid differs from the checkpoint's, or the
            thresholds are inconsistent.
        StorageError / WeightsMismatchError: the checkpoint cannot be read.
    """
    if cfg.mask_source == "detector" and checkpoint:
        from abs_ray.models import load_detector

        detector = load_detector(checkpoint, s3=s3)
        c = detector.config
        for name, flag in (("image_size", "--image_size"), ("grid", "--grid")):
            asked = getattr(cfg, name)
            if asked is not None and asked != getattr(c, name):
                raise ConfigError(
                    f"{flag} {asked} differs from the detector checkpoint's {getattr(c, name)} "
                    f"({checkpoint}: {c.image_size} px, grid {c.grid}); leave it out to use "
                    "the checkpoint's, or train a new detector"
                )
        size, grid, tight, loose = c.image_size, c.grid, c.tight, c.loose
    else:
        t = cfg.detector
        size, grid, tight, loose = t.image_size, t.grid, t.tight, t.loose
    tight = cfg.tight if cfg.tight is not None else tight
    loose = cfg.loose if cfg.loose is not None else loose
    if tight > loose:
        raise ConfigError(f"tight threshold {tight} must not exceed loose threshold {loose}")
    return size, grid, tight, loose


#: Progress stages of the disentangle stream, in order (one line each when redirected).
STREAM_STAGES = ("load", "detect", "inpaint")


def _count_rows(batch, sink, stage: str):
    """Pass ``batch`` through, reporting its rows to ``sink`` (a progress sink)."""
    if hasattr(batch, "num_rows"):  # pyarrow
        n = batch.num_rows
    elif hasattr(batch, "columns"):  # pandas
        n = len(batch)
    else:  # dict of arrays
        n = len(next(iter(batch.values()))) if batch else 0
    sink.add(stage, n)
    return batch


def _counted(ds, sink, stage: str):
    """``ds`` with its rows counted into ``sink`` under ``stage`` (zero-copy, no CPU
    reserved: an operator that asked for one could wait forever behind the stage pools on a
    small machine); ``ds`` itself when there is no sink."""
    if sink is None:
        return ds
    return ds.map_batches(
        _count_rows,
        fn_kwargs={"sink": sink, "stage": stage},
        batch_size=None,  # whole blocks, as they come
        batch_format=None,
        zero_copy_batch=True,
        num_cpus=0,
    )


def _disentangle_stream(
    cfg: PipelineConfig, table, checkpoint, s3, size, grid, tight, loose, progress=None
):
    """The Ray Data stream of the disentangle stage, ready to write: decode → patch grid
    (detector, saliency or true masks) → inpaint + encode, for the rows of ``table``; each
    step's rows are reported to ``progress`` (a progress sink) under :data:`STREAM_STAGES`."""
    import ray

    from abs_ray.data.files import data_root
    from abs_ray.models.inpainters import inpainter_spec
    from abs_ray.stages import LoadImages
    from abs_ray.stages.disentangle import DetectPatches, InpaintBackgrounds, masks_from_truth

    truth, saliency = cfg.mask_source == "truth", cfg.mask_source == "saliency"
    has_gpu = cluster_gpus() > 0

    def gpus(pool: PoolConfig) -> float:
        return pool.num_gpus if pool.num_gpus is not None else (1.0 if has_gpu else 0.0)

    blocks = max(1, min(200, table.num_rows // cfg.load.batch_size))
    bounds = np.linspace(0, table.num_rows, blocks + 1).astype(int)
    chunks = [table.slice(a, b - a) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    ds = ray.data.from_arrow(chunks).map_batches(
        LoadImages(
            size=(size, size),
            s3=s3,
            max_pixels=cfg.max_pixels,
            masks=truth,
            root=data_root(cfg.data),  # links out of a local data set are refused per row
        ),
        batch_size=cfg.load.batch_size,
        num_cpus=cfg.load.num_cpus,
    )
    ds = _counted(ds, progress, "load")
    if truth:
        ds = ds.map_batches(
            masks_from_truth,
            fn_kwargs={"grid": grid},
            batch_size=cfg.load.batch_size,
            num_cpus=cfg.load.num_cpus,
        )
    else:
        source = (
            {"saliency": {"grid": grid, "image_size": size}}
            if saliency
            else {"checkpoint": checkpoint}
        )
        ds = ds.map_batches(
            DetectPatches,
            fn_constructor_kwargs={**source, "device": cfg.device, "s3": s3},
            batch_size=cfg.detect.batch_size,
            compute=ray.data.ActorPoolStrategy(
                min_size=cfg.detect.min_size, max_size=cfg.detect.max_size
            ),
            num_cpus=cfg.detect.num_cpus,
            num_gpus=gpus(cfg.detect),
        )
    ds = _counted(ds, progress, "detect")
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
        # Weight-free inpainters run on CPU; one that declares a model gets the GPU.
        num_gpus=gpus(cfg.inpaint) if inpainter_spec(cfg.inpainter).uses_gpu else 0.0,
    )
    return _counted(ds, progress, "inpaint")


def run_disentangle_stage(
    cfg: PipelineConfig,
    manifest,
    checkpoint: str | None,
    s3: S3Options,
    *,
    code_version: str,
    out: str | None = None,
    final_out: str | None = None,
    detector_label: str | None = None,
) -> dict:
    """Stream every image through decode → detect → inpaint + encode → write.

    Args:
        cfg: the run's config.
        manifest: the data set manifest.
        checkpoint: the detector to load (``mask_source="detector"``).
        s3: S3 settings.
        code_version: written in the ``code_version`` column of every row.
        out: where ``data/``, ``errors/`` and the preview go (default ``cfg.out``; the
            pipeline passes its attempt folder). Ids already in them are skipped.
        final_out: where they will be once committed (named in the returned ``outputs``).
        detector_label: the ``detector`` column of every row (default: ``checkpoint``).

    Returns:
        This stage's own ``counts``, ``errors_by_type``, ``masks``, ``processed_this_run``,
        ``seconds``, ``images_per_s``, ``rows_per_stage`` and ``outputs``.
    """
    from abs_ray.data import manifest_to_arrow

    out = out or cfg.out
    final_out = final_out or out
    if cfg.mask_source == "truth" and manifest["mask_uri"].isna().all():
        raise ConfigError("mask_source='truth' needs masks, but the data set has no mask_uri")
    size, grid, tight, loose = stage_geometry(cfg, checkpoint, s3)
    if detector_label is None:
        detector_label = _default_detector_label(cfg, checkpoint)

    todo = _todo(manifest, out, s3)
    table = manifest_to_arrow(todo)  # explicit types: no pd.NA, optional columns typed
    sink = _sink(cfg, table, out, s3, detector_label=detector_label, code_version=code_version)
    t0 = time.perf_counter()
    if len(todo):
        from abs_ray.console import RemoteProgress

        with RemoteProgress() as remote:
            for stage in STREAM_STAGES:
                remote.progress(stage, total=len(todo), unit="img")
            stream = _disentangle_stream(
                cfg, table, checkpoint, s3, size, grid, tight, loose, progress=remote.handle
            )
            stream.write_datasink(sink)
    wall = time.perf_counter() - t0

    tally = _tally(manifest, out, s3)
    seconds, rates = _timings(len(todo), wall, sink.result)
    outputs = _outputs(cfg, out, final_out, s3, ok=tally["counts"]["ok"])
    _log_result(tally, rates, wall, outputs, final_out)
    return {
        **tally,
        "processed_this_run": {
            "rows": len(todo),
            **{k: sink.result[k] for k in ("ok", "errors")},
        },
        "seconds": seconds,
        "images_per_s": rates,
        "rows_per_stage": dict(sink.result["rows"]),
        "outputs": outputs,
    }


def _default_detector_label(cfg: PipelineConfig, checkpoint: str | None) -> str | None:
    """The ``detector`` column when none is given: the mask source, or the checkpoint."""
    from abs_ray.stages.disentangle import SALIENCY_DETECTOR

    if cfg.mask_source == "truth":
        return "truth"
    return SALIENCY_DETECTOR if cfg.mask_source == "saliency" else checkpoint


def _todo(manifest, out: str, s3: S3Options):
    """The manifest rows whose id is in neither ``<out>/data`` nor ``<out>/errors`` yet."""
    from abs_ray.stages.sink import read_ids

    done = set(read_ids(join(out, "data"), s3)) | set(read_ids(join(out, "errors"), s3))
    todo = manifest[~manifest["id"].astype(str).isin(done)]
    if done:
        logger.info(
            "resume: %d of %d ids already written; %d to do", len(done), len(manifest), len(todo)
        )
    return todo


def _sink(cfg: PipelineConfig, table, out: str, s3: S3Options, *, detector_label, code_version):
    """The Parquet sink of ``data/`` and ``errors/``, with the run's constant columns."""
    from abs_ray.stages.sink import SplitParquetSink

    return SplitParquetSink(
        out,
        s3,
        constant_columns={
            "detector": detector_label,
            "mask_source": cfg.mask_source,
            "inpainter": json.dumps(
                {"name": cfg.inpainter, **cfg.inpainter_kwargs}, sort_keys=True
            ),
            "code_version": code_version,
        },
        rows_per_file=cfg.rows_per_file,
        column_types=dict(zip(table.schema.names, table.schema.types, strict=True)),
    )


def _tally(manifest, out: str, s3: S3Options) -> dict:
    """``counts``, ``errors_by_type`` and ``masks`` of what is in ``out`` (this run and any
    resumed one); writes an empty ``errors/`` when nothing failed."""
    from abs_ray.stages.sink import read_columns, unique_count, write_empty_errors

    written = read_columns(
        join(out, "data"), ("id", "foreground_fraction"), s3, drop_unreadable=False
    )
    ok_ids = written["id"]
    failed = read_columns(join(out, "errors"), ("id", "error_type"), s3, drop_unreadable=False)
    err_ids = failed["id"]
    if not err_ids and not exists(join(out, "errors"), s3):
        write_empty_errors(out, s3)
    counts = {"input": len(manifest), "ok": unique_count(ok_ids), "errors": unique_count(err_ids)}
    if len(ok_ids) != counts["ok"] or len(err_ids) != counts["errors"]:
        logger.error(
            "duplicate ids in the output: %d rows for %d ids",
            len(ok_ids) + len(err_ids),
            counts["ok"] + counts["errors"],
        )
    if counts["ok"] + counts["errors"] != counts["input"]:
        logger.error("counts do not add up: %s", counts)
    return {
        "counts": counts,
        "errors_by_type": errors_by_type(failed["error_type"]),
        "masks": mask_summary(written["foreground_fraction"]),
    }


def _timings(rows: int, wall: float, sink_result: dict) -> tuple[dict, dict]:
    """``(seconds, images_per_s)`` of the stream (``rows`` read in ``wall`` s) and its stages."""
    stage_seconds = sink_result["seconds"]
    seconds = {
        "disentangle_wall": round(wall, 2),
        **{k: round(v, 2) for k, v in stage_seconds.items()},
    }
    # The stream's rate is over the rows it read (every row of ``todo`` went through it).
    rates = {
        "disentangle": round(rows / wall, 2) if rows and wall >= MIN_TIMED_SECONDS else None,
        **stage_rates(stage_seconds, sink_result["rows"]),
    }
    return seconds, rates


def _outputs(cfg: PipelineConfig, out: str, final_out: str, s3: S3Options, *, ok: int) -> dict:
    """Writes the swap preview (when asked and something succeeded); the output URIs."""
    outputs = {
        "data": join(final_out, "data"),
        "errors": join(final_out, "errors"),
        "manifest": join(final_out, "manifest.json"),
    }
    if cfg.preview_samples and ok:
        write_bytes(
            join(out, "swap_preview.png"),
            swap_preview(out, cfg.preview_samples, cfg.seed, s3),
            s3,
        )
        outputs["swap_preview"] = join(final_out, "swap_preview.png")
    return outputs


def _log_result(tally: dict, rates: dict, wall: float, outputs: dict, final_out: str) -> None:
    counts = tally["counts"]
    logger.info(
        "disentangle: %d in, %d ok, %d errors in %.1f s; %s; output %s",
        counts["input"],
        counts["ok"],
        counts["errors"],
        wall,
        rates_text(rates),
        final_out,
    )
    if counts["errors"]:
        logger.warning(
            "%d of %d inputs failed, by type: %s (records in %s)",
            counts["errors"],
            counts["input"],
            _by_type_text(tally["errors_by_type"]),
            outputs["errors"],
        )
