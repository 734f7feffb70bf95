"""The inpainter contract every registered inpainter shares: the :class:`Inpainter` base
(input checks, hole dilation, edge cases, compositing), its errors .

The registry, the registered inpainters and the functions that build them are in
:mod:`abs_ray.models.inpainters`.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, ClassVar

import torch

from abs_ray.errors import AbsRayError, ConfigError
from abs_ray.ops.masks import dilate_mask

__all__ = [
    "ALL_HOLE_POLICIES",
    "DEFAULT_INPAINTER",
    "AllHoleError",
    "Inpainter",
    "InpainterOutputError",
    "InpaintingError",
]

logger = logging.getLogger("abs_ray.models.inpainters")

DEFAULT_INPAINTER = "patchmatch"
ALL_HOLE_POLICIES = ("gray", "raise")


class InpaintingError(AbsRayError, ValueError):
    """An image cannot be inpainted as asked."""


class AllHoleError(InpaintingError):
    """The dilated hole covers a whole image (raised with ``all_hole="raise"``)."""


class InpainterOutputError(InpaintingError):
    """A pluggable inpainter returned the wrong type, shape or non-finite values."""


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} dtype {value.dtype} device {value.device}"
    return type(value).__name__


def _check_inputs(image: object, mask: object) -> None:
    """Raise :class:`ConfigError` unless image is (B,3,H,W) floating and mask (B,1,H,W)."""
    if (
        not isinstance(image, torch.Tensor)
        or image.ndim != 4
        or image.shape[1] != 3
        or not image.is_floating_point()
    ):
        raise ConfigError(f"image must be a (B, 3, H, W) floating tensor, got {_describe(image)}")
    if not isinstance(mask, torch.Tensor) or not (
        mask.is_floating_point() or mask.dtype == torch.bool
    ):
        raise ConfigError(f"mask must be a floating or bool tensor, got {_describe(mask)}")
    expected = (image.shape[0], 1, *image.shape[2:])
    if tuple(mask.shape) != expected:
        raise ConfigError(
            f"mask shape {tuple(mask.shape)} does not match image shape {tuple(image.shape)}: "
            f"expected {expected}"
        )
    if mask.device != image.device:
        raise ConfigError(f"mask is on {mask.device}, image on {image.device}")


class Inpainter(abc.ABC):
    """Base of all inpainters: input checks, hole dilation, edge cases and compositing.

    Subclasses implement :meth:`_fill` only; it sees images that each have at least one hole
    pixel and one known pixel, and may return anything of the right shape: only hole pixels of
    its result are kept.

    Args:
        dilate: pixels by which the binarised hole is grown before filling, ``>= 0``.
        all_hole: what to do with an image whose dilated hole covers every pixel: ``"gray"``
            (fill with 0.5 and log a warning) or ``"raise"`` (:class:`AllHoleError`).

    Raises:
        ConfigError: ``dilate`` is not an int ``>= 0`` or ``all_hole`` is not a known policy.
    """

    name: ClassVar[str] = "base"
    #: Runs a model that gains from a GPU (a stage gives it a GPU when the cluster has one).
    uses_gpu: ClassVar[bool] = False
    #: Arguments the runtime supplies when the configuration leaves them out.
    runtime_args: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dilate: int = 3, all_hole: str = "gray") -> None:
        if isinstance(dilate, bool) or not isinstance(dilate, int) or dilate < 0:
            raise ConfigError(f"dilate must be an int >= 0, got {dilate!r}")
        if all_hole not in ALL_HOLE_POLICIES:
            raise ConfigError(
                f"all_hole must be one of {', '.join(ALL_HOLE_POLICIES)}, got {all_hole!r}"
            )
        self.dilate = dilate
        self.all_hole = all_hole

    def config(self) -> dict[str, Any]:
        """Name and settings, plain values, to store next to outputs."""
        return {"name": self.name, "dilate": self.dilate, "all_hole": self.all_hole}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def hole_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The region this inpainter changes: ``mask > 0.5`` dilated by ``self.dilate``.

        Args:
            mask: ``(B, 1, H, W)`` float (or bool) mask, 1 = hole.

        Returns:
            ``(B, 1, H, W)`` float32 mask in ``{0, 1}`` on ``mask``'s device.

        Raises:
            ConfigError: ``mask`` is not a 4-D floating or bool tensor.
        """
        if not isinstance(mask, torch.Tensor) or mask.ndim != 4:
            raise ConfigError(f"mask must be a (B, 1, H, W) tensor, got {_describe(mask)}")
        binary = (mask > 0.5).to(torch.float32)
        return dilate_mask(binary, self.dilate)

    def __call__(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fill the (dilated) hole of every image.

        Args:
            image: ``(B, 3, H, W)`` float in ``[0, 1]``.
            mask: ``(B, 1, H, W)`` float in ``[0, 1]`` (or bool), 1 = hole; binarised at 0.5.

        Returns:
            ``(B, 3, H, W)`` of ``image``'s dtype and device, in ``[0, 1]``; bit-identical to
            ``image`` wherever :meth:`hole_mask` is 0.

        Raises:
            ConfigError: wrong types, shapes (the message names both shapes) or devices.
            AllHoleError: an image's dilated hole covers it entirely and ``all_hole="raise"``.
            InpainterOutputError: a pluggable model returned the wrong shape or non-finite values.
        """
        _check_inputs(image, mask)
        with torch.no_grad():
            hole = self.hole_mask(mask).bool()
            flat = hole.flatten(1)
            has_hole, all_hole = flat.any(dim=1).cpu(), flat.all(dim=1).cpu()
            out = image.clone()
            if bool(all_hole.any()):
                full = all_hole.nonzero().flatten().tolist()
                if self.all_hole == "raise":
                    raise AllHoleError(
                        f"the dilated hole (dilate={self.dilate}) covers all of image(s) {full} "
                        f"of shape {tuple(image.shape[1:])}: no known pixel to inpaint from"
                    )
                logger.warning(
                    "%s: the dilated hole covers all of image(s) %s; filling them with gray 0.5",
                    self.name,
                    full,
                )
                out[all_hole.to(image.device)] = 0.5
            todo = has_hole & ~all_hole
            if not bool(todo.any()):
                return out
            if bool(todo.all()):
                sub_image, sub_hole = image, hole
            else:
                idx = todo.nonzero().flatten().to(image.device)
                sub_image, sub_hole = image[idx], hole[idx]
            filled = self._fill(sub_image, sub_hole.to(image.dtype))
            filled = filled.to(device=image.device, dtype=image.dtype).clamp(0.0, 1.0)
            result = torch.where(sub_hole, filled, sub_image)
            if bool(todo.all()):
                return result
            out[idx] = result
            return out

    @abc.abstractmethod
    def _fill(self, image: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """Fill ``hole`` (``(b, 1, H, W)`` in ``{0, 1}``, image dtype) of ``image`` (``(b, 3, H, W)``).

        Every image has at least one hole and one known pixel. Returns ``(b, 3, H, W)``; only
        its hole pixels are used.
        """
