"""The birds benchmark: settings, the asset split, and the samples in the Waterbirds layout.

As in Waterbirds: ``y`` 0 = landbird, 1 = waterbird; ``place`` 0 = land, 1 = water; group =
``y * 2 + place``. Train is 100 % correlated by default (every waterbird on water, every
landbird on land), val follows the train distribution (``val_correlation`` changes it), test
has the four groups in equal numbers. Photos are always split between train, val and test.
Birds are too by default (``bird_split="held_out"``: val and test show only species never seen
in training, a harder, domain-generalisation test); ``bird_split="shared"`` lets every split use
every bird, as Waterbirds does (its test birds are new photos of the training species), so that
test accuracy measures reliance on the background rather than transfer to new species.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from abs_ray.data._groups import check_fraction, check_split_sizes, group_sequence, split_counts
from abs_ray.data.birds.assets import Asset, BirdAssets, fetch_assets
from abs_ray.data.birds.compose import compose_bird, load_photo, load_stamp, sample_paste_params
from abs_ray.data.layouts import Sample, read_waterbirds, write_waterbirds
from abs_ray.data.manifest import SPLITS
from abs_ray.errors import ConfigError
from abs_ray.io import S3Options

__all__ = [
    "BIRD_SPLITS",
    "GROUP_NAMES",
    "BirdsConfig",
    "build_birds",
    "split_assets",
    "write_birds",
]

#: Waterbirds group names, by group index ``y * 2 + place``.
GROUP_NAMES: dict[int, str] = {
    0: "landbird on land",
    1: "landbird on water",
    2: "waterbird on land",
    3: "waterbird on water",
}
#: Values of :attr:`BirdsConfig.bird_split`.
BIRD_SPLITS: tuple[str, ...] = ("held_out", "shared")
_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}


def split_assets(
    assets: BirdAssets, fractions: tuple[float, float, float] = (0.5, 0.2, 0.3), seed: int = 0
) -> dict[str, BirdAssets]:
    """Partition birds and photos, per kind and label, between train, val and test.

    Each (kind, label) list is shuffled by ``seed`` and cut by ``fractions``; val and test
    get at least one each (rounded), train the rest, so no file is in two splits.

    Args:
        assets: all assets.
        fractions: (train, val, test) shares, each in ``[0, 1]``.
        seed: shuffling seed.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``.

    Raises:
        ConfigError: bad fractions, or a list too short to give every split one file.

    >>> birds = tuple(Asset(f"b{i}", f"/b{i}.png", i % 2) for i in range(6))
    >>> photos = tuple(Asset(f"p{i}", f"/p{i}.jpg", i % 2) for i in range(6))
    >>> parts = split_assets(BirdAssets(birds, photos), seed=0)
    >>> [len(parts[s].birds) for s in ("train", "val", "test")]
    [2, 2, 2]
    """
    if len(fractions) != 3:
        raise ConfigError(f"fractions must be (train, val, test), got {fractions!r}")
    for name, value in zip(SPLITS, fractions, strict=True):
        check_fraction(f"{name} fraction", value)
    parts: dict[str, dict[str, list[Asset]]] = {s: {"bird": [], "photo": []} for s in SPLITS}
    for k, kind in enumerate(("bird", "photo")):
        for label in (0, 1):
            items = assets.select(kind, label)
            n = len(items)
            n_val = max(1, math.floor(fractions[1] * n + 0.5))
            n_test = max(1, math.floor(fractions[2] * n + 0.5))
            n_train = n - n_val - n_test
            if n_train < 1:
                raise ConfigError(
                    f"{n} {kind}s with label {label} cannot be split {fractions} so that train, "
                    f"val and test each get one; need more files"
                )
            order = np.random.default_rng([seed, k, label]).permutation(n)
            shuffled = [items[i] for i in order]
            parts["train"][kind] += shuffled[:n_train]
            parts["val"][kind] += shuffled[n_train : n_train + n_val]
            parts["test"][kind] += shuffled[n_train + n_val :]
    return {s: BirdAssets(tuple(p["bird"]), tuple(p["photo"])) for s, p in parts.items()}


@dataclasses.dataclass(frozen=True)
class BirdsConfig:
    """Settings of the birds benchmark.

    Attributes:
        n_train: train samples (classes balanced).
        n_val: val samples (classes balanced).
        n_test: test samples, a multiple of 4 (four equal groups).
        size: image side in pixels, ``>= 32``.
        seed: seed of the asset split and every draw; same seed, same images.
        correlation: fraction of each train class on its own background (waterbird on
            water, landbird on land), in ``[0, 1]``.
        val_correlation: the same for val; None follows ``correlation`` (0.5 balances it).
        asset_split: (train, val, test) shares of the birds and photos of each kind.
        crop_range: background crop side, as fractions of the photo's shorter side.
        scale_range: bird's longer side, as fractions of the image side.
        image_format: ``"jpg"`` (small) or ``"png"`` (lossless); masks are always PNG.
        backgrounds: also write each sample's clean background (an oracle inpainting).
        bird_split: ``"held_out"`` (birds split by ``asset_split`` like the photos: val and
            test birds are unseen species) or ``"shared"`` (every split uses every bird; only
            the photos are held out).

    Raises:
        ConfigError: a value is out of range.
    """

    n_train: int = 1000
    n_val: int = 300
    n_test: int = 600
    size: int = 224
    seed: int = 0
    correlation: float = 1.0
    val_correlation: float | None = None
    asset_split: tuple[float, float, float] = (0.5, 0.2, 0.3)
    crop_range: tuple[float, float] = (0.6, 1.0)
    scale_range: tuple[float, float] = (0.45, 0.75)
    image_format: str = "jpg"
    backgrounds: bool = True
    bird_split: str = "held_out"

    def __post_init__(self) -> None:
        check_split_sizes(
            self.n_train, self.n_val, self.n_test, self.correlation, self.val_correlation
        )
        if not isinstance(self.size, int) or self.size < 32:
            raise ConfigError(f"size must be an int >= 32, got {self.size!r}")
        for name in ("crop_range", "scale_range"):
            low, high = getattr(self, name)
            if not 0 < low <= high <= 1:
                raise ConfigError(f"{name} must satisfy 0 < low <= high <= 1, got {(low, high)}")
        if self.image_format not in ("jpg", "png"):
            raise ConfigError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")
        if self.bird_split not in BIRD_SPLITS:
            raise ConfigError(f"bird_split must be one of {BIRD_SPLITS}, got {self.bird_split!r}")

    @classmethod
    def tiny(cls, seed: int = 0, **overrides) -> BirdsConfig:
        """A benchmark small enough for tests: 16 / 8 / 16 samples at 64 px, PNG."""
        values = {
            "n_train": 16,
            "n_val": 8,
            "n_test": 16,
            "size": 64,
            "seed": seed,
            "image_format": "png",
        }
        return cls(**{**values, **overrides})

    def split_counts(self) -> dict[str, dict[int, int]]:
        """``{split: {group: count}}`` this config produces."""
        return split_counts(
            self.n_train, self.n_val, self.n_test, self.correlation, self.val_correlation
        )


def _cycle(items: Sequence[Asset], rng: np.random.Generator) -> Iterator[Asset]:
    """Endless draws that use every item once per round, in a fresh random order each round."""
    while True:
        for i in rng.permutation(len(items)):
            yield items[i]


def build_birds(cfg: BirdsConfig, assets: BirdAssets) -> Iterator[Sample]:
    """Yield the benchmark's samples: train, then val, then test.

    Photos (and, unless ``cfg.bird_split == "shared"``, birds) are split by
    :func:`split_assets` (``cfg.asset_split``, ``cfg.seed``); within a split every bird and
    photo of a kind is used about equally often.

    Args:
        cfg: benchmark settings.
        assets: birds and photos, e.g. from :func:`fetch_assets`.

    Yields:
        :class:`~abs_ray.data.layouts.Sample` with (size, size, 3) uint8 ``image`` and
        ``background``, (size, size) uint8 ``mask`` (255 = bird), and ``meta`` holding the
        bird and photo names and the :class:`PasteParams`.

    Raises:
        ConfigError: too few assets to split.
        DatasetError: an asset file cannot be read.
    """
    parts = split_assets(assets, cfg.asset_split, cfg.seed)
    if cfg.bird_split == "shared":
        parts = {s: dataclasses.replace(p, birds=assets.birds) for s, p in parts.items()}
    short_side = math.ceil(cfg.size / cfg.crop_range[0])
    stamps: dict[str, np.ndarray] = {}
    photos: dict[str, np.ndarray] = {}
    for split, counts in cfg.split_counts().items():
        rng = np.random.default_rng([cfg.seed, _SPLIT_INDEX[split]])
        order = group_sequence(counts, rng)
        part = parts[split]
        birds = {y: _cycle(part.select("bird", y), rng) for y in (0, 1)}
        places = {p: _cycle(part.select("photo", p), rng) for p in (0, 1)}
        for index, (y, place) in enumerate(order):
            bird, photo = next(birds[y]), next(places[place])
            if bird.path not in stamps:
                stamps[bird.path] = load_stamp(bird.path)
            if photo.path not in photos:
                photos[photo.path] = load_photo(photo.path, short_side)
            params = sample_paste_params(
                np.random.default_rng([cfg.seed, _SPLIT_INDEX[split], index, 1]),
                cfg.crop_range,
                cfg.scale_range,
            )
            image, mask, background = compose_bird(
                stamps[bird.path], photos[photo.path], params, cfg.size
            )
            yield Sample(
                name=f"{split}_{index:05d}",
                split=split,
                y=y,
                place=place,
                image=image,
                mask=mask,
                background=background,
                meta={"bird": bird.name, "photo": photo.name, **params.as_meta()},
            )


def write_birds(
    uri: str,
    cfg: BirdsConfig | None = None,
    assets: BirdAssets | None = None,
    s3: S3Options | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Build the benchmark and write it in the Waterbirds layout with masks.

    Writes ``images/``, ``masks/``, ``backgrounds/`` (if ``cfg.backgrounds``),
    ``metadata.csv`` (``img_filename, y, split, place, mask_filename,
    background_filename, bird, photo`` and the paste parameters) and ``config.json``.

    Args:
        uri: destination folder, local or ``s3://``.
        cfg: settings; default :class:`BirdsConfig`.
        assets: birds and photos; default :func:`fetch_assets` (``cache_dir``).
        s3: S3 settings; default from the environment.
        cache_dir: passed to :func:`fetch_assets`.

    Returns:
        The manifest, read back from what was written.

    Raises:
        AssetUnavailableError: the Debian packages are not here (`make assets`).
        StorageError: a write fails.
    """
    cfg = cfg or BirdsConfig()
    assets = assets if assets is not None else fetch_assets(cache_dir)
    config = {"generator": "birds", **dataclasses.asdict(cfg)}
    write_waterbirds(
        uri,
        build_birds(cfg, assets),
        s3,
        image_format=cfg.image_format,
        backgrounds=cfg.backgrounds,
        config=config,
    )
    return read_waterbirds(uri, s3)
