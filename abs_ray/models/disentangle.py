"""The single-image path: split images into foreground, masks and an inpainted background.

This is stage 2 of AutoBackSwap, batched. The pipeline, the Serve endpoint and the labelling
page all call :func:`disentangle` (or :func:`disentangle_image` for one uint8 picture):

1. the detector maps images to a ``(B, G, G)`` grid of logits, ``sigmoid = P(background)``;
2. :func:`~abs_ray.ops.masks.masks_from_background_prob` turns it into the **tight**
   foreground mask (``p < tight``; the alpha that cuts the object out) and the **loose** one
   (``p < loose``; the region removed to get a background), upsampled nearest-neighbour;
3. the inpainter fills the loose mask (dilated by its own ``dilate`` margin).

Example:
    >>> from torch import nn
    >>> from abs_ray.models.inpainters import create_inpainter
    >>> class Centre(nn.Module):  # logits: background everywhere but the 2x2 centre patches
    ...     def forward(self, x):
    ...         logits = torch.full((x.shape[0], 4, 4), 5.0)
    ...         logits[:, 1:3, 1:3] = -5.0
    ...         return logits
    >>> out = disentangle(torch.rand(2, 3, 32, 32), Centre(), create_inpainter("mean"))
    >>> out.alpha.shape, out.prob.shape, int(out.alpha[0].sum())
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 4, 4]), 256)
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.models.backbones import check_rgb_batch
from abs_ray.models.inpainters import Inpainter
from abs_ray.ops.convert import to_float_chw, to_uint8_hwc
from abs_ray.ops.masks import masks_from_background_prob

__all__ = ["Disentangled", "disentangle", "disentangle_image"]

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Disentangled:
    """A batch split into object and background, all on the input images' device.

    Attributes:
        foreground: ``(B, 3, H, W)`` float in ``[0, 1]``: the image times ``alpha`` (the
            cut-out; black outside the object). With a hard alpha, compositing it or the source
            image with ``alpha`` gives the same pixels.
        alpha: ``(B, 1, H, W)`` float in ``{0, 1}``: tight foreground mask, 1 = object.
        loose: ``(B, 1, H, W)`` float in ``{0, 1}``: loose foreground mask (``>= alpha``), the
            region that was inpainted (before the inpainter's dilation).
        background: ``(B, 3, H, W)`` float in ``[0, 1]``: the image with the loose mask
            inpainted; equal to the image outside the inpainter's dilated loose mask.
        prob: ``(B, G, G)`` float in ``[0, 1]``: the detector's ``P(background)`` per patch.
    """

    foreground: torch.Tensor
    alpha: torch.Tensor
    loose: torch.Tensor
    background: torch.Tensor
    prob: torch.Tensor

    def __len__(self) -> int:
        return self.foreground.shape[0]

    def numpy(self, index: int = 0) -> dict[str, np.ndarray]:
        """One sample as numpy arrays for encoding or display.

        Args:
            index: which sample of the batch.

        Returns:
            ``foreground_rgba`` ``(H, W, 4)`` uint8 (RGB of the image, alpha 0/255),
            ``background`` ``(H, W, 3)`` uint8, ``alpha`` and ``loose`` ``(H, W)`` uint8 in
            ``{0, 255}``, ``prob`` ``(G, G)`` float32.

        Raises:
            ConfigError: ``index`` is out of range.
        """
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not -len(self) <= index < len(self)
        ):
            raise ConfigError(f"index must be an int in [0, {len(self)}), got {index!r}")

        def u8(t: torch.Tensor) -> np.ndarray:
            """``(C, H, W)`` float of one image → ``(H, W, C)`` uint8."""
            return to_uint8_hwc(t[None].detach())[0].cpu().numpy()

        fg = u8(self.foreground[index])
        alpha = u8(self.alpha[index])[..., 0]
        return {
            "foreground_rgba": np.concatenate([fg, alpha[..., None]], axis=-1),
            "background": u8(self.background[index]),
            "alpha": alpha,
            "loose": u8(self.loose[index])[..., 0],
            "prob": self.prob[index].detach().float().cpu().numpy(),
        }


def _check_detector(detector: object, device: torch.device) -> nn.Module:
    if not isinstance(detector, nn.Module):
        raise ConfigError(f"detector must be a torch.nn.Module, got {type(detector).__name__}")
    param = next(iter(detector.parameters()), None)
    if param is not None and param.device != device:
        raise ConfigError(f"detector is on {param.device} but images are on {device}; move one")
    return detector


def _check_logits(logits: object, batch: int) -> torch.Tensor:
    if (
        not isinstance(logits, torch.Tensor)
        or logits.ndim != 3
        or logits.shape[0] != batch
        or logits.shape[1] != logits.shape[2]
        or not logits.is_floating_point()
    ):
        desc = (
            f"shape {tuple(logits.shape)} dtype {logits.dtype}"
            if isinstance(logits, torch.Tensor)
            else type(logits).__name__
        )
        raise ConfigError(f"detector must return (B={batch}, G, G) float logits, got {desc}")
    return logits


def disentangle(
    images: torch.Tensor,
    detector: nn.Module,
    inpainter: Inpainter,
    tight: float = 0.5,
    loose: float = 0.9,
) -> Disentangled:
    """Split a batch into tight foreground, loose mask and inpainted background.

    Runs under :func:`torch.inference_mode` on the images' device (results are inference
    tensors: store or copy them, do not backpropagate through them). A detector left in
    training mode is switched to ``eval()`` for the call and restored afterwards.

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]``. When the detector's grid ``G`` divides
            ``H`` and ``W`` each patch is an exact block, otherwise the nearest patch wins.
        detector: module on the images' device mapping ``(B, 3, H, W)`` in ``[0, 1]`` to
            ``(B, G, G)`` logits with ``sigmoid = P(background)``.
        inpainter: an :class:`~abs_ray.models.inpainters.Inpainter` (see
            :func:`~abs_ray.models.inpainters.create_inpainter`).
        tight: ``P(background)`` threshold of the tight mask, in ``(0, 1)`` (paper: 0.33 on
            Waterbirds, otherwise 0.5).
        loose: threshold of the loose mask, in ``(0, 1)``, ``>= tight`` (paper: 0.9).

    Returns:
        :class:`Disentangled` with tensors on the images' device and of their dtype.

    Raises:
        ConfigError: bad images, detector (type, device, output shape) or thresholds.
        AllHoleError: the loose mask covers a whole image and the inpainter's
            ``all_hole="raise"``.
        InpainterOutputError: a pluggable inpainter returned a wrong result.
    """
    images = check_rgb_batch(images)
    detector = _check_detector(detector, images.device)
    if not isinstance(inpainter, Inpainter):
        raise ConfigError(f"inpainter must be an Inpainter, got {type(inpainter).__name__}")
    was_training = detector.training
    if was_training:
        logger.debug("detector was in training mode; using eval() for disentangle")
        detector.eval()
    try:
        with torch.inference_mode():
            logits = _check_logits(detector(images), images.shape[0])
            prob = torch.sigmoid(logits.to(images.dtype))
            alpha, loose_mask = masks_from_background_prob(
                prob, tuple(images.shape[-2:]), tight=tight, loose=loose
            )
            background = inpainter(images, loose_mask)
            foreground = images * alpha
    finally:
        if was_training:
            detector.train()
    return Disentangled(
        foreground=foreground, alpha=alpha, loose=loose_mask, background=background, prob=prob
    )


def disentangle_image(
    image: np.ndarray,
    detector: nn.Module,
    inpainter: Inpainter,
    tight: float = 0.5,
    loose: float = 0.9,
    size: int | tuple[int, int] | None = None,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """:func:`disentangle` for one ``(H, W, 3)`` uint8 RGB picture; numpy in, numpy out.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (an ``(H, W, 4)`` RGBA image has its alpha dropped).
        detector, inpainter, tight, loose: see :func:`disentangle`.
        size: resize to this ``(H, W)`` (or square side) first, bilinear with antialiasing,
            e.g. the detector's 224; None keeps the image size.
        device: where to run; None uses the detector's device (CPU for a parameterless one).

    Returns:
        :meth:`Disentangled.numpy` of the single result: ``foreground_rgba`` ``(h, w, 4)``,
        ``background`` ``(h, w, 3)``, ``alpha`` and ``loose`` ``(h, w)`` uint8, ``prob``
        ``(G, G)`` float32, at the (resized) size ``(h, w)``.

    Raises:
        ConfigError: ``image`` is not ``(H, W, 3|4)`` uint8, ``size`` is invalid, or any error
            of :func:`disentangle`.

    Example:
        >>> from torch import nn
        >>> from abs_ray.models.inpainters import create_inpainter
        >>> class AllBackground(nn.Module):
        ...     def forward(self, x):
        ...         return torch.full((x.shape[0], 2, 2), 5.0)
        >>> picture = np.zeros((10, 12, 3), dtype=np.uint8)
        >>> out = disentangle_image(picture, AllBackground(), create_inpainter("gray"), size=8)
        >>> out["background"].shape, int(out["alpha"].max())
        ((8, 8, 3), 0)
    """
    if (
        not isinstance(image, np.ndarray)
        or image.dtype != np.uint8
        or image.ndim != 3
        or image.shape[2] not in (3, 4)
    ):
        desc = (
            f"shape {image.shape} dtype {image.dtype}"
            if isinstance(image, np.ndarray)
            else type(image).__name__
        )
        raise ConfigError(f"image must be an (H, W, 3) uint8 array, got {desc}")
    if device is None:
        param = next(iter(detector.parameters()), None) if isinstance(detector, nn.Module) else None
        device = param.device if param is not None else torch.device("cpu")
    tensor = to_float_chw(image[None, ..., :3], device=device)
    if size is not None:
        hw = (size, size) if isinstance(size, int) and not isinstance(size, bool) else size
        if (
            not isinstance(hw, tuple | list)
            or len(hw) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw)
        ):
            raise ConfigError(
                f"size must be a positive int or (H, W) of positive ints, got {size!r}"
            )
        if tuple(hw) != tuple(tensor.shape[-2:]):
            tensor = F.interpolate(
                tensor, size=tuple(hw), mode="bilinear", align_corners=False, antialias=True
            ).clamp(0.0, 1.0)
    return disentangle(tensor, detector, inpainter, tight=tight, loose=loose).numpy(0)
