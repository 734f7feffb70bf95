"""The detector's training augmentation: image and patch-label grid move together.

Randomness apart from application: :func:`sample_augment_params` draws an
:class:`AugmentParams` from a seeded generator, and :func:`apply_augment` applies it
deterministically, so any augmented view can be made again from its draw.

Order (the paper's list): horizontal and vertical flips, a quarter turn, a shift by whole
patches (image and grid), then colour jitter (brightness, contrast, saturation, hue;
torchvision's formulas, clamped to ``[0, 1]`` after each) and grayscale on the image only.

What comes from kornia, and why not more: flips, quarter turns, colour jitter and grayscale
are what ``AugmentationSequential(RandomHorizontalFlip, RandomVerticalFlip, RandomRotation90,
ColorJitter, RandomGrayscale, data_keys=["input", "mask"])`` does, and replaying our draws as
its ``params`` gives the same pixels and grids. Timed on the detector's batch
(``bench/detector_augment.py``, 32 x 224 px, G = 16, one CPU thread of a shared machine,
median of 20 interleaved rounds; kornia / ours), the containers were slower in every part:
flips 1.8x (kornia wants the mask at the image's size, so the grid goes up and back),
``RandomRotation90`` 4.4x (an affine warp with ``grid_sample``, not ``torch.rot90``),
``ColorJitter`` 1.07x, ``RandomGrayscale`` 1.9x, all four 1.2x. The colour steps as
``kornia.enhance`` functions tie with hand-written formulas (0.93-1.04x over five runs), so
:func:`jitter_colour` calls those; flips, turns and grayscale stay plain tensor code. The
patch shift is ours in any case: kornia's translations warp with ``grid_sample``, which has no
wrap-around fill.

Example:
    >>> params = sample_augment_params(2, AugmentConfig(), torch.Generator().manual_seed(0))
    >>> images, labels = apply_augment(torch.rand(2, 3, 32, 32), torch.zeros(2, 4, 4), params)
    >>> images.shape, labels.shape
    (torch.Size([2, 3, 32, 32]), torch.Size([2, 4, 4]))
"""

from __future__ import annotations

import dataclasses
import math

import kornia
import torch

from abs_ray._checks import check_int, check_number
from abs_ray.errors import ConfigError

__all__ = [
    "SHIFT_FILLS",
    "AugmentConfig",
    "AugmentParams",
    "apply_augment",
    "flip",
    "jitter_colour",
    "quarter_turn",
    "sample_augment_params",
    "shift_patches",
    "to_grayscale",
]

#: How a patch shift fills what it uncovers.
SHIFT_FILLS = ("wrap", "zeros")


