"""Patch-scramble hole fill: one of the paper's ablation inpainters.

The hole is covered with square patches of the image's own known background, taken in random
order: the image is cut into a grid of ``patch x patch`` cells; every cell that touches the hole
receives a randomly chosen *fully known* cell (no hole pixel, not cut by the image border).
Cells are drawn as a random permutation of the known cells, cycling through it again when the
hole covers more cells than are known. Only masked pixels change. The fill keeps the background's
colours and local texture but none of its layout, and no shape cue of the removed object beyond
the mask's own outline.

Randomness is drawn on CPU from an explicit ``torch.Generator`` so a seed replays on any device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from abs_ray.errors import ConfigError

__all__ = ["patch_scramble"]


def _check(image: object, mask: object, patch: object) -> None:
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        desc = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ConfigError(f"image must be a (B, 3, H, W) tensor, got {desc}")
    if not image.is_floating_point():
        raise ConfigError(f"image must be floating in [0, 1], got {image.dtype}")
    if (
        not isinstance(mask, torch.Tensor)
        or mask.ndim != 4
        or mask.shape[1] != 1
        or mask.shape[0] != image.shape[0]
        or mask.shape[2:] != image.shape[2:]
    ):
        desc = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ConfigError(
            f"mask must be (B, 1, H, W) matching image {tuple(image.shape)}, got {desc}"
        )
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ConfigError(f"patch must be an int >= 1, got {patch!r}")


def _scramble_indices(
    known: torch.Tensor, target: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Source cell index for every cell (CPU, ``(B, N)`` long).

    Target cells take, in row-major order, the entries of a random permutation of the known
    cells (cycling); other cells point at themselves. Rows without a known cell point at
    themselves everywhere.
    """
    batch, cells = known.shape
    keys = torch.rand(batch, cells, generator=generator)
    keys = torch.where(known, keys, torch.full_like(keys, 2.0))  # unknown cells sort last
    perm = keys.argsort(dim=1)  # (B, N): known cells first, in random order
    n_known = known.sum(dim=1, keepdim=True)  # (B, 1)
    rank = target.long().cumsum(dim=1) - 1  # k-th target cell of its row
    slot = rank.clamp_min(0) % n_known.clamp_min(1)
    source = perm.gather(1, slot)
    own = torch.arange(cells).expand(batch, cells)
    return torch.where(target & (n_known > 0), source, own)


def patch_scramble(
    image: torch.Tensor,
    mask: torch.Tensor,
    patch: int = 16,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill masked pixels with randomly permuted patches of each image's known background.

    A cell counts as known when it holds no pixel with ``mask > 0`` and lies fully inside the
    image. If an image has no fully known cell (a hole that touches every cell) the fill falls
    back to single pixels (``patch=1``); an image with no known pixel at all is filled with
    gray 0.5.

    Args:
        image: ``(B, 3, H, W)`` float in ``[0, 1]``.
        mask: ``(B, 1, H, W)`` float in ``[0, 1]``, 1 = hole; the result is
            ``image * (1 - mask) + scrambled * mask``.
        patch: cell side in pixels, ``>= 1``.
        generator: CPU generator for the permutation; None uses torch's global one.

    Returns:
        ``(B, 3, H, W)`` tensor of ``image``'s dtype and device, equal to ``image`` where
        ``mask == 0``; its hole pixels are pixels of the same image.

    Raises:
        ConfigError: ``image`` or ``mask`` has the wrong type, shape or dtype, or ``patch`` is
            not a positive int.

    Example:
        >>> image = torch.ones(1, 3, 4, 4)
        >>> image[..., :2, :2] = 0.0  # a black object on white
        >>> mask = torch.zeros(1, 1, 4, 4)
        >>> mask[..., :2, :2] = 1.0
        >>> out = patch_scramble(image, mask, patch=2, generator=torch.Generator().manual_seed(0))
        >>> out[0, 0, :2, :2].tolist()  # filled from the known (white) cells
        [[1.0, 1.0], [1.0, 1.0]]
        >>> torch.equal(out[..., 2:, :], image[..., 2:, :])
        True
    """
    _check(image, mask, patch)
    scrambled = _scrambled(image, mask > 0, patch, generator)
    return image * (1 - mask) + scrambled * mask


def _scrambled(
    image: torch.Tensor, holes: torch.Tensor, patch: int, generator: torch.Generator | None
) -> torch.Tensor:
    """The scrambled image (every hole cell replaced), before compositing."""
    height, width = image.shape[-2:]
    rows, cols = math.ceil(height / patch), math.ceil(width / patch)
    pad = (0, cols * patch - width, 0, rows * patch - height)
    hole_f = holes.to(image.dtype)
    # Padding counts as hole for the sources, so cells cut by the border are never copied.
    known = F.max_pool2d(F.pad(hole_f, pad, value=1.0), patch, stride=patch) == 0
    target = F.max_pool2d(F.pad(hole_f, pad, value=0.0), patch, stride=patch) > 0
    known, target = known.flatten(1).cpu(), target.flatten(1).cpu()  # (B, N) each

    source = _scramble_indices(known, target, generator).to(image.device)
    padded = F.pad(image, pad, mode="replicate") if any(pad) else image
    cells = F.unfold(padded, patch, stride=patch)  # (B, 3 * patch * patch, N)
    cells = cells.gather(2, source.unsqueeze(1).expand(-1, cells.shape[1], -1))
    scrambled = F.fold(cells, (rows * patch, cols * patch), patch, stride=patch)
    scrambled = scrambled[..., :height, :width]

    stuck = (~known.any(dim=1)) & target.any(dim=1)  # holes but no known cell to copy
    if bool(stuck.any()):
        idx = stuck.nonzero().flatten().to(image.device)
        if patch > 1:
            scrambled[idx] = _scrambled(image[idx], holes[idx], 1, generator)
        else:  # no known pixel at all
            scrambled[idx] = 0.5
    return scrambled
