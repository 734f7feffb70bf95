"""A zero-shot mask source for a service that has no trained detector yet.

A freshly created detector has an untrained head: its masks are noise. Until a checkpoint is
configured, the service uses :class:`BorderContrastSaliency` instead, which needs no
training: it describes each of the ``G x G`` patches by its mean CIE-Lab colour and by
low-level EfficientNet-Lite0 features (stem and first three blocks, ImageNet weights
packaged offline), measures how far each patch is from the image border (the mean distance
to its nearest border patches, the "boundary prior" of classic saliency methods), and turns
the standardised contrast ``z`` into logits ``alpha * (z0 - z)`` of ``P(background)``. With
the defaults (``z0 = 1.5``, ``alpha = ln 9 / 0.5``) the tight mask (``p < 0.5``) keeps
patches more than 1.5 standard deviations above the image's mean contrast and the loose mask
(``p < 0.9``) those above 1.0, a margin for inpainting.

It has the detector's interface (``(B, 3, S, S)`` in ``[0, 1]`` -> ``(B, G, G)`` logits), so
everything downstream is the same. Measured on 64 test images of the offline birds
benchmark (``data/birds``, 224 px, G = 16): mean mask IoU 0.52 (the best a 16 x 16 patch mask
can reach there is 0.71); 0.78 on the synthetic demo shapes. It finds *the object that
contrasts with the border*, not a class: for real work train a detector (``jobs/``) and set
``detector_checkpoint``.

Example:
    >>> sal = BorderContrastSaliency(grid=4, image_size=32, pretrained=False)
    >>> sal(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 4, 4])
"""

from __future__ import annotations

import logging
import math

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.models.efficientnet_lite import efficientnet_lite0

__all__ = ["BorderContrastSaliency"]

logger = logging.getLogger(__name__)

#: MBConv blocks of Lite0 used (stride 4, 24 channels): texture, not semantics, generalises.
_LITE0_BLOCKS = 3


class BorderContrastSaliency(nn.Module):
    """Zero-shot ``P(background)`` logits per patch from contrast with the image border.

    Args:
        grid: patches per side ``G``, ``>= 3`` (a border ring and an inside are needed).
        image_size: side ``S`` of the square input; ``G`` must divide it.
        z0: contrast (in standard deviations above the image mean) where ``P(background)``
            is 0.5.
        alpha: logit slope per standard deviation.
        nearest: fraction of the border patches averaged as the distance to "the border".
        pretrained: load the packaged ImageNet Lite0 weights (offline); False only for tests.

    Attributes:
        config: the settings as a JSON-able dict (for ``/v1/info``).

    Raises:
        ConfigError: a value is out of range.
    """

    def __init__(
        self,
        grid: int = 16,
        image_size: int = 224,
        z0: float = 1.5,
        alpha: float = math.log(9.0) / 0.5,
        nearest: float = 0.05,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 3:
            raise ConfigError(f"grid must be an int >= 3, got {grid!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size % grid:
            raise ConfigError(f"patch grid {grid} must divide image size {image_size!r}")
        if not 0.0 < nearest <= 1.0:
            raise ConfigError(f"nearest must be in (0, 1], got {nearest}")
        if not alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {alpha}")
        lite0 = efficientnet_lite0(pretrained=pretrained, num_classes=0)
        self.stem = lite0.stem
        self.blocks = nn.Sequential(*list(lite0.blocks)[:_LITE0_BLOCKS])
        self._normalize = lite0.normalize
        self.grid, self.image_size = grid, image_size
        self.z0, self.alpha, self.nearest = float(z0), float(alpha), float(nearest)
        ring = torch.zeros(grid, grid, dtype=torch.bool)
        ring[0], ring[-1], ring[:, 0], ring[:, -1] = True, True, True, True
        self.register_buffer("ring", ring.flatten(), persistent=False)
        self.config = {
            "name": "border_contrast_saliency",
            "grid": grid,
            "image_size": image_size,
            "z0": self.z0,
            "alpha": self.alpha,
            "nearest": self.nearest,
            "features": f"efficientnet_lite0 stem+{_LITE0_BLOCKS} blocks (ImageNet), CIE-Lab",
        }
        self.eval()

    def _border_distance(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, C, G, G)`` -> ``(B, G, G)`` mean distance to the nearest border patches."""
        batch = features.shape[0]
        flat = features.flatten(2).transpose(1, 2)  # (B, G², C)
        border = flat[:, self.ring]  # (B, R, C)
        dist = torch.cdist(flat, border)  # (B, G², R)
        k = max(1, int(border.shape[1] * self.nearest))
        near = dist.topk(k, dim=2, largest=False).values.mean(dim=2)
        near = near / near.amax(dim=1, keepdim=True).clamp_min(1e-6)
        return near.view(batch, self.grid, self.grid)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits of ``P(background)`` per patch.

        Args:
            images: ``(B, 3, S, S)`` float RGB in ``[0, 1]``.

        Returns:
            ``(B, G, G)`` float logits (``sigmoid`` = ``P(background)``).

        Raises:
            ConfigError: wrong input shape or dtype.
        """
        s = self.image_size
        if (
            not isinstance(images, torch.Tensor)
            or images.ndim != 4
            or tuple(images.shape[1:]) != (3, s, s)
            or not images.is_floating_point()
        ):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ConfigError(f"saliency input must be a (B, 3, {s}, {s}) float tensor, got {got}")
        g = self.grid
        deep = self.blocks(self.stem(self._normalize(images)))
        deep = F.normalize(F.adaptive_avg_pool2d(deep, g), dim=1)
        lab = kornia.color.rgb_to_lab(F.adaptive_avg_pool2d(images, g)) / 100.0
        contrast = self._border_distance(deep) + self._border_distance(lab)
        flat = contrast.flatten(1)
        mean = flat.mean(dim=1)[:, None, None]
        std = flat.std(dim=1)[:, None, None].clamp_min(1e-6)
        z = (contrast - mean) / std
        return self.alpha * (self.z0 - z)

    def extra_repr(self) -> str:
        return (
            f"grid={self.grid}, image_size={self.image_size}, z0={self.z0}, alpha={self.alpha:.3f}"
        )
