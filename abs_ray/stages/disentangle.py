"""Ray Data stages of ``disentangle``: detector → masks → inpainting → encoding.

Each stage is a callable on ``dict[str, np.ndarray]`` batches. Model stages are classes that
load their model once in ``__init__`` (one per actor) and run under ``torch.inference_mode``;
numpy ↔ tensor conversion happens only at their edges. Rows that failed earlier (``error_type``
set) pass through untouched; a row that fails here gets ``error_stage``/``error_type``/
``error_message`` and the rest of its batch goes on.

Together the detector and inpainting stages compute exactly what
:func:`abs_ray.models.disentangle` computes (a test checks that), split in two so that each
has its own actor pool, batch size and resources.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from abs_ray.devices import resolve_device
from abs_ray.errors import AbsRayError
from abs_ray.io import S3Options, encode_png
from abs_ray.stages.load import TIMING_PREFIX

if TYPE_CHECKING:  # torch is imported where a model runs: task workers that only decode,
    import torch  # encode or read true masks never pay for it.

logger = logging.getLogger(__name__)


def _ok_rows(batch: dict[str, np.ndarray]) -> np.ndarray:
    return np.flatnonzero(np.asarray(batch["error_type"]).astype(str) == "")


def _mark_error(batch: dict[str, np.ndarray], i: int, stage: str, exc: BaseException) -> None:
    for key in ("error_stage", "error_type", "error_message"):
        batch[key] = np.asarray(batch[key], dtype=object)
    batch["error_stage"][i] = stage
    batch["error_type"][i] = type(exc).__name__
    batch["error_message"][i] = f"{batch['image_uri'][i]}: {exc}"
    logger.warning("%s failed on %s: %s", stage, batch["image_uri"][i], exc)


def _run_rows(
    batch: dict[str, np.ndarray], stage: str, fn: Callable[[np.ndarray], None]
) -> dict[str, np.ndarray]:
    """Apply ``fn(row_indices)`` to the batch's good rows; on failure retry row by row.

    Adds ``t_<stage>``: the stage's time shared among the rows it processed (the rows still
    good when it started), NaN for the rows that had failed before, so that the writer's
    rates count only rows that went through the stage.
    """
    start = time.perf_counter()
    rows = _ok_rows(batch)
    if len(rows):
        try:
            fn(rows)
        except (AbsRayError, RuntimeError, ValueError) as exc:
            logger.info("%s: batch failed (%s); retrying row by row", stage, exc)
            for i in rows:
                try:
                    fn(np.array([i]))
                except (AbsRayError, RuntimeError, ValueError) as row_exc:
                    _mark_error(batch, int(i), stage, row_exc)
    timing = np.full(len(batch["image_uri"]), np.nan)
    timing[rows] = (time.perf_counter() - start) / max(1, len(rows))
    batch[TIMING_PREFIX + stage] = timing
    return batch


def _to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) float in [0, 1] on ``device``."""
    from abs_ray.ops.convert import to_float_chw

    return to_float_chw(images, device)


#: What the ``detector`` column of every output row says for the zero-shot saliency source.
SALIENCY_DETECTOR = "saliency (zero-shot, untrained)"


