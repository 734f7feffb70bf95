"""Pasting a bird cut-out on a photo crop: replayable parameters, then a deterministic paste.

:func:`sample_paste_params` draws everything random about one sample into a
:class:`PasteParams`; :func:`compose_bird` applies it to a stamp and a photo (as
:func:`load_stamp` and :func:`load_photo` read them), so a metadata row that records the
parameters reproduces its sample exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from abs_ray.errors import ConfigError, DatasetError

__all__ = ["PasteParams", "compose_bird", "load_photo", "load_stamp", "sample_paste_params"]


def load_stamp(path: str) -> np.ndarray:
    """A bird stamp as :func:`compose_bird` takes it.

    Args:
        path: an image file with an alpha channel (foreground = alpha >= 128).

    Returns:
        (h, w, 4) uint8 RGBA, cropped to the alpha bounding box.

    Raises:
        DatasetError: the file cannot be read, or has no opaque pixel.
    """
    try:
        with Image.open(path) as img:
            rgba = np.asarray(img.convert("RGBA"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read bird stamp {path}: {exc}") from exc
    rows, cols = np.nonzero(rgba[..., 3] >= 128)
    if rows.size == 0:
        raise DatasetError(f"bird stamp {path} has no opaque pixels (alpha >= 128)")
    return rgba[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].copy()


def load_photo(path: str, short_side: int) -> np.ndarray:
    """A background photo as :func:`compose_bird` takes it.

    Args:
        path: an image file (JPEG is decoded at a reduced scale when that is enough).
        short_side: the shorter side after scaling, in pixels.

    Returns:
        (h, w, 3) uint8 RGB with ``min(h, w) == short_side``.

    Raises:
        DatasetError: the file cannot be read.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            scale = short_side / min(width, height)
            target = (max(short_side, round(width * scale)), max(short_side, round(height * scale)))
            img.draft("RGB", target)  # JPEG: decode at a reduced scale, much faster
            rgb = img.convert("RGB").resize(target, Image.Resampling.LANCZOS)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read background photo {path}: {exc}") from exc
    return np.asarray(rgb)


@dataclasses.dataclass(frozen=True)
class PasteParams:
    """Everything random about one sample; :func:`compose_bird` applies it deterministically.

    Attributes:
        crop_side: square crop side as a fraction of the photo's shorter side, in (0, 1].
        crop_x: crop position in [0, 1] along the free width (0 = left edge).
        crop_y: crop position in [0, 1] along the free height (0 = top edge).
        scale: bird's longer side as a fraction of the output side, in (0, 1].
        pos_x: bird position in [0, 1] along the free width (the bird stays in frame).
        pos_y: bird position in [0, 1] along the free height.
        flip: mirror the bird horizontally.
    """

    crop_side: float
    crop_x: float
    crop_y: float
    scale: float
    pos_x: float
    pos_y: float
    flip: bool

    def as_meta(self) -> dict[str, float | bool]:
        """The values for a metadata row (full precision: the row reproduces the sample)."""
        return dataclasses.asdict(self)


def sample_paste_params(
    rng: np.random.Generator,
    crop_range: tuple[float, float] = (0.6, 1.0),
    scale_range: tuple[float, float] = (0.45, 0.75),
) -> PasteParams:
    """Draw one :class:`PasteParams` (uniform in the ranges, flip with p = 0.5).

    >>> p = sample_paste_params(np.random.default_rng(0))
    >>> 0.45 <= p.scale <= 0.75 and 0.6 <= p.crop_side <= 1.0
    True
    """
    return PasteParams(
        crop_side=float(rng.uniform(*crop_range)),
        crop_x=float(rng.uniform()),
        crop_y=float(rng.uniform()),
        scale=float(rng.uniform(*scale_range)),
        pos_x=float(rng.uniform()),
        pos_y=float(rng.uniform()),
        flip=bool(rng.uniform() < 0.5),
    )


def compose_bird(
    stamp: np.ndarray, photo: np.ndarray, params: PasteParams, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste a bird cut-out on a square crop of a photo.

    The stamp is resized with premultiplied alpha, then its alpha is thresholded at 128 and
    used as a hard mask, so the image equals the background exactly outside the mask.

    Args:
        stamp: (h, w, 4) uint8 RGBA cut-out (alpha = foreground).
        photo: (H, W, 3) uint8 RGB photo.
        params: crop, scale, position and flip.
        size: output side in pixels.

    Returns:
        ``(image, mask, background)``: (size, size, 3) uint8, (size, size) uint8 with 255 =
        bird, (size, size, 3) uint8 crop without the bird.

    Raises:
        ConfigError: arrays of the wrong shape, or parameters out of range.

    >>> stamp = np.full((10, 20, 4), 255, np.uint8)  # a white 20 x 10 box
    >>> photo = np.full((50, 80, 3), 7, np.uint8)
    >>> image, mask, bg = compose_bird(stamp, photo, PasteParams(1, .5, .5, .5, 0, 0, False), 32)
    >>> int(mask.sum() // 255), int(image[mask == 255].min()), int(bg.max())
    (128, 255, 7)
    """
    if stamp.ndim != 3 or stamp.shape[2] != 4 or photo.ndim != 3 or photo.shape[2] != 3:
        raise ConfigError(
            f"stamp must be (h, w, 4) and photo (H, W, 3), got {stamp.shape} and {photo.shape}"
        )
    if not (0 < params.crop_side <= 1 and 0 < params.scale <= 1):
        raise ConfigError(f"crop_side and scale must be in (0, 1], got {params}")
    height, width = photo.shape[:2]
    side = params.crop_side * min(height, width)
    x0, y0 = params.crop_x * (width - side), params.crop_y * (height - side)
    background = np.asarray(
        Image.fromarray(photo).resize(
            (size, size), Image.Resampling.BICUBIC, box=(x0, y0, x0 + side, y0 + side)
        )
    )
    h, w = stamp.shape[:2]
    factor = params.scale * size / max(h, w)
    bw, bh = max(1, min(size, round(w * factor))), max(1, min(size, round(h * factor)))
    bird = Image.fromarray(stamp, mode="RGBA").resize((bw, bh), Image.Resampling.LANCZOS)
    bird = np.asarray(bird)
    if params.flip:
        bird = bird[:, ::-1]
    left, top = round(params.pos_x * (size - bw)), round(params.pos_y * (size - bh))
    mask = np.zeros((size, size), dtype=bool)
    mask[top : top + bh, left : left + bw] = bird[..., 3] >= 128
    image = background.copy()
    image[top : top + bh, left : left + bw][mask[top : top + bh, left : left + bw]] = bird[..., :3][
        bird[..., 3] >= 128
    ]
    return image, mask.astype(np.uint8) * 255, background
