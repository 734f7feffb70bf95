"""Patch labels from masks, as a Ray Data batch function."""

from __future__ import annotations

import numpy as np
import torch

from abs_ray.ops.patches import mask_to_patch_labels


class MaskToPatchLabels:
    """Batch callable: ``mask`` (B, H, W) uint8 {0, 255} → ``patch_labels`` G²-character strings.

    The strings are the published ``info,mask`` format (row-major, ``1`` = foreground). Rows
    that failed to load (``error_type`` set) get an empty string.

    Args:
        grid: patches per side (must divide the mask size).
        threshold: foreground coverage at or above which a patch is foreground.

    Example:
        >>> m = np.zeros((1, 4, 4), np.uint8); m[0, :2, :2] = 255
        >>> MaskToPatchLabels(grid=2)({"mask": m, "error_type": np.array([""])})["patch_labels"].tolist()
        ['1000']
    """

    def __init__(self, grid: int, threshold: float = 0.25) -> None:
        self.grid = grid
        self.threshold = threshold

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        mask = torch.from_numpy(np.ascontiguousarray(batch["mask"])).float().div_(255.0)
        labels = mask_to_patch_labels(mask, self.grid, self.threshold).flatten(1).to(torch.uint8)
        ok = np.asarray(batch["error_type"]).astype(str) == ""
        chars = np.where(labels.numpy() > 0, "1", "0")
        strings = np.array(
            ["".join(row) if good else "" for row, good in zip(chars, ok, strict=True)],
            dtype=object,
        )
        out = dict(batch)
        out["patch_labels"] = strings
        return out
