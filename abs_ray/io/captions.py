"""Words on the pictures people read: row labels and legends for contact sheets.

Pillow draws the text with its built-in font (no font file, nothing downloaded). The sheets
stay plain ``(H, W, 3)`` uint8 arrays; captions are added beside or under them, never over
the pixels a person is asked to judge.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from abs_ray.errors import ConfigError

__all__ = ["add_legend", "label_rows"]

#: Text size in pixels; rows lower than the text get a smaller one.
FONT_SIZE = 12
_MARGIN = 4
_WHITE = (255, 255, 255)
_INK = (20, 20, 20)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(6, size))


def _check(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3:
        raise ConfigError(f"a caption needs an (H, W, 3) uint8 image, got {image!r:.60}")


def label_rows(image: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """``image`` cut into ``len(labels)`` rows of equal height, each named in a white column
    added on its left.

    Args:
        image: ``(H, W, 3)`` uint8 with ``H`` divisible by ``len(labels)``.
        labels: one text per row, top to bottom.

    Returns:
        ``(H, w + W, 3)`` uint8; the original pixels unchanged at the right.

    Raises:
        ConfigError: not an RGB uint8 image, no labels, or rows of unequal height.

    Example:
        >>> sheet = np.zeros((60, 90, 3), dtype=np.uint8)
        >>> out = label_rows(sheet, ["input", "background", "swapped"])
        >>> out.shape[0] == 60 and out.shape[1] > 90 and bool((out[:, -90:] == 0).all())
        True
    """
    _check(image)
    if not labels or image.shape[0] % len(labels):
        raise ConfigError(f"{len(labels)} labels for a sheet {image.shape[0]} px high")
    row = image.shape[0] // len(labels)
    font = _font(min(FONT_SIZE, row - 2))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    width = int(max(probe.textlength(text, font=font) for text in labels)) + 2 * _MARGIN
    column = Image.new("RGB", (width, image.shape[0]), _WHITE)
    draw = ImageDraw.Draw(column)
    for i, text in enumerate(labels):
        draw.text((_MARGIN, i * row + row // 2), text, fill=_INK, font=font, anchor="lm")
    return np.concatenate([np.asarray(column), image], axis=1)


def add_legend(image: np.ndarray, items: Sequence[tuple[tuple[int, int, int], str]]) -> np.ndarray:
    """A white strip under ``image`` with one colour swatch and its meaning per item.

    Args:
        image: ``(H, W, 3)`` uint8.
        items: ``((r, g, b), text)`` pairs, left to right (wrapped onto more lines when the
            sheet is narrow).

    Returns:
        ``(H + h, W, 3)`` uint8; the original pixels unchanged at the top.

    Raises:
        ConfigError: not an RGB uint8 image, or no items.

    Example:
        >>> out = add_legend(np.zeros((40, 200, 3), np.uint8), [((255, 0, 0), "background")])
        >>> out.shape[0] > 40 and out.shape[1] == 200 and bool((out[:40] == 0).all())
        True
    """
    _check(image)
    if not items:
        raise ConfigError("a legend needs at least one item")
    font, width = _font(FONT_SIZE), image.shape[1]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height, swatch = FONT_SIZE + 2 * _MARGIN, FONT_SIZE
    places, x, y = [], _MARGIN, _MARGIN
    for colour, text in items:
        size = swatch + _MARGIN + int(probe.textlength(text, font=font)) + 3 * _MARGIN
        if x > _MARGIN and x + size > width:
            x, y = _MARGIN, y + line_height
        places.append((x, y, colour, text))
        x += size
    strip = Image.new("RGB", (width, y + line_height), _WHITE)
    draw = ImageDraw.Draw(strip)
    for x, y, colour, text in places:
        draw.rectangle((x, y, x + swatch, y + swatch), fill=tuple(colour), outline=_INK)
        draw.text((x + swatch + _MARGIN, y + swatch // 2), text, fill=_INK, font=font, anchor="lm")
    return np.concatenate([image, np.asarray(strip)], axis=0)
