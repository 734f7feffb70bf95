"""uint8 images <-> float tensors: the one place where layout and range change.

Decoded images (PNG decoding, Ray Data batches, HTTP uploads) are uint8 ``(B, H, W, C)``
arrays; the ops, models and losses work on float ``(B, C, H, W)`` in ``[0, 1]``. These two
functions are the only conversions between them, so that rounding, clamping and the device
a conversion runs on are decided once.

(Not ``kornia.image.image_to_tensor`` / ``tensor_to_image``: they only permute (neither scale
nor round) and take numpy only, not the tensors Ray Train batches hold; the same permute and
scaling through kornia timed 0.84-1.26x these, equal within the noise,
``bench/results/augment.json``.)
"""

from __future__ import annotations

import numpy as np
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops._checks import describe

__all__ = ["to_float_chw", "to_uint8_hwc"]


def to_float_chw(
    images_u8: torch.Tensor | np.ndarray,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` images (or ``(B, H, W)`` masks) to float ``(B, C, H, W)`` in
    ``[0, 1]``.

    The uint8 data moves to ``device`` first (a quarter of float32's bytes), then is converted
    there. The result is a permuted view's conversion: channels-last in memory, which every
    torch op accepts (call ``.contiguous()`` where a kernel wants NCHW order).

    Args:
        images_u8: ``(B, H, W, C)`` uint8 tensor or numpy array; a 3-D ``(B, H, W)`` one
            (an alpha or mask per sample) gives ``(B, 1, H, W)``.
        device: where the result lives; default the input's (CPU for numpy).
        dtype: floating dtype of the result.

    Returns:
        ``(B, C, H, W)`` ``dtype`` tensor on ``device``, ``value / 255``.

    Raises:
        ConfigError: if the input is not uint8, not 3-D or 4-D, or ``dtype`` not floating.

    Example:
        >>> x = to_float_chw(torch.full((2, 4, 5, 3), 255, dtype=torch.uint8))
        >>> x.shape, x.dtype, float(x.max())
        (torch.Size([2, 3, 4, 5]), torch.float32, 1.0)
        >>> to_float_chw(np.zeros((2, 4, 5), np.uint8)).shape
        torch.Size([2, 1, 4, 5])
    """
    if isinstance(images_u8, np.ndarray):
        images_u8 = torch.from_numpy(np.ascontiguousarray(images_u8))
    if (
        not isinstance(images_u8, torch.Tensor)
        or images_u8.dtype != torch.uint8
        or images_u8.ndim not in (3, 4)
    ):
        raise ConfigError(
            f"images must be a (B, H, W, C) or (B, H, W) uint8 tensor or array, "
            f"got {describe(images_u8)}"
        )
    if not dtype.is_floating_point:
        raise ConfigError(f"dtype must be a floating dtype, got {dtype}")
    if device is not None:
        images_u8 = images_u8.to(device, non_blocking=True)
    if images_u8.ndim == 3:
        images_u8 = images_u8.unsqueeze(-1)
    return images_u8.permute(0, 3, 1, 2).to(dtype).div_(255.0)


def to_uint8_hwc(images: torch.Tensor) -> torch.Tensor:
    """Float ``(B, C, H, W)`` in ``[0, 1]`` to uint8 ``(B, H, W, C)``, on the same device.

    Values are clamped to ``[0, 1]``, scaled by 255 and rounded to the nearest integer (half
    to even, as ``torch.round``), so ``to_uint8_hwc(to_float_chw(x)) == x`` exactly.

    Args:
        images: ``(B, C, H, W)`` floating tensor (any device); a ``(B, 1, H, W)`` alpha gives
            ``(B, H, W, 1)``.

    Returns:
        ``(B, H, W, C)`` contiguous uint8 tensor on ``images``' device (``.cpu().numpy()``
        gives what image encoders take).

    Raises:
        ConfigError: if ``images`` is not a 4-D floating tensor.

    Example:
        >>> u8 = torch.randint(0, 256, (2, 4, 5, 3), dtype=torch.uint8)
        >>> torch.equal(to_uint8_hwc(to_float_chw(u8)), u8)
        True
        >>> to_uint8_hwc(torch.tensor([-0.5, 0.5, 2.0]).view(1, 3, 1, 1)).flatten().tolist()
        [0, 128, 255]
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ConfigError(f"images must be a (B, C, H, W) floating tensor, got {describe(images)}")
    u8 = images.clamp(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return u8.permute(0, 2, 3, 1).contiguous()
