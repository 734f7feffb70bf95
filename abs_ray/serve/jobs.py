"""What the swap model is asked and what it answers: :class:`Job`, its options and results.

Plain dataclasses (no Ray, no HTTP): the ingress builds a :class:`Job` from a request,
:class:`~abs_ray.serve.service.SwapService` answers it with a :class:`SwapResult`,
:class:`MaskResult` or :class:`InpaintResult`. :func:`check_job` refuses a malformed job
with a typed request error before any model runs.

Example:
    >>> SwapOptions(n=2, seed=1).swap_config(224).translate
    32.0
    >>> SwapOptions(n=0)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: n must be an int >= 1, got 0
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np

from abs_ray.errors import ConfigError
from abs_ray.ops import SwapConfig
from abs_ray.web.errors import InvalidRequestError

__all__ = [
    "InpaintResult",
    "Job",
    "JobKind",
    "MaskResult",
    "Result",
    "SwapOptions",
    "SwapResult",
    "check_job",
]

JobKind = Literal["swap", "mask", "inpaint"]
_KINDS = ("swap", "mask", "inpaint")


@dataclasses.dataclass(frozen=True)
class SwapOptions:
    """What one swap request asks for (defaults: the paper's Waterbirds ranges).

    Attributes:
        n: number of variants, ``>= 1``.
        seed: seed of the parameter draw; same seed, same result.
        scale: ``(low, high)`` uniform scale range.
        degrees: rotation uniform in ``[-degrees, degrees]``.
        translate: shift range per axis as a fraction of the image's shorter side.
        keep_in_frame: keep the moved foreground inside the image.
        class_uniform: draw the background's class uniformly first (else uniform over the
            selected backgrounds).
        labels: only backgrounds of these classes (empty = all).
        groups: only backgrounds of these groups (empty = all).
        feather: inward feathering sigma in pixels (0 = hard alpha).

    Raises:
        ConfigError: a value is out of range (via :class:`~abs_ray.ops.SwapConfig`).
    """

    n: int = 1
    seed: int = 0
    scale: tuple[float, float] = (0.5, 1.5)
    degrees: float = 30.0
    translate: float = 32 / 224
    keep_in_frame: bool = True
    class_uniform: bool = True
    labels: tuple[int, ...] = ()
    groups: tuple[int, ...] = ()
    feather: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"n must be an int >= 1, got {self.n!r}")
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**63
        ):
            raise ConfigError(f"seed must be an int in [0, 2**63), got {self.seed!r}")
        if not isinstance(self.translate, int | float) or not 0 <= self.translate <= 1:
            raise ConfigError(f"translate must be a fraction in [0, 1], got {self.translate!r}")
        if not isinstance(self.feather, int | float) or not 0 <= self.feather <= 64:
            raise ConfigError(f"feather must be a sigma in [0, 64] pixels, got {self.feather!r}")
        for name in ("labels", "groups"):
            values = getattr(self, name)
            bad = [
                v
                for v in values
                if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63
            ]
            if bad:
                raise ConfigError(f"{name} must be int64 values, got {bad[:3]!r}")
        self.swap_config(224)  # validates scale, degrees and the flags

    def swap_config(self, short_side: int) -> SwapConfig:
        """The :class:`~abs_ray.ops.SwapConfig` for an image whose shorter side is given."""
        return SwapConfig(
            scale=tuple(self.scale),
            degrees=self.degrees,
            translate=float(self.translate) * short_side,
            class_uniform=self.class_uniform,
            keep_in_frame=self.keep_in_frame,
        )


@dataclasses.dataclass(frozen=True, eq=False)
class Job:
    """One request for the model.

    Attributes:
        kind: ``swap``, ``mask`` or ``inpaint``.
        image: ``(H, W, 3)`` uint8 RGB.
        mask: optional ``(H, W)`` uint8 foreground mask from the caller (0 = background,
            255 = object; intermediate values are a soft alpha); replaces the mask source.
        background: optional ``(h, w, 3)`` uint8 background from the caller (``swap``);
            resized to the image; replaces the bank.
        swap: :class:`SwapOptions` (``swap`` only; default ``SwapOptions()``).
    """

    kind: JobKind
    image: np.ndarray
    mask: np.ndarray | None = None
    background: np.ndarray | None = None
    swap: SwapOptions | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class SwapResult:
    """``images``: ``n`` ``(H, W, 3)`` uint8; ``params``: one JSON-able record each.

    ``bank_fingerprint`` identifies the bank drawn from (None for an uploaded background):
    replaying a seed gives the same result only on the same bank.
    """

    images: list[np.ndarray]
    params: list[dict[str, Any]]
    seed: int
    mask_source: str
    foreground_fraction: float
    bank_fingerprint: str | None


@dataclasses.dataclass(frozen=True, eq=False)
class MaskResult:
    """Tight and loose masks ``(H, W)`` uint8 in ``{0, 255}``; ``prob`` the ``(G, G)`` grid."""

    alpha: np.ndarray
    loose: np.ndarray
    prob: np.ndarray | None
    tight_threshold: float
    loose_threshold: float
    mask_source: str


@dataclasses.dataclass(frozen=True, eq=False)
class InpaintResult:
    """``background``: ``(H, W, 3)`` uint8 with the hole filled; ``hole_fraction`` of pixels."""

    background: np.ndarray
    hole_fraction: float
    mask_source: str


Result = SwapResult | MaskResult | InpaintResult


def check_job(job: object) -> Job:
    """``job`` when it is a well-formed :class:`Job`.

    Raises:
        InvalidRequestError: a wrong kind, array type, shape or size.
    """
    if not isinstance(job, Job) or job.kind not in _KINDS:
        raise InvalidRequestError(f"expected a Job of kind {_KINDS}, got {job!r}")
    image = job.image
    if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3):
        raise InvalidRequestError("image must be an (H, W, 3) uint8 array")
    if image.shape[2] != 3 or min(image.shape[:2]) < 2:
        raise InvalidRequestError(f"image must be (H, W, 3) with H, W >= 2, got {image.shape}")
    if job.mask is not None:
        mask = job.mask
        if not (isinstance(mask, np.ndarray) and mask.dtype == np.uint8 and mask.ndim == 2):
            raise InvalidRequestError("mask must be an (H, W) uint8 array")
        if mask.shape != image.shape[:2]:
            raise InvalidRequestError(
                f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{image.shape[1]}x{image.shape[0]}: they must be the same size"
            )
    if job.background is not None:
        bg = job.background
        if not (isinstance(bg, np.ndarray) and bg.dtype == np.uint8 and bg.ndim == 3):
            raise InvalidRequestError("background must be an (H, W, 3) uint8 array")
        if job.kind != "swap":
            raise InvalidRequestError(f"a background upload is only for swap, not {job.kind}")
    if job.swap is not None and not isinstance(job.swap, SwapOptions):
        raise InvalidRequestError(f"swap options must be SwapOptions, got {type(job.swap)}")
    return job