def _check_fill(shift_fill: object) -> None:
    if shift_fill not in SHIFT_FILLS:
        raise ConfigError(f"shift_fill must be one of {SHIFT_FILLS}, got {shift_fill!r}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of the detector's training images (the paper's list).

    Attributes:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rot90: rotate by a uniformly drawn multiple of 90 degrees.
        max_shift_patches: shift by a whole number of patches drawn uniformly from
            ``[-m, m]`` along each axis (image and grid together).
        shift_fill: ``"wrap"`` (what leaves one side comes back on the other; every pixel
            stays a photo pixel and the grid stays exact) or ``"zeros"`` (black pixels,
            labelled background).
        brightness: brightness factor drawn from ``[1 - b, 1 + b]``.
        contrast: contrast factor drawn from ``[1 - c, 1 + c]``.
        saturation: saturation factor drawn from ``[1 - s, 1 + s]``.
        hue: hue shift drawn from ``[-h, h]`` turns (0.5 = half the colour wheel).
        grayscale: probability of converting to grayscale (after the jitter).

    Raises:
        ConfigError: a value out of range.
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    max_shift_patches: int = 4
    shift_fill: str = "wrap"
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    grayscale: float = 0.2

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "grayscale", "brightness", "contrast", "saturation"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        check_number("hue", self.hue, 0.0, 0.5)
        check_int("max_shift_patches", self.max_shift_patches, 0)
        _check_fill(self.shift_fill)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (every draw is the identity)."""
        return cls(0.0, 0.0, False, 0, "wrap", 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One augmentation draw for a batch of ``B`` images (all tensors on CPU).

    Attributes:
        hflip: ``(B,)`` bool.
        vflip: ``(B,)`` bool.
        rot90: ``(B,)`` int64 in ``0..3``, counter-clockwise quarter turns.
        shift: ``(B, 2)`` int64 ``(dy, dx)`` in patches.
        brightness: ``(B,)`` float multiplicative factor.
        contrast: ``(B,)`` float factor.
        saturation: ``(B,)`` float factor.
        hue: ``(B,)`` float shift in turns.
        grayscale: ``(B,)`` bool.
    """

    hflip: torch.Tensor
    vflip: torch.Tensor
    rot90: torch.Tensor
    shift: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    grayscale: torch.Tensor

    def __len__(self) -> int:
        return int(self.hflip.shape[0])


def sample_augment_params(
    batch_size: int, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> AugmentParams:
    """Draw augmentation parameters for ``batch_size`` images.

    Args:
        batch_size: number of images ``B >= 1``.
        cfg: the :class:`AugmentConfig`.
        generator: CPU random generator (for reproducible draws).

    Returns:
        An :class:`AugmentParams` with CPU tensors.

    Raises:
        ConfigError: ``batch_size < 1``.

    Example:
        >>> p = sample_augment_params(3, AugmentConfig(), torch.Generator().manual_seed(0))
        >>> len(p), p.shift.shape, bool((p.shift.abs() <= 4).all())
        (3, torch.Size([3, 2]), True)
    """
    b = check_int("batch_size", batch_size, 1)

    def uniform(half: float, centre: float) -> torch.Tensor:
        return centre + (torch.rand(b, generator=generator) * 2.0 - 1.0) * half

    m = cfg.max_shift_patches
    return AugmentParams(
        hflip=torch.rand(b, generator=generator) < cfg.hflip,
        vflip=torch.rand(b, generator=generator) < cfg.vflip,
        rot90=(
            torch.randint(0, 4, (b,), generator=generator)
            if cfg.rot90
            else torch.zeros(b, dtype=torch.long)
        ),
        shift=torch.randint(-m, m + 1, (b, 2), generator=generator),
        brightness=uniform(cfg.brightness, 1.0),
        contrast=uniform(cfg.contrast, 1.0),
        saturation=uniform(cfg.saturation, 1.0),
        hue=uniform(cfg.hue, 0.0),
        grayscale=torch.rand(b, generator=generator) < cfg.grayscale,
    )


# --- the steps --------------------------------------------------------------------------------


def _check_shapes(images: torch.Tensor, labels: torch.Tensor, params: AugmentParams) -> None:
    if (
        images.ndim != 4
        or images.shape[1] != 3
        or images.shape[-1] != images.shape[-2]
        or labels.ndim != 3
        or labels.shape[0] != images.shape[0]
        or labels.shape[-1] != labels.shape[-2]
        or images.shape[-1] % labels.shape[-1]
        or len(params) != images.shape[0]
    ):
        raise ConfigError(
            f"apply_augment needs images (B, 3, S, S), labels (B, G, G) with G dividing S and B "
            f"params; got images {tuple(images.shape)}, labels {tuple(labels.shape)}, "
            f"{len(params)} params"
        )


def flip(
    images: torch.Tensor, labels: torch.Tensor, params: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal, then vertical flips of ``(B, C, S, S)`` images and ``(B, G, G)`` grids alike.

    Returns:
        ``(images, labels)``, new tensors of the input shapes.
    """
    dev = images.device
    hflip, vflip = params.hflip.to(dev), params.vflip.to(dev)
    x = torch.where(hflip[:, None, None, None], images.flip(-1), images)
    y = torch.where(hflip[:, None, None], labels.flip(-1), labels)
    x = torch.where(vflip[:, None, None, None], x.flip(-2), x)
    return x, torch.where(vflip[:, None, None], y.flip(-2), y)


def quarter_turn(
    images: torch.Tensor, labels: torch.Tensor, params: AugmentParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Counter-clockwise quarter turns (``params.rot90``) of images and grids alike.

    Returns:
        ``(images, labels)``, new tensors of the input shapes.
    """
    x, y = images.clone(), labels.clone()
    for k in (1, 2, 3):
        idx = (params.rot90 == k).nonzero().flatten().tolist()
        if idx:
            x[idx] = torch.rot90(x[idx], k, dims=(-2, -1))
            y[idx] = torch.rot90(y[idx], k, dims=(-2, -1))
    return x, y


def _roll(x: torch.Tensor, dy: int, dx: int, fill: str) -> torch.Tensor:
    """Shift a ``(..., H, W)`` tensor by ``(dy, dx)`` pixels, wrapping or zero-filling."""
    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if fill == "zeros":
        if dy > 0:
            out[..., :dy, :] = 0
        elif dy < 0:
            out[..., dy:, :] = 0
        if dx > 0:
            out[..., :dx] = 0
        elif dx < 0:
            out[..., dx:] = 0
    return out


def shift_patches(
    images: torch.Tensor, labels: torch.Tensor, shift: torch.Tensor, patch: int, fill: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift each image by whole patches and its grid by as many cells.

    Ours rather than kornia's: kornia's translations warp with ``grid_sample``, which has no
    wrap-around fill and resamples; a roll by whole patches keeps every pixel and keeps the
    grid exact.

    Args:
        images: ``(B, C, S, S)``.
        labels: ``(B, G, G)`` with ``S = G * patch``.
        shift: ``(B, 2)`` int ``(dy, dx)`` in patches.
        patch: pixels per patch side.
        fill: ``"wrap"`` or ``"zeros"``.

    Returns:
        ``(images, labels)`` of the input shapes (new tensors where a sample moved).

    Raises:
        ConfigError: an unknown ``fill``.
    """
    _check_fill(fill)
    x, y = images.clone(), labels.clone()
    for i, (dy, dx) in enumerate(shift.tolist()):
        if dy or dx:
            x[i] = _roll(x[i], dy * patch, dx * patch, fill)
            y[i] = _roll(y[i], dy, dx, fill)
    return x, y


def _gray(x: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(x)


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(device=like.device, dtype=like.dtype)[:, None, None, None]


def jitter_colour(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (torchvision's formulas, as ``kornia.enhance``
    implements them, in that order, clamped to ``[0, 1]`` after each) of ``(B, 3, H, W)``
    images in ``[0, 1]``.

    Returns:
        ``(B, 3, H, W)`` in ``[0, 1]``.
    """
    dev, dtype = images.device, images.dtype
    brightness, contrast, saturation, hue = (
        v.to(dev, dtype)
        for v in (params.brightness, params.contrast, params.saturation, params.hue)
    )
    x = kornia.enhance.adjust_brightness_accumulative(images, brightness).clamp(0.0, 1.0)
    x = kornia.enhance.adjust_contrast_with_mean_subtraction(x, contrast).clamp(0.0, 1.0)
    x = kornia.enhance.adjust_saturation_with_gray_subtraction(x, saturation).clamp(0.0, 1.0)
    if bool((params.hue != 0).any()):
        x = kornia.enhance.adjust_hue(x, hue * 2.0 * math.pi).clamp(0.0, 1.0)
    return x


def to_grayscale(images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
    """Grey versions (three equal channels) of the images where ``params.grayscale``."""
    gray = _gray(images).expand_as(images)
    return torch.where(_per_sample(params.grayscale.float(), images) > 0, gray, images)


def apply_augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    params: AugmentParams,
    shift_fill: str = "wrap",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply an augmentation draw to images and their patch-label grids together.

    Geometry (flips, then quarter turns, then patch shifts) moves image and grid alike, so
    every grid cell keeps describing the pixels of its patch; colour jitter (brightness,
    contrast, saturation, hue, in that order, clamped to ``[0, 1]`` after each) and grayscale
    change the image only.

    Args:
        images: ``(B, 3, S, S)`` float RGB in ``[0, 1]`` (square; ``G`` divides ``S``).
        labels: ``(B, G, G)`` float patch labels in ``[0, 1]`` (1 = foreground).
        params: a draw from :func:`sample_augment_params` with ``B`` entries.
        shift_fill: ``"wrap"`` or ``"zeros"`` (zero pixels, zero = background labels).

    Returns:
        ``(images, labels)`` of the input shapes, dtypes and devices, images in ``[0, 1]``.

    Raises:
        ConfigError: shapes that do not fit together, or an unknown ``shift_fill``.

    Example:
        >>> img = torch.zeros(1, 3, 8, 8); img[..., :4, :4] = 1.0
        >>> lab = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
        >>> p = sample_augment_params(1, AugmentConfig.none())
        >>> p = dataclasses.replace(p, hflip=torch.tensor([True]))
        >>> out_img, out_lab = apply_augment(img, lab, p)
        >>> out_lab[0].tolist(), float(out_img[0, 0, 0, 7])
        ([[0.0, 1.0], [0.0, 0.0]], 1.0)
    """
    _check_fill(shift_fill)
    _check_shapes(images, labels, params)
    x, y = quarter_turn(*flip(images, labels, params), params)
    x, y = shift_patches(x, y, params.shift, images.shape[-1] // labels.shape[-1], shift_fill)
    return to_grayscale(jitter_colour(x, params), params), y
