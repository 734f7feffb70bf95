"""The audit's Ray Data callables: decode a row and its partners' backgrounds, then predict.

Rows come from :func:`abs_ray.audit.run.audit_table`: the data set's ``foreground_png``
(RGBA: image and tight alpha) and ``background_png``, and for each mixed variant ``v`` the
partner's background ``bg_<v>_png`` (null where the row has no partner) and ``valid_<v>``.

- :func:`decode_audit_rows` (CPU tasks): PNGs → fixed-size uint8 arrays;
- :class:`AuditPredictor` (an actor pool): loads the model once, builds the variants on its
  device with :func:`abs_ray.audit.variants.composite_variants` and returns ``pred_<v>`` per
  variant (``-1`` for invalid rows, which are not predicted).

Both run without Ray on a hand-made batch (what the in-process path and the tests do).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from abs_ray.audit.models import ModelRef, load_model
from abs_ray.audit.variants import MIXED_VARIANTS, VARIANTS, composite_variants
from abs_ray.console import NULL_PROGRESS, ProgressSink
from abs_ray.errors import AbsRayError
from abs_ray.io import decode_image
from abs_ray.ops.convert import to_float_chw, to_uint8_hwc

logger = logging.getLogger(__name__)

__all__ = ["PASSTHROUGH", "AuditPredictor", "decode_audit_rows"]

#: Columns carried from the table to the predictions unchanged.
PASSTHROUGH: tuple[str, ...] = ("id", "label", "split", "group")


def _resized(pixels: np.ndarray, size: int, mask: bool) -> np.ndarray:
    if pixels.shape[0] == size and pixels.shape[1] == size:
        return pixels
    from PIL import Image

    img = Image.fromarray(pixels)
    return np.asarray(img.resize((size, size), Image.NEAREST if mask else Image.BILINEAR))


def _decode(data: object, size: int) -> np.ndarray:
    """An RGB PNG at ``size`` (zeros for a missing partner)."""
    if data is None or (isinstance(data, bytes | bytearray) and not data):
        return np.zeros((size, size, 3), np.uint8)
    return _resized(decode_image(bytes(data)), size, mask=False)


def decode_audit_rows(batch: dict[str, np.ndarray], *, size: int) -> dict[str, np.ndarray]:
    """Decode a batch of audit rows (a Ray Data batch function).

    The alpha is the foreground PNG's, made hard at 128 as training reads it
    (:func:`abs_ray.train.data.decode_rows`). A row whose PNG cannot be decoded is dropped
    with a warning (the run reports how many rows were predicted).

    Args:
        batch: numpy columns ``foreground_png``, ``background_png``, ``bg_<v>_png`` and
            ``valid_<v>`` for each mixed variant, and :data:`PASSTHROUGH`.
        size: output side (other sizes are resized: bilinear, the alpha nearest).

    Returns:
        :data:`PASSTHROUGH` columns, ``valid_<v>``, ``image`` ``(B, S, S, 3)``, ``alpha``
        ``(B, S, S)`` in ``{0, 255}``, ``background`` and ``bg_<v>`` ``(B, S, S, 3)``, uint8.
    """
    names = ["image", "alpha", "background", *(f"bg_{v}" for v in MIXED_VARIANTS)]
    arrays: dict[str, list[np.ndarray]] = {k: [] for k in names}
    keep = []
    for i in range(len(batch["id"])):
        try:
            rgba = decode_image(bytes(batch["foreground_png"][i]), alpha=True)
            row = {
                "image": _resized(np.ascontiguousarray(rgba[..., :3]), size, mask=False),
                "alpha": _resized(
                    np.where(rgba[..., 3] >= 128, 255, 0).astype(np.uint8), size, True
                ),
                "background": _decode(batch["background_png"][i], size),
                **{f"bg_{v}": _decode(batch[f"bg_{v}_png"][i], size) for v in MIXED_VARIANTS},
            }
        except (AbsRayError, OSError) as exc:
            logger.warning("audit: dropping row %s: %s", batch["id"][i], exc)
            continue
        keep.append(i)
        for k in names:
            arrays[k].append(row[k])
    index = np.asarray(keep, dtype=np.int64)
    out = {c: np.asarray(batch[c])[index] for c in PASSTHROUGH if c in batch}
    out.update({f"valid_{v}": np.asarray(batch[f"valid_{v}"], bool)[index] for v in MIXED_VARIANTS})
    for k in names:
        shape = (size, size) if k == "alpha" else (size, size, 3)
        out[k] = np.stack(arrays[k]) if arrays[k] else np.zeros((0, *shape), np.uint8)
    return out


class AuditPredictor:
    """Build every variant of a decoded batch on the model's device and predict it.

    Args:
        model: the classifier (:func:`abs_ray.audit.models.resolve_model`).
        device: ``auto`` (a GPU when this actor sees one), ``cpu``, ``cuda``, ...
        progress: a progress sink; each batch adds its rows under ``"audit"``.

    Raises:
        ConfigError: the model does not load or the device is invalid.
    """

    def __init__(
        self, model: ModelRef, device: str = "auto", progress: ProgressSink | None = None
    ) -> None:
        self.predictor = load_model(model, device)
        self.device = self.predictor.device
        self.progress = progress or NULL_PROGRESS

    def variants(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """The variants of a decoded batch: ``{variant: (B, H, W, 3) uint8}`` on the device."""
        images = to_float_chw(batch["image"], self.device)
        alpha = to_float_chw(batch["alpha"], self.device).contiguous()
        backgrounds = to_float_chw(batch["background"], self.device)
        partners = {v: to_float_chw(batch[f"bg_{v}"], self.device) for v in MIXED_VARIANTS}
        valid = {v: torch.as_tensor(batch[f"valid_{v}"]) for v in MIXED_VARIANTS}
        built = composite_variants(images, alpha, backgrounds.contiguous(), partners, valid)
        # Back to uint8 as the model takes its input: every variant is a real 8-bit image.
        return {v: to_uint8_hwc(x) for v, x in built.items()}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["image"])
        out = {c: batch[c] for c in PASSTHROUGH if c in batch}
        valid = {v: np.ones(n, bool) for v in VARIANTS}
        valid.update({v: np.asarray(batch[f"valid_{v}"], bool) for v in MIXED_VARIANTS})
        if n:
            images = self.variants(batch)
        for v in VARIANTS:
            pred = np.full(n, -1, dtype=np.int64)
            rows = np.flatnonzero(valid[v])
            if len(rows):
                index = torch.as_tensor(rows, device=self.device)
                scores = self.predictor(images[v].index_select(0, index))
                pred[rows] = scores.argmax(dim=1).cpu().numpy()
            out[f"pred_{v}"] = pred
            out[f"valid_{v}"] = valid[v]
        self.progress.add("audit", n)
        return out
