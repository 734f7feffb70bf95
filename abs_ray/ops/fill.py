"""Weight-free hole fills: the paper's ablation inpainters (gray, mean colour, noise).

They complete a background by replacing the masked pixels only. Learned and patch-based
inpainters live in :mod:`abs_ray.models`; these are the cheap references.
"""

from __future__ import annotations

import torch

from abs_ray.errors import ConfigError

__all__ = ["fill_gray", "fill_mean", "fill_noise"]


def _check(image: torch.Tensor, mask: torch.Tensor) -> None:
    if image.dim() != 4 or image.shape[1] != 3:
        raise ConfigError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
    if (
        mask.dim() != 4
        or mask.shape[1] != 1
        or mask.shape[0] != image.shape[0]
        or mask.shape[2:] != image.shape[2:]
    ):
        raise ConfigError(
            f"mask must be (B, 1, H, W) matching image {tuple(image.shape)}, got {tuple(mask.shape)}"
        )


def fill_gray(image: torch.Tensor, mask: torch.Tensor, value: float = 0.5) -> torch.Tensor:
    """Replace masked pixels with a constant gray.

    Args:
        image: (B, 3, H, W) float in [0, 1].
        mask: (B, 1, H, W) float in [0, 1], 1 = hole to fill.
        value: gray level in [0, 1].

    Returns:
        (B, 3, H, W) float, equal to ``image`` where ``mask == 0``.

    Raises:
        ConfigError: shapes do not match.

    >>> img = torch.ones(1, 3, 2, 2); m = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    >>> fill_gray(img, m)[0, 0].tolist()
    [[0.5, 1.0], [1.0, 1.0]]
    """
    _check(image, mask)
    return image * (1 - mask) + value * mask


def fill_mean(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Replace masked pixels with the mean colour of each image's unmasked pixels.

    Args:
        image: (B, 3, H, W) float in [0, 1].
        mask: (B, 1, H, W) float in [0, 1], 1 = hole to fill.

    Returns:
        (B, 3, H, W) float; an image that is all hole gets its own overall mean.

    Raises:
        ConfigError: shapes do not match.

    >>> img = torch.tensor([[[[0.2, 0.4], [0.6, 0.0]]]]).expand(1, 3, 2, 2)
    >>> m = torch.tensor([[[[0.0, 0.0], [0.0, 1.0]]]])
    >>> round(fill_mean(img, m)[0, 0, 1, 1].item(), 4)
    0.4
    """
    _check(image, mask)
    keep = 1 - mask
    weight = keep.sum(dim=(2, 3), keepdim=True)
    mean = (image * keep).sum(dim=(2, 3), keepdim=True) / weight.clamp_min(1e-6)
    mean = torch.where(weight > 0, mean, image.mean(dim=(2, 3), keepdim=True))
    return image * keep + mean * mask


def fill_noise(
    image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Replace masked pixels with uniform noise in [0, 1] (drawn on CPU, so seeds replay anywhere).

    >>> g = torch.Generator().manual_seed(0)
    >>> out = fill_noise(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4), g)
    >>> bool((out > 0).all())
    True
    """
    _check(image, mask)
    noise = torch.rand(image.shape, generator=generator, dtype=image.dtype).to(image.device)
    return image * (1 - mask) + noise * mask
