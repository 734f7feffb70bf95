"""The mask source of the swap service: a trained detector, or the zero-shot saliency.

:func:`load_mask_source` loads what the settings name into a :class:`MaskSource` (the model
plus the thresholds and a JSON-able description for ``/v1/info``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from abs_ray.serve.config import ServiceConfig

__all__ = ["MaskSource", "load_mask_source"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class MaskSource:
    """The model that turns images into ``P(background)`` logits per patch.

    Attributes:
        model: ``(B, 3, S, S)`` in ``[0, 1]`` -> ``(B, G, G)`` logits, on the service device.
        kind: ``detector`` (a trained checkpoint) or ``saliency`` (zero-shot).
        image_size: ``S``.
        grid: ``G``.
        tight: tight-mask threshold used.
        loose: loose-mask threshold used.
        info: JSON-able description for ``/v1/info``.
    """

    model: nn.Module
    kind: str
    image_size: int
    grid: int
    tight: float
    loose: float
    info: dict[str, Any]


def load_mask_source(
    cfg: ServiceConfig, device: torch.device, pretrained: bool = True
) -> MaskSource:
    """Load the configured mask source (offline: both load without network).

    Args:
        cfg: service settings (``mask_source``, ``detector_checkpoint``, thresholds).
        device: where to put the model.
        pretrained: saliency features with ImageNet weights (False only for fast tests).

    Raises:
        ConfigError: inconsistent settings.
        StorageError: the checkpoint cannot be read.
        WeightsMismatchError: the checkpoint is not a detector checkpoint.
    """
    use_detector = cfg.mask_source == "detector" or (
        cfg.mask_source == "auto" and cfg.detector_checkpoint is not None
    )
    if use_detector:
        from abs_ray.models import load_detector

        detector = load_detector(cfg.detector_checkpoint, device=device)
        dcfg = detector.config
        tight = cfg.tight if cfg.tight is not None else dcfg.tight
        loose = cfg.loose if cfg.loose is not None else dcfg.loose
        meta = detector.meta if isinstance(detector.meta, dict) else {}
        info = {
            "kind": "detector",
            "trained": True,
            "checkpoint": cfg.detector_checkpoint,
            "backbone": dcfg.name,
            "grid": dcfg.grid,
            "image_size": dcfg.image_size,
            "tight": tight,
            "loose": loose,
            "label_source": meta.get("label_source"),
            "metrics": meta.get("metrics"),
        }
        return MaskSource(detector, "detector", dcfg.image_size, dcfg.grid, tight, loose, info)
    from abs_ray.models.saliency import BorderContrastSaliency

    model = BorderContrastSaliency(pretrained=pretrained).to(device).eval()
    tight = cfg.tight if cfg.tight is not None else 0.5
    loose = cfg.loose if cfg.loose is not None else 0.9
    info = {
        "kind": "saliency",
        "trained": False,
        "note": "zero-shot border-contrast saliency; set detector_checkpoint for a trained "
        "detector",
        **model.config,
        "tight": tight,
        "loose": loose,
    }
    logger.warning("no detector checkpoint configured: masks come from zero-shot saliency")
    return MaskSource(model, "saliency", model.image_size, model.grid, tight, loose, info)
