"""Pixel masks from the detector's patch grid, and simple mask morphology.

The detector outputs ``P(background)`` per patch. Thresholding it twice gives two foreground
masks (1 = foreground):

- **tight** (``p < tight``): cut the object out with it (paper: 0.33 on Waterbirds, else 0.5);
- **loose** (``p < loose``, paper 0.9): erase and inpaint it to get a complete background.

Because ``tight <= loose``, the loose mask always contains the tight one.
"""

from __future__ import annotations

import math

import kornia
import torch
import torch.nn.functional as F

from abs_ray.errors import ConfigError
from abs_ray.ops.patches import upsample_patch_grid

__all__ = ["dilate_mask", "feather_mask", "masks_from_background_prob"]


def _check_threshold(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name} must be in (0, 1), got {value}")
    return float(value)


def _check_mask_4d(mask: object, name: str = "mask") -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.ndim != 4 or not mask.is_floating_point():
        raise ConfigError(
            f"{name} must be a (B, C, H, W) floating tensor, got shape {tuple(mask.shape)} "
            f"dtype {mask.dtype}"
        )
    return mask


def masks_from_background_prob(
    prob: torch.Tensor,
    size: tuple[int, int],
    tight: float = 0.5,
    loose: float = 0.9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight and loose foreground masks from the detector's per-patch ``P(background)``.

    Args:
        prob: ``(B, G, G)`` float ``P(background)`` in ``[0, 1]`` (sigmoid of the logits).
        size: output ``(H, W)`` in pixels; patches are upsampled nearest-neighbour.
        tight: threshold for the tight mask, in ``(0, 1)``; foreground where ``prob < tight``.
        loose: threshold for the loose mask, in ``(0, 1)`` and ``>= tight``; foreground where
            ``prob < loose``.

    Returns:
        ``(tight_mask, loose_mask)``, each ``(B, 1, H, W)`` of ``prob``'s dtype with values in
        ``{0, 1}``, 1 = foreground; ``loose_mask >= tight_mask`` everywhere.

    Raises:
        ConfigError: if ``prob`` is not a ``(B, G, G)`` floating tensor, ``size`` is not two
            positive ints, a threshold is outside ``(0, 1)``, or ``tight > loose``.

    Example:
        >>> prob = torch.tensor([[[0.1, 0.7], [0.95, 0.3]]])
        >>> tight, loose = masks_from_background_prob(prob, size=(2, 2))
        >>> tight[0, 0], loose[0, 0]
        (tensor([[1., 0.],
                [0., 1.]]), tensor([[1., 1.],
                [0., 1.]]))
    """
    tight = _check_threshold("tight", tight)
    loose = _check_threshold("loose", loose)
    if tight > loose:
        raise ConfigError(f"tight threshold {tight} must be <= loose threshold {loose}")
    if not isinstance(prob, torch.Tensor) or prob.ndim != 3 or not prob.is_floating_point():
        desc = (
            f"shape {tuple(prob.shape)} dtype {prob.dtype}"
            if isinstance(prob, torch.Tensor)
            else type(prob).__name__
        )
        raise ConfigError(f"prob must be a (B, G, G) floating tensor, got {desc}")
    tight_grid = (prob < tight).to(prob.dtype)
    loose_grid = (prob < loose).to(prob.dtype)
    return upsample_patch_grid(tight_grid, size), upsample_patch_grid(loose_grid, size)


def dilate_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Grow a mask by ``pixels`` in every direction (square structuring element).

    Implemented as a ``(2 * pixels + 1)`` max-pool with stride 1, which equals grey-scale
    dilation with a flat square kernel and is much faster than a generic morphology op.

    Args:
        mask: ``(B, C, H, W)`` float mask in ``[0, 1]``.
        pixels: dilation radius, ``>= 0``; 0 returns ``mask`` unchanged.

    Returns:
        ``(B, C, H, W)`` mask of the same dtype, ``>= mask`` everywhere.

    Raises:
        ConfigError: if ``mask`` is not a 4-D floating tensor or ``pixels`` is not an int
            ``>= 0``.

    Example:
        >>> mask = torch.zeros(1, 1, 5, 5)
        >>> mask[0, 0, 2, 2] = 1.0
        >>> int(dilate_mask(mask, 1).sum())
        9
    """
    mask = _check_mask_4d(mask)
    if isinstance(pixels, bool) or not isinstance(pixels, int) or pixels < 0:
        raise ConfigError(f"pixels must be an int >= 0, got {pixels!r}")
    if pixels == 0:
        return mask
    return F.max_pool2d(mask, kernel_size=2 * pixels + 1, stride=1, padding=pixels)


def feather_mask(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soften a mask's edges with a Gaussian blur (``kornia.filters.gaussian_blur2d``).

    The kernel size is ``2 * ceil(3 * sigma) + 1``; borders are replicated, so a mask that is
    1 everywhere stays 1.

    Args:
        mask: ``(B, C, H, W)`` float mask in ``[0, 1]``.
        sigma: Gaussian standard deviation in pixels, ``>= 0``; 0 returns ``mask`` unchanged.

    Returns:
        ``(B, C, H, W)`` mask of the same dtype, clamped to ``[0, 1]``.

    Raises:
        ConfigError: if ``mask`` is not a 4-D floating tensor or ``sigma`` is negative or not a
            finite number.

    Example:
        >>> mask = torch.zeros(1, 1, 9, 9)
        >>> mask[..., 4:] = 1.0
        >>> soft = feather_mask(mask, sigma=1.0)
        >>> bool(soft.min() >= 0), bool(soft.max() <= 1), 0.0 < float(soft[0, 0, 0, 3]) < 1.0
        (True, True, True)
    """
    mask = _check_mask_4d(mask)
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, int | float)
        or not math.isfinite(sigma)
        or sigma < 0
    ):
        raise ConfigError(f"sigma must be a finite number >= 0, got {sigma!r}")
    if sigma == 0:
        return mask
    k = 2 * math.ceil(3.0 * sigma) + 1
    blurred = kornia.filters.gaussian_blur2d(
        mask, kernel_size=(k, k), sigma=(float(sigma), float(sigma)), border_type="replicate"
    )
    return blurred.clamp(0.0, 1.0)
