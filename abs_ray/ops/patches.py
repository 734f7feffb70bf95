"""Patch-label grids: pixel masks to per-patch labels and back.

Convention used everywhere in abs-ray:

- A **patch-label grid** is a ``(B, G, G)`` float tensor with values in ``{0, 1}`` where
  **1 = FOREGROUND** (the object), exactly as in the published ``info,mask`` CSV.
- The detector predicts ``P(background)`` per patch, so its training target is the
  complement of a patch-label grid: ``target = 1 - fg``. Keep the flip at that one place (the
  loss); everything else (CSV, coverage, masks) speaks foreground.
- An image of size ``H x W`` split into a ``G x G`` grid has patches of
  ``(H // G) x (W // G)`` pixels; ``G`` must divide both ``H`` and ``W``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from abs_ray.errors import ConfigError

__all__ = ["mask_to_patch_labels", "patch_coverage", "upsample_patch_grid"]


def _check_grid(grid: object) -> int:
    """Return ``grid`` as a positive ``int`` or raise :class:`ConfigError`."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ConfigError(f"patch grid must be a positive int, got {grid!r}")
    return grid


def _mask_as_4d(mask: object, name: str = "mask") -> torch.Tensor:
    """Return ``mask`` as a ``(B, 1, H, W)`` floating tensor (bool is converted to float).

    Raises:
        ConfigError: if ``mask`` is not a tensor of shape ``(B, H, W)`` or ``(B, 1, H, W)`` with a
            floating or bool dtype.
    """
    if not isinstance(mask, torch.Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dtype == torch.bool:
        mask = mask.float()
    if not mask.is_floating_point():
        raise ConfigError(f"{name} must be a floating or bool tensor in [0, 1], got {mask.dtype}")
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ConfigError(
            f"{name} must have shape (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}"
        )
    return mask


def patch_coverage(mask: torch.Tensor, grid: int) -> torch.Tensor:
    """Fraction of foreground pixels in each patch of a ``grid x grid`` split.

    Args:
        mask: ``(B, 1, H, W)`` or ``(B, H, W)`` float (or bool) mask in ``[0, 1]``,
            1 = foreground. Values are not range-checked (that would force a device sync).
        grid: number of patches ``G`` per side; must divide both ``H`` and ``W``.

    Returns:
        ``(B, G, G)`` tensor of ``mask``'s floating dtype (float32 for bool input) in
        ``[0, 1]``: the mean of ``mask`` over each ``(H // G) x (W // G)`` patch.

    Raises:
        ConfigError: if ``mask`` has the wrong type, dtype or shape, ``grid`` is not a positive
            int, or ``grid`` does not divide ``H`` or ``W``.

    Example:
        >>> mask = torch.zeros(1, 4, 4)
        >>> mask[0, :2, :1] = 1.0
        >>> patch_coverage(mask, grid=2)
        tensor([[[0.5000, 0.0000],
                 [0.0000, 0.0000]]])
    """
    mask = _mask_as_4d(mask)
    grid = _check_grid(grid)
    height, width = mask.shape[-2:]
    if height % grid or width % grid:
        raise ConfigError(f"patch grid {grid} must divide image size {height}x{width} (H x W)")
    kernel = (height // grid, width // grid)
    return F.avg_pool2d(mask, kernel_size=kernel, stride=kernel).squeeze(1)


def mask_to_patch_labels(mask: torch.Tensor, grid: int, threshold: float = 0.25) -> torch.Tensor:
    """Turn a pixel mask into a foreground patch-label grid by thresholding patch coverage.

    A patch is foreground when at least ``threshold`` of its pixels are foreground (the paper
    uses 0.25 on Waterbirds and 0.2-0.4 on other data sets).

    Args:
        mask: ``(B, 1, H, W)`` or ``(B, H, W)`` float (or bool) mask in ``[0, 1]``,
            1 = foreground.
        grid: number of patches ``G`` per side; must divide both ``H`` and ``W``.
        threshold: minimum foreground fraction, in ``(0, 1]``.

    Returns:
        ``(B, G, G)`` float tensor with values in ``{0, 1}``, 1 = foreground.

    Raises:
        ConfigError: as :func:`patch_coverage`, or if ``threshold`` is outside ``(0, 1]``.

    Example:
        >>> mask = torch.zeros(1, 4, 4)
        >>> mask[0, :2, :1] = 1.0
        >>> mask_to_patch_labels(mask, grid=2, threshold=0.5)
        tensor([[[1., 0.],
                 [0., 0.]]])
    """
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ConfigError(f"threshold must be a number in (0, 1], got {threshold!r}")
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold must be in (0, 1], got {threshold}")
    coverage = patch_coverage(mask, grid)
    return (coverage >= threshold).to(coverage.dtype)


def upsample_patch_grid(grid_values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Spread per-patch values back to pixels (nearest neighbour).

    Args:
        grid_values: ``(B, G, G)`` float (or bool) per-patch values, e.g. a patch-label grid
            or the detector's ``P(background)``.
        size: output ``(H, W)``. When ``G`` divides ``H`` and ``W`` every patch becomes an exact
            ``(H // G) x (W // G)`` block; otherwise the nearest patch centre wins.

    Returns:
        ``(B, 1, H, W)`` tensor of ``grid_values``' floating dtype (float32 for bool input)
        with the same values.

    Raises:
        ConfigError: if ``grid_values`` is not a 3-D floating/bool tensor or ``size`` is not two
            positive ints.

    Example:
        >>> grid = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        >>> upsample_patch_grid(grid, size=(4, 4))[0, 0]
        tensor([[1., 1., 0., 0.],
                [1., 1., 0., 0.],
                [0., 0., 1., 1.],
                [0., 0., 1., 1.]])
    """
    if not isinstance(grid_values, torch.Tensor) or grid_values.ndim != 3:
        shape = tuple(grid_values.shape) if isinstance(grid_values, torch.Tensor) else None
        raise ConfigError(f"grid_values must be a (B, G, G) tensor, got shape {shape}")
    grid_4d = _mask_as_4d(grid_values, name="grid_values")
    size = _check_size(size)
    return F.interpolate(grid_4d, size=size, mode="nearest-exact")


def _check_size(size: object) -> tuple[int, int]:
    """Return ``size`` as ``(H, W)`` of positive ints or raise :class:`ConfigError`."""
    ok = (
        isinstance(size, tuple | list)
        and len(size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)
    )
    if not ok:
        raise ConfigError(f"size must be (H, W) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])
