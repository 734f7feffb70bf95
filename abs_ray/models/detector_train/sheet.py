"""The mask sheet: a contact sheet of a detector's predictions for a person to look at."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from abs_ray.errors import ConfigError
from abs_ray.ops.patches import upsample_patch_grid

__all__ = ["SHEET_LEGEND", "mask_sheet"]

#: What the colours of :func:`mask_sheet` mean (drawn under the sheet by
#: :func:`abs_ray.io.captions.add_legend`); left tile per image: the overlay, right: the heat map.
SHEET_LEGEND = (
    ((150, 40, 40), "left: predicted background (darkened, red)"),
    ((0, 255, 0), "true mask outline"),
    ((255, 255, 255), "right: P(background) per patch, white = background"),
    ((0, 0, 0), "black = foreground"),
)


def mask_sheet(
    images: torch.Tensor,
    prob: torch.Tensor,
    masks: torch.Tensor | None = None,
    tight: float = 0.5,
    columns: int = 4,
) -> np.ndarray:
    """A contact sheet of predictions: per image, an overlay tile and a ``P(background)`` tile.

    Overlay: pixels outside the predicted tight foreground (``p >= tight``) are darkened and
    tinted red; the true mask's outline (when given) is drawn in green. Heat tile: ``P(bg)``
    per patch, white = background, black = foreground.

    Args:
        images: ``(N, 3, S, S)`` uint8 RGB.
        prob: ``(N, G, G)`` float ``P(background)`` in ``[0, 1]``.
        masks: ``(N, 1, S, S)`` bool true masks, or None.
        tight: tight threshold.
        columns: images per sheet row.

    Returns:
        ``(rows * S, columns * 2 * S, 3)`` uint8 RGB.

    Raises:
        ConfigError: empty input or mismatched shapes.

    Example:
        >>> sheet = mask_sheet(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.rand(3, 2, 2),
        ...                    columns=2)
        >>> sheet.shape, sheet.dtype
        ((16, 32, 3), dtype('uint8'))
    """
    if images.ndim != 4 or images.shape[0] == 0 or prob.shape[0] != images.shape[0]:
        raise ConfigError(
            f"mask_sheet needs (N, 3, S, S) images and (N, G, G) prob with N >= 1, got "
            f"{tuple(images.shape)} and {tuple(prob.shape)}"
        )
    n, _, s, _ = images.shape
    x = images.float() / 255.0
    fg = upsample_patch_grid((prob < tight).float(), (s, s))
    tint = torch.tensor([0.6, 0.0, 0.0]).view(1, 3, 1, 1)
    overlay = fg * x + (1.0 - fg) * (0.35 * x + tint * 0.4)
    if masks is not None:
        m = masks.float()
        edge = (F.max_pool2d(m, 3, 1, 1) - (-F.max_pool2d(-m, 3, 1, 1))) > 0
        green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand_as(overlay)
        overlay = torch.where(edge, green, overlay)
    heat = upsample_patch_grid(prob.float(), (s, s)).expand(-1, 3, -1, -1)
    tiles = torch.cat([overlay, heat], dim=-1)  # (N, 3, S, 2S)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    pad = rows * columns - n
    if pad:
        tiles = torch.cat([tiles, torch.zeros(pad, *tiles.shape[1:])])
    grid = tiles.view(rows, columns, 3, s, 2 * s).permute(0, 3, 1, 4, 2)
    grid = grid.reshape(rows * s, columns * 2 * s, 3)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
