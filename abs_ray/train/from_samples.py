"""A disentangled data set written from generated samples, without detector or inpainter.

Tests, the demo and the benchmarks use it to get a set in the pipeline's schema (see
:mod:`abs_ray.train.data`) straight from :func:`abs_ray.data.generate_synthetic` (or any
samples with an image, a true mask and a clean background): the true or patch-coarsened mask
as the foreground alpha, the clean background as a perfect inpainting, and the true mask
inline (``mask_png``) for ``oracle``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from abs_ray.errors import ConfigError
from abs_ray.io import S3Options, encode_png, join, write_bytes, write_text

__all__ = ["write_disentangled_from_samples"]


def _patch_alpha(mask: np.ndarray, grid: int, coverage: float) -> np.ndarray:
    import torch

    from abs_ray.ops import mask_to_patch_labels, to_uint8_hwc, upsample_patch_grid

    m = torch.from_numpy(mask >= 128).float()[None, None]
    labels = mask_to_patch_labels(m, grid, coverage)
    up = upsample_patch_grid(labels, tuple(mask.shape))
    return to_uint8_hwc(up)[0, ..., 0].numpy()


def write_disentangled_from_samples(
    samples: Iterable[Any],
    out: str,
    s3: S3Options | None = None,
    *,
    alpha: str = "true",
    grid: int = 8,
    coverage: float = 0.25,
    rows_per_file: int = 256,
) -> dict[str, Any]:
    """Write generated samples as a disentangled data set, without detector or inpainter.

    Each :class:`~abs_ray.data.Sample` (e.g. from :func:`abs_ray.data.generate_synthetic`)
    becomes one row of the pipeline's schema: ``foreground_png`` = the image with ``alpha``
    as its alpha channel, ``background_png`` = the sample's clean background (an oracle
    inpainting), plus ``mask_png`` = the true mask, which ``oracle`` training reads.

    Args:
        samples: samples with ``image``, ``mask`` and ``background``.
        out: output folder; rows go to ``<out>/data/part-NNNNN.parquet`` and a small
            ``<out>/manifest.json`` is written.
        s3: S3 settings.
        alpha: ``"true"`` (the true mask) or ``"patch"``: the true mask coarsened to a
            ``grid x grid`` patch grid at ``coverage`` (what a perfect patch detector gives).
        grid: patch grid for ``alpha="patch"``.
        coverage: foreground coverage threshold for ``alpha="patch"``.
        rows_per_file: rows per Parquet file.

    Returns:
        The summary written to ``manifest.json`` (counts per split, alpha mode).

    Raises:
        ConfigError: unknown ``alpha``, or a sample without a background.
    """
    if alpha not in ("true", "patch"):
        raise ConfigError(f"alpha must be 'true' or 'patch', got {alpha!r}")
    detector = "true-mask" if alpha == "true" else f"patch-grid-{grid}-coverage-{coverage}"
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    part = 0

    def flush() -> None:
        nonlocal part
        if rows:
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(rows), buf)
            write_bytes(join(out, "data", f"part-{part:05d}.parquet"), buf.getvalue(), s3)
            part += 1
            rows.clear()

    for s in samples:
        if s.background is None:
            raise ConfigError(f"sample {s.name!r} has no background")
        a = s.mask if alpha == "true" else _patch_alpha(s.mask, grid, coverage)
        h, w = s.image.shape[:2]
        rows.append(
            {
                "id": s.name,
                "image_uri": "",
                "label": int(s.y),
                "split": s.split,
                "group": int(s.group),
                "place": int(s.place),
                "mask_uri": None,
                "foreground_png": encode_png(np.concatenate([s.image, a[..., None]], axis=-1)),
                "background_png": encode_png(s.background),
                "mask_png": encode_png(s.mask),
                "patch_prob": None,
                "detector": detector,
                "inpainter": "clean-background",
                "code_version": "",
                "height": h,
                "width": w,
            }
        )
        counts[s.split] = counts.get(s.split, 0) + 1
        if len(rows) >= rows_per_file:
            flush()
    flush()
    summary = {
        "generator": "write_disentangled_from_samples",
        "alpha": alpha,
        "detector_checkpoint": detector,
        "counts": counts,
    }
    write_text(join(out, "manifest.json"), json.dumps(summary, indent=2, sort_keys=True), s3)
    return summary
