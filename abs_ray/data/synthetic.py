"""A deterministic synthetic spurious-background benchmark, pure numpy, in seconds.

Class 0 objects are round (disc, ellipse, ring), class 1 objects are angular (square,
rectangle, cross); size, position, rotation and colour are random and independent of the
class. Backgrounds are of two types, named as in Waterbirds: ``place = 0`` "land" (green /
brown noisy texture) and ``place = 1`` "water" (smooth blue horizontal waves). In train,
the background agrees with the class (``place == y``) for a fraction ``correlation`` of
each class (1.0 by default: never broken); val follows the train distribution unless
``val_correlation`` is given (0.5 balances its groups, as Waterbirds' val is); test has all
four groups ``y * 2 + place`` in equal numbers.

Masks are exact: the image differs from the clean background in exactly the mask pixels,
and the clean background of every sample is returned too (an oracle inpainting).

Example:
    >>> cfg = SyntheticConfig(n_train=4, n_val=2, n_test=4, size=32, seed=1)
    >>> samples = list(generate_synthetic(cfg))
    >>> [s.split for s in samples].count("test"), samples[0].image.shape
    (4, (32, 32, 3))
    >>> all(s.place == s.y for s in samples if s.split == "train")
    True
    >>> s = samples[0]
    >>> bool(((s.image != s.background).any(axis=-1) == (s.mask == 255)).all())
    True
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd

from abs_ray.data._groups import check_split_sizes, group_sequence, split_counts
from abs_ray.data.layouts import Sample, read_waterbirds, write_waterbirds
from abs_ray.errors import ConfigError
from abs_ray.io import S3Options

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_SHAPES",
    "PLACE_NAMES",
    "SyntheticConfig",
    "generate_synthetic",
    "render_background",
    "render_object",
    "write_synthetic",
]

#: Shapes drawn for each class.
CLASS_SHAPES: dict[int, tuple[str, ...]] = {
    0: ("disc", "ellipse", "ring"),
    1: ("square", "rectangle", "cross"),
}
#: Background type per place index.
PLACE_NAMES: dict[int, str] = {0: "land", 1: "water"}
_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic benchmark.

    Attributes:
        n_train: train samples (classes balanced).
        n_val: val samples (classes balanced).
        n_test: test samples; a multiple of 4 so the four groups are equal.
        size: image side in pixels, ``>= 16``.
        correlation: fraction of each train class on its "own" background
            (``place == y``), in ``[0, 1]``.
        seed: seed of every random draw; same seed, same bytes.
        val_correlation: the same for val; None follows ``correlation``.

    Raises:
        ConfigError: a value is out of range.
    """

    n_train: int = 1000
    n_val: int = 200
    n_test: int = 400
    size: int = 64
    correlation: float = 1.0
    seed: int = 0
    val_correlation: float | None = None

    def __post_init__(self) -> None:
        check_split_sizes(
            self.n_train, self.n_val, self.n_test, self.correlation, self.val_correlation
        )
        if not isinstance(self.size, int) or self.size < 16:
            raise ConfigError(f"size must be an int >= 16, got {self.size!r}")

    def split_counts(self) -> dict[str, dict[int, int]]:
        """``{split: {group: count}}`` this config produces."""
        return split_counts(
            self.n_train, self.n_val, self.n_test, self.correlation, self.val_correlation
        )


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) float noise in [0, 1]: a random (cells+1)² grid, smoothstep-interpolated."""
    grid = rng.random((cells + 1, cells + 1))
    t = np.linspace(0.0, cells, size, endpoint=False) + cells / (2 * size)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    f = f * f * (3 - 2 * f)
    rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def render_background(place: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """A textured background of one type.

    Args:
        place: 0 = "land" (green/brown noisy texture), 1 = "water" (blue horizontal waves).
        size: side in pixels.
        rng: source of every random draw.

    Returns:
        (size, size, 3) uint8 RGB.

    Raises:
        ConfigError: unknown ``place``.

    >>> bg = render_background(1, 16, np.random.default_rng(0))
    >>> bg.shape, bg.dtype, bool(bg[..., 2].mean() > bg[..., 0].mean())
    ((16, 16, 3), dtype('uint8'), True)
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    if place == 1:
        base = np.array([rng.uniform(10, 70), rng.uniform(80, 150), rng.uniform(160, 230)])
        freq, phase = rng.uniform(2.0, 6.0), rng.uniform(0, 2 * np.pi)
        bend, bend_freq, bend_phase = (
            rng.uniform(0.3, 1.2),
            rng.uniform(0.5, 2.0),
            rng.uniform(0, 2 * np.pi),
        )
        waves = np.sin(
            2 * np.pi * freq * yy + phase + bend * np.sin(2 * np.pi * bend_freq * xx + bend_phase)
        )
        ripples = np.sin(2 * np.pi * 3 * freq * yy + rng.uniform(0, 2 * np.pi))
        shade = 1.0 + 0.18 * waves + 0.05 * ripples
        image = base[None, None, :] * shade[..., None] + rng.normal(0, 2.0, (size, size, 1))
    elif place == 0:
        green = np.array([rng.uniform(40, 90), rng.uniform(100, 150), rng.uniform(20, 60)])
        brown = np.array([rng.uniform(100, 150), rng.uniform(70, 100), rng.uniform(30, 60)])
        coarse = _smooth_noise(rng, size, int(rng.integers(3, 7)))
        fine = _smooth_noise(rng, size, int(rng.integers(10, 17)))
        mix = np.clip(0.7 * coarse + 0.3 * fine, 0, 1)[..., None]
        image = green * (1 - mix) + brown * mix + rng.normal(0, 10.0, (size, size, 3))
    else:
        raise ConfigError(f"place must be one of {sorted(PLACE_NAMES)}, got {place!r}")
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_object(
    label: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, object]]:
    """A class-specific shape with random size, position, rotation and colour.

    Args:
        label: 0 = round shapes, 1 = angular shapes (:data:`CLASS_SHAPES`).
        size: image side in pixels.
        rng: source of every random draw.

    Returns:
        ``(colour, mask, params)``: (size, size, 3) uint8 object colours (meaningful where
        the mask is set), (size, size) bool mask, and the drawn parameters.

    Raises:
        ConfigError: unknown ``label``.

    >>> colour, mask, params = render_object(0, 32, np.random.default_rng(0))
    >>> mask.shape, bool(mask.any()), params["shape"] in CLASS_SHAPES[0]
    ((32, 32), True, True)
    """
    if label not in CLASS_SHAPES:
        raise ConfigError(f"label must be one of {sorted(CLASS_SHAPES)}, got {label!r}")
    shape = str(rng.choice(CLASS_SHAPES[label]))
    radius = rng.uniform(0.15, 0.3) * size
    reach = 1.15 * radius  # every shape fits in this circle, so it stays in frame
    cx, cy = rng.uniform(reach, size - reach, 2)
    angle = rng.uniform(0, np.pi / 2)
    aspect = rng.uniform(0.5, 0.8)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dx, dy = xx - cx, yy - cy
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if shape == "disc":
        mask = u**2 + v**2 <= radius**2
    elif shape == "ellipse":
        mask = (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1
    elif shape == "ring":
        d2 = u**2 + v**2
        mask = (d2 <= radius**2) & (d2 >= (radius * aspect * 0.75) ** 2)
    elif shape == "square":
        mask = np.maximum(np.abs(u), np.abs(v)) <= 0.8 * radius
    elif shape == "rectangle":
        mask = (np.abs(u) <= 0.8 * radius) & (np.abs(v) <= 0.8 * radius * aspect)
    else:  # cross
        arm, width = radius, radius * aspect * 0.5
        mask = ((np.abs(u) <= arm) & (np.abs(v) <= width)) | (
            (np.abs(u) <= width) & (np.abs(v) <= arm)
        )
    base = rng.uniform(0, 255, 3)
    light = rng.uniform(0, 2 * np.pi)
    shade = 1.0 + 0.2 * (dx * np.cos(light) + dy * np.sin(light)) / max(radius, 1.0)
    colour = np.clip(np.rint(base[None, None, :] * shade[..., None]), 0, 255).astype(np.uint8)
    params = {
        "shape": shape,
        "cx": round(float(cx), 3),
        "cy": round(float(cy), 3),
        "radius": round(float(radius), 3),
        "angle": round(float(angle), 4),
    }
    return colour, mask, params


def _sample(cfg: SyntheticConfig, split: str, index: int, y: int, place: int) -> Sample:
    rng = np.random.default_rng([cfg.seed, _SPLIT_INDEX[split], index])
    background = render_background(place, cfg.size, rng)
    colour, mask, params = render_object(y, cfg.size, rng)
    # Where the object's colour happens to equal the background, flip one bit, so that the
    # image differs from the background in exactly the mask pixels.
    same = mask & (colour == background).all(axis=-1)
    colour[same, 0] ^= 1
    image = np.where(mask[..., None], colour, background)
    return Sample(
        name=f"{split}_{index:05d}",
        split=split,
        y=y,
        place=place,
        image=image,
        mask=mask.astype(np.uint8) * 255,
        background=background,
        meta=params,
    )


def generate_synthetic(cfg: SyntheticConfig) -> Iterator[Sample]:
    """Yield the samples of the benchmark: train, then val, then test.

    Each sample is drawn from its own generator seeded by ``(seed, split, index)``, so a
    sample can be regenerated alone; the group order within a split is shuffled.

    Args:
        cfg: benchmark settings.

    Yields:
        :class:`~abs_ray.data.layouts.Sample` with (size, size, 3) uint8 ``image`` and
        ``background``, (size, size) uint8 ``mask`` (255 = object) and ``meta`` holding the
        shape parameters.
    """
    for split, counts in cfg.split_counts().items():
        order = group_sequence(counts, np.random.default_rng([cfg.seed, _SPLIT_INDEX[split]]))
        for index, (y, place) in enumerate(order):
            yield _sample(cfg, split, index, y, place)


def write_synthetic(uri: str, cfg: SyntheticConfig, s3: S3Options | None = None) -> pd.DataFrame:
    """Generate the benchmark and write it in the Waterbirds layout (PNG, with masks).

    Writes ``images/``, ``masks/``, ``backgrounds/``, ``metadata.csv`` (``img_filename, y,
    split, place, mask_filename, background_filename`` and the shape parameters) and
    ``config.json``.

    Args:
        uri: destination folder, local or ``s3://``.
        cfg: benchmark settings.
        s3: S3 settings; default from the environment.

    Returns:
        The manifest, read back from what was written.

    Raises:
        StorageError: a write fails.
    """
    config = {"generator": "synthetic", **dataclasses.asdict(cfg)}
    write_waterbirds(uri, generate_synthetic(cfg), s3, image_format="png", config=config)
    return read_waterbirds(uri, s3)