class DetectPatches:
    """Actor stage: images → the detector's ``P(background)`` patch grid.

    Args:
        checkpoint: URI of a detector checkpoint (:func:`abs_ray.models.save_detector`);
            None with ``saliency``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        s3: S3 settings for an ``s3://`` checkpoint.
        saliency: instead of a checkpoint, the arguments of the zero-shot
            :class:`~abs_ray.models.saliency.BorderContrastSaliency` (``grid``,
            ``image_size``): no training, masks of whatever contrasts with the image border.

    Adds ``prob``: (B, G, G) float32 in [0, 1] (zeros for failed rows).

    Raises:
        ConfigError: neither or both of ``checkpoint`` and ``saliency``.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "auto",
        s3: S3Options | None = None,
        saliency: dict | None = None,
    ) -> None:
        from abs_ray.errors import ConfigError

        if (checkpoint is None) == (saliency is None):
            raise ConfigError("DetectPatches needs either a checkpoint or saliency settings")
        self.device = resolve_device(device)
        if saliency is not None:
            from abs_ray.models.saliency import BorderContrastSaliency

            self.model = BorderContrastSaliency(**saliency).to(self.device).eval()
            self.grid = self.model.grid
        else:
            from abs_ray.models import load_detector

            self.model = load_detector(checkpoint, device=self.device, s3=s3)
            self.grid = self.model.config.grid

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        n = len(batch["image_uri"])
        prob = np.zeros((n, self.grid, self.grid), np.float32)

        def detect(rows: np.ndarray) -> None:
            with torch.inference_mode():
                x = _to_tensor(batch["image"][rows], self.device)
                prob[rows] = torch.sigmoid(self.model(x)).float().cpu().numpy()

        batch = _run_rows(dict(batch), "detect", detect)
        batch["prob"] = prob
        return batch


def masks_from_truth(batch: dict[str, np.ndarray], grid: int) -> dict[str, np.ndarray]:
    """Task stage for ``mask_source="truth"`` (the oracle): true masks instead of a detector.

    Adds ``prob`` (B, G, G) = 1 − foreground coverage per patch (so outputs keep one schema);
    rows without a ``mask_uri`` fail with a :class:`~abs_ray.errors.DatasetError`.
    :class:`InpaintBackgrounds` then uses the pixel ``mask`` as the tight alpha and the hole.
    """
    from abs_ray.errors import ConfigError, DatasetError

    n = len(batch["image_uri"])
    prob = np.ones((n, grid, grid), np.float32)
    uris = batch.get("mask_uri", np.full(n, None, dtype=object))

    def cover(rows: np.ndarray) -> None:
        for i in rows:
            if not isinstance(uris[i], str) or not uris[i]:
                raise DatasetError("no true mask (mask_uri) for this image")
        mask = np.asarray(batch["mask"][rows], np.float32) / 255
        m, h, w = mask.shape
        if h % grid or w % grid:
            raise ConfigError(f"grid {grid} does not divide the mask size {h}x{w}")
        # abs_ray.ops.patch_coverage in numpy: this task stays free of torch.
        coverage = mask.reshape(m, grid, h // grid, grid, w // grid).mean(axis=(2, 4))
        prob[rows] = 1 - coverage

    batch = _run_rows(dict(batch), "truth", cover)
    batch["prob"] = prob
    return batch


class InpaintBackgrounds:
    """Actor stage: images + patch grids → tight alpha and the inpainted background.

    Args:
        inpainter: registered inpainter name (see :func:`abs_ray.models.create_inpainter`).
        inpainter_kwargs: its arguments (e.g. ``{"dilate": 3}``).
        tight: ``P(background)`` below which a patch is tight foreground (cut out).
        loose: ``P(background)`` below which a patch is removed and inpainted.
        device: ``"auto"``, ``"cpu"``, ...
        encode: also run :func:`encode_outputs` on the result, in this actor: the pipeline
            does, so raw pixels never travel to another stage and no extra task runs.

    Adds ``alpha`` (B, H, W) uint8 in {0, 255} and ``background`` (B, H, W, 3) uint8 (or, with
    ``encode``, the columns of :func:`encode_outputs` instead of the pixels). When the
    batch carries a true pixel ``mask`` (B, H, W) uint8 (``mask_source="truth"``), it is used
    as the tight alpha and as the hole instead of the thresholded patch grid.
    """

    def __init__(
        self,
        inpainter: str,
        inpainter_kwargs: dict | None = None,
        tight: float = 0.5,
        loose: float = 0.9,
        device: str = "auto",
        encode: bool = False,
    ) -> None:
        from abs_ray.models import create_inpainter
        from abs_ray.models.inpainters import runtime_kwargs

        self.device = resolve_device(device)
        kwargs = runtime_kwargs(inpainter, inpainter_kwargs, device=str(self.device))
        self.inpainter = create_inpainter(inpainter, **kwargs)
        self.tight, self.loose = tight, loose
        self.encode = encode

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from abs_ray.ops import masks_from_background_prob
        from abs_ray.ops.convert import to_uint8_hwc

        images = batch["image"]
        n, h, w = images.shape[:3]
        alpha = np.zeros((n, h, w), np.uint8)
        background = np.zeros((n, h, w, 3), np.uint8)

        def inpaint(rows: np.ndarray) -> None:
            with torch.inference_mode():
                x = _to_tensor(images[rows], self.device)
                if "mask" in batch:  # true masks (oracle): the pixel mask is alpha and hole
                    tight = torch.from_numpy(np.ascontiguousarray(batch["mask"][rows])).to(
                        self.device
                    )
                    tight = (tight[:, None] > 127).float()
                    loose = tight
                else:
                    prob = torch.from_numpy(np.ascontiguousarray(batch["prob"][rows])).to(
                        self.device
                    )
                    tight, loose = masks_from_background_prob(
                        prob, (h, w), tight=self.tight, loose=self.loose
                    )
                bg = self.inpainter(x, loose)
            alpha[rows] = to_uint8_hwc(tight)[..., 0].cpu().numpy()
            background[rows] = to_uint8_hwc(bg).cpu().numpy()

        batch = _run_rows(dict(batch), "inpaint", inpaint)
        batch["alpha"], batch["background"] = alpha, background
        return encode_outputs(batch) if self.encode else batch


def encode_outputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Task stage: pixels → PNG bytes; drops the raw arrays.

    Adds ``foreground_png`` (RGBA: the image with the tight alpha), ``background_png`` (RGB),
    ``patch_prob`` (G² float32, row-major ``P(background)``), ``height``/``width`` and
    ``foreground_fraction`` (the share of pixels in the tight alpha: 0 means the detector found
    no object, and a swap would paste nothing).

    >>> b = {"image_uri": np.array(["x"]), "error_type": np.array([""]),
    ...      "error_stage": np.array([""]), "error_message": np.array([""]),
    ...      "image": np.zeros((1, 4, 4, 3), np.uint8), "alpha": np.zeros((1, 4, 4), np.uint8),
    ...      "background": np.zeros((1, 4, 4, 3), np.uint8), "prob": np.zeros((1, 2, 2), np.float32)}
    >>> out = encode_outputs(b)
    >>> out["foreground_png"][0][:4], out["patch_prob"].shape
    (b'\\x89PNG', (1, 4))
    """
    images = batch["image"]
    n, h, w = images.shape[:3]
    fg = np.full(n, b"", dtype=object)
    bg = np.full(n, b"", dtype=object)

    def encode(rows: np.ndarray) -> None:
        for i in rows:
            fg[i] = encode_png(np.concatenate([images[i], batch["alpha"][i][..., None]], axis=-1))
            bg[i] = encode_png(batch["background"][i])

    out = _run_rows(dict(batch), "encode", encode)
    for key in ("image", "mask", "alpha", "background"):
        out.pop(key, None)
    prob = out.pop("prob")
    out["patch_prob"] = prob.reshape(n, -1).astype(np.float32)
    out["foreground_png"], out["background_png"] = fg, bg
    out["height"], out["width"] = np.full(n, h), np.full(n, w)
    out["foreground_fraction"] = (
        (np.asarray(batch["alpha"]).reshape(n, -1) > 0).mean(axis=1).astype(np.float32)
    )
    return out
