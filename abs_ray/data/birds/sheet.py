"""Looking at a built benchmark: counts per split and group, and a contact sheet of samples."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from abs_ray.data.birds.build import GROUP_NAMES
from abs_ray.data.layouts import load_dataset
from abs_ray.data.manifest import SPLITS
from abs_ray.errors import ConfigError
from abs_ray.io import S3Options, decode_image, encode_png, read_bytes, write_bytes

logger = logging.getLogger(__name__)

__all__ = ["contact_sheet", "split_group_table"]


def split_group_table(df: pd.DataFrame) -> pd.DataFrame:
    """Sample counts with one row per split (train, val, test) and one column per group.

    >>> df = pd.DataFrame({"split": ["train", "test", "test"], "group": [0, 1, 3]})
    >>> split_group_table(df).values.tolist()
    [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    """
    table = pd.crosstab(df["split"], df["group"])
    return table.reindex(index=[s for s in SPLITS], fill_value=0).fillna(0).astype(int)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a bool mask that touch a background pixel (4-neighbourhood).

    Three lines of numpy: this package does not import torch or scipy for an erosion.

    >>> _outline(np.ones((3, 4), bool)).astype(int).tolist()
    [[1, 1, 1, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    """
    padded = np.pad(mask, 1, mode="constant")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def _thumbnail(image_uri: str, mask_uri: object, thumb: int, s3: S3Options | None) -> Image.Image:
    """The image as a ``thumb`` x ``thumb`` tile, its mask outline (if any) in red."""
    image = decode_image(read_bytes(image_uri, s3))
    tile = np.array(Image.fromarray(image).resize((thumb, thumb), Image.Resampling.BILINEAR))
    if isinstance(mask_uri, str):
        mask = Image.fromarray(decode_image(read_bytes(mask_uri, s3))[..., 0])
        mask = np.asarray(mask.resize((thumb, thumb), Image.Resampling.NEAREST))
        tile[_outline(mask >= 128)] = (255, 0, 0)
    return Image.fromarray(tile)


def contact_sheet(
    dataset_uri: str,
    out_png: str,
    per_group: int = 4,
    s3: S3Options | None = None,
    *,
    thumb: int = 128,
    names: Mapping[int, str] | None = None,
) -> str:
    """Write a PNG grid: one row per (split, group), ``per_group`` samples each.

    Each thumbnail shows the image with its mask outline in red (when the data set has
    masks), so misaligned masks stand out. The first samples of each row in manifest order
    are shown, so the sheet is the same every time.

    Args:
        dataset_uri: any layout :func:`~abs_ray.data.layouts.load_dataset` reads.
        out_png: destination PNG, local or ``s3://``.
        per_group: thumbnails per row, ``>= 1``.
        s3: S3 settings; default from the environment.
        thumb: thumbnail side in pixels.
        names: group index → label text; default :data:`GROUP_NAMES`.

    Returns:
        ``out_png``.

    Raises:
        ConfigError: ``per_group`` or ``thumb`` below 1.
        LayoutError, ManifestRowError: the data set cannot be read.
        ImageDecodeError: an image or mask cannot be decoded.
    """
    if per_group < 1 or thumb < 1:
        raise ConfigError(f"per_group and thumb must be >= 1, got {per_group} and {thumb}")
    names = GROUP_NAMES if names is None else names
    df = load_dataset(dataset_uri, s3)
    df = df.assign(_group=df["group"].fillna(df["label"]).astype(int))
    rows = [
        (split, group, subset)
        for split in SPLITS
        for group in sorted(df["_group"].unique())
        if len(subset := df[(df.split == split) & (df._group == group)])
    ]
    # A text column then the tiles: PIL pastes them (torchvision's make_grid draws no text,
    # and abs_ray.data does not import torch).
    label_width, step = 190, thumb + 4
    size = (label_width + per_group * step, max(1, len(rows)) * step)
    sheet = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(sheet)
    for r, (split, group, subset) in enumerate(rows):
        top = r * step
        header = (f"{split}  group {group}", names.get(group, ""), f"n = {len(subset)}")
        for k, text in enumerate(header):
            draw.text((4, top + 8 + 18 * k), text, fill="black")
        for c, item in enumerate(subset.head(per_group).itertuples()):
            tile = _thumbnail(item.image_uri, item.mask_uri, thumb, s3)
            sheet.paste(tile, (label_width + c * step, top))
    write_bytes(out_png, encode_png(np.asarray(sheet)), s3)
    logger.info("contact sheet of %d rows written to %s", len(rows), out_png)
    return out_png
