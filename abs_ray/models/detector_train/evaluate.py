"""Detector evaluation: ``P(background)`` of uint8 images, balanced patch accuracy, mask IoU."""

from __future__ import annotations

import torch

from abs_ray.errors import ConfigError
from abs_ray.models.detector import Detector
from abs_ray.models.detector_train.labels import LabelledImages
from abs_ray.ops.metrics import balanced_accuracy, mask_iou
from abs_ray.ops.patches import upsample_patch_grid

__all__ = [
    "IOU_REPORT_THRESHOLDS",
    "describe_metrics",
    "evaluate_detector",
    "predict_background_prob",
    "to_float",
]

#: Tight thresholds at which :func:`evaluate_detector` also reports mask IoU.
IOU_REPORT_THRESHOLDS: tuple[float, ...] = (0.33, 0.5)


def describe_metrics(metrics: dict) -> str:
    """One split's headline figures from :func:`evaluate_detector`, for a log line.

    >>> describe_metrics({"n": 80.0, "balanced_patch_accuracy": 0.98424, "mask_iou": 0.7869})
    'balanced patch accuracy 0.984, mask IoU 0.787 (80 images)'
    >>> describe_metrics({"n": 8.0, "balanced_patch_accuracy": 0.5})
    'balanced patch accuracy 0.500 (8 images)'
    """
    parts = [f"balanced patch accuracy {metrics['balanced_patch_accuracy']:.3f}"]
    if metrics.get("mask_iou") is not None:
        parts.append(f"mask IoU {metrics['mask_iou']:.3f}")
    return f"{', '.join(parts)} ({int(metrics['n'])} images)"


def to_float(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``(N, 3, S, S)`` uint8 -> float in ``[0, 1]`` on ``device``."""
    return images_u8.to(device).float().div_(255.0)


@torch.no_grad()
def predict_background_prob(
    model: Detector, images_u8: torch.Tensor, device: torch.device | str, batch_size: int = 64
) -> torch.Tensor:
    """``P(background)`` of uint8 images, batched, in eval mode.

    Args:
        model: the detector.
        images_u8: ``(N, 3, S, S)`` uint8 RGB.
        device: where to run.
        batch_size: images per forward pass.

    Returns:
        ``(N, G, G)`` float32 in ``[0, 1]`` on CPU.
    """
    model.eval()
    device = torch.device(device)
    out = [
        model.background_prob(to_float(images_u8[i : i + batch_size], device)).cpu()
        for i in range(0, images_u8.shape[0], batch_size)
    ]
    return torch.cat(out)


def evaluate_detector(
    model: Detector,
    data: LabelledImages,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    tight: float | None = None,
) -> dict[str, float]:
    """Balanced patch accuracy and, where true masks exist, tight-mask IoU.

    Args:
        model: the detector.
        data: images with patch labels (and optionally true masks) at the detector's size.
        device: where to run.
        batch_size: images per forward pass.
        tight: tight threshold (foreground where ``p < tight``); default ``model.config.tight``.

    Returns:
        ``{"n": N, "balanced_patch_accuracy": ..., "patch_accuracy": ...}`` plus
        ``"mask_iou"`` (mean over images), ``"mask_iou_median"`` and ``"mask_iou_at_<t>"``
        for each ``t`` in :data:`IOU_REPORT_THRESHOLDS` when ``data.masks`` exists. Balanced
        accuracy pools all patches (positives = background patches, predicted at
        ``p >= 0.5``).

    Raises:
        ConfigError: empty data.
    """
    if len(data) == 0:
        raise ConfigError("evaluate_detector needs at least one image, got 0")
    tight = model.config.tight if tight is None else tight
    prob = predict_background_prob(model, data.images, device, batch_size)
    target_bg = data.labels < 0.5
    pred_bg = prob >= 0.5
    out = {
        "n": float(len(data)),
        "balanced_patch_accuracy": balanced_accuracy(pred_bg, target_bg),
        "patch_accuracy": float((pred_bg == target_bg).float().mean()),
    }
    if data.masks is not None:
        s = data.images.shape[-1]
        pred_fg = upsample_patch_grid((prob < tight).float(), (s, s)) > 0.5
        iou = mask_iou(pred_fg, data.masks)
        out["mask_iou"] = float(iou.mean())
        out["mask_iou_median"] = float(iou.median())
        for t in IOU_REPORT_THRESHOLDS:  # the paper's Waterbirds and default tight thresholds
            fg = upsample_patch_grid((prob < t).float(), (s, s)) > 0.5
            out[f"mask_iou_at_{t:g}"] = float(mask_iou(fg, data.masks).mean())
    return out
