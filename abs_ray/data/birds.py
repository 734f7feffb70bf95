"""An offline Waterbirds-like benchmark built from photos in Debian packages.

Water birds and land birds are real photo cut-outs (Tux Paint stamps: RGBA PNG whose alpha
is an exact foreground mask), pasted with a random scale, position and horizontal flip onto
random crops of water or land photos (Tux Paint templates, KDE Plasma wallpapers, MATE
backgrounds). Which file is a water or land bird, and a water or land photo, is decided by
hand in the tables :data:`BIRD_STAMPS` and :data:`PHOTOS` (files looked at one by one;
excluded ones are listed with the reason).

As in Waterbirds: ``y`` 0 = landbird, 1 = waterbird; ``place`` 0 = land, 1 = water; group =
``y * 2 + place``. Train is 100 % correlated by default (every waterbird on water, every
landbird on land), val follows the train distribution (``val_correlation`` changes it),
test has the four groups in equal numbers. Photos are always split between train, val and
test. Birds are too by default (``bird_split="held_out"``: val and test show only species never
seen in training, a harder, domain-generalisation test); ``bird_split="shared"`` lets every
split use every bird, as Waterbirds does (its test birds are new photos of the training
species), so that test accuracy measures reliance on the background rather than transfer to
new species.

The packages are GPL/LGPL/CC: :func:`fetch_assets` installs or extracts them at run time;
they and the built images are never committed.

Command line::

    python -m abs_ray.data.birds --out data/birds --contact-sheet data/birds_sheet.png
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from abs_ray.data._groups import check_fraction, group_counts, group_sequence
from abs_ray.data.layouts import Sample, load_dataset, read_waterbirds, write_waterbirds
from abs_ray.data.manifest import SPLITS
from abs_ray.errors import AbsRayError, AssetUnavailableError, ConfigError, DatasetError
from abs_ray.io import S3Options, decode_image, encode_png, read_bytes, write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "BIRD_SPLITS",
    "BIRD_STAMPS",
    "DEFAULT_CACHE_DIR",
    "GROUP_NAMES",
    "PACKAGES",
    "PHOTOS",
    "Asset",
    "BirdAssets",
    "BirdsConfig",
    "PasteParams",
    "build_birds",
    "compose_bird",
    "contact_sheet",
    "fetch_assets",
    "get_args_parser",
    "main",
    "sample_paste_params",
    "split_assets",
    "split_group_table",
    "write_birds",
]

#: Debian packages the benchmark is built from.
PACKAGES: tuple[str, ...] = (
    "tuxpaint-stamps-default",
    "tuxpaint-data",
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
)
#: Where :func:`fetch_assets` extracts packages when it cannot install them (git-ignored).
DEFAULT_CACHE_DIR = os.path.join(".cache", "abs_ray", "debian")
#: Waterbirds group names, by group index ``y * 2 + place``.
GROUP_NAMES: dict[int, str] = {
    0: "landbird on land",
    1: "landbird on water",
    2: "waterbird on land",
    3: "waterbird on water",
}

_STAMPS_DIR = "usr/share/tuxpaint/stamps/animals/birds"
#: Bird stamps (package ``tuxpaint-stamps-default``): file name → ``y`` (1 = waterbird,
#: 0 = landbird). Excluded: ``albino_peahen.png`` (the cut-out includes its grass nest, a
#: land background inside the mask), ``crowned_crane.png`` (wetland and grassland bird:
#: ambiguous), ``swallow.svg`` (vector drawing), ``cartoon/`` (drawings).
BIRD_STAMPS: dict[str, int] = {
    # waterbirds: waterfowl, herons, seabirds, penguins, flamingo
    "drake.png": 1,
    "duck.png": 1,
    "gander.png": 1,
    "heron_greatblue.png": 1,
    "heron_greatblue_flying.png": 1,
    "little-penguin.png": 1,
    "magellanic_penguin.png": 1,
    "penguin.png": 1,
    "pelican.png": 1,
    "pink_flamingo.png": 1,
    "seagull.png": 1,
    "silver-gull.png": 1,
    # landbirds: songbirds, corvids, parrots, fowl, ratites, raptors
    "adelaide-rosella.png": 0,
    "blackbird.png": 0,
    "chicken_profile.png": 0,
    "crow.png": 0,
    "cuckoo.png": 0,
    "guineafowl.png": 0,
    "helmeted_guineafowl.png": 0,
    "hen.png": 0,
    "lark.png": 0,
    "magpie.png": 0,
    "nandou.png": 0,
    "ostrich.png": 0,
    "owl.png": 0,
    "peacock.png": 0,
    "pigeon.png": 0,
    "quetzal.png": 0,
    "rainbow-lorikeet.png": 0,
    "rooster.png": 0,
    "tucan.png": 0,
    "turkey.png": 0,
    "vulture.png": 0,
}

_TEMPLATES = "usr/share/tuxpaint/templates"
_MATE = "usr/share/backgrounds/mate/nature"
_PLASMA = "usr/share/wallpapers"
#: Background photos: path below ``/`` → ``(package, place)`` (1 = water, 0 = land).
#: Excluded after looking at them: templates ``lighthouse`` (a brick tower against the sky),
#: ``sun_behind_clouds`` (sky), ``spiders_web``, ``wool_mill_machine`` (indoors),
#: ``mossy_bark`` (black letterbox bars: a cue of its own); MATE
#: ``Storm`` (a road under clouds), ``Dune`` (beach grass with the sea behind: both),
#: ``RainDrops`` (water drops on a leaf: both), ``Wood``, and the flower close-ups
#: ``FreshFlower``, ``Garden``, ``TwoWings``, ``YellowFlower``; Plasma wallpapers that are
#: abstract art or illustrations (Altai, Autumn, Canopee, Cascade, Cluster, ColorfulCups,
#: Elarun, Flow, FlyingKonqui, Grey, Honeywave, IceCold, Kay, Kite, Kokkini, MilkyWay, Opal,
#: PastelHills, Patak, SafeLanding, Shell) or half sand, half sea (Volna).
PHOTOS: dict[str, tuple[str, int]] = {
    # water
    f"{_TEMPLATES}/ocean_waves.jpg": ("tuxpaint-data", 1),
    f"{_TEMPLATES}/ocean_splash.jpg": ("tuxpaint-data", 1),
    f"{_TEMPLATES}/jellyfish.jpg": ("tuxpaint-data", 1),
    f"{_MATE}/Aqua.jpg": ("mate-backgrounds", 1),
    f"{_PLASMA}/BytheWater/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 1),
    f"{_PLASMA}/ColdRipple/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 1),
    f"{_PLASMA}/DarkestHour/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 1),
    f"{_PLASMA}/EveningGlow/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 1),
    f"{_PLASMA}/summer_1am/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 1),
    # land
    f"{_TEMPLATES}/cliff.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/corn_maze.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/mossy_log.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/redwoods_above.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/rocks.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/sheep.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/trees_above.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/trees_at_dusk.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/sun_behind_leaves.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/burnt_bark.jpg": ("tuxpaint-data", 0),
    f"{_TEMPLATES}/mudstone.jpg": ("tuxpaint-data", 0),
    f"{_MATE}/Blinds.jpg": ("mate-backgrounds", 0),
    f"{_MATE}/GreenMeadow.jpg": ("mate-backgrounds", 0),
    f"{_MATE}/LadyBird.jpg": ("mate-backgrounds", 0),
    f"{_PLASMA}/FallenLeaf/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 0),
    f"{_PLASMA}/OneStandsOut/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 0),
    f"{_PLASMA}/Path/contents/images/2560x1600.jpg": ("plasma-workspace-wallpapers", 0),
}

_SPLIT_INDEX = {"train": 0, "val": 1, "test": 2}
#: Values of :attr:`BirdsConfig.bird_split`.
BIRD_SPLITS: tuple[str, ...] = ("held_out", "shared")


# --- assets --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Asset:
    """One source image.

    Attributes:
        name: stable name recorded in the metadata (for Debian files: the path below ``/``).
        path: local file to read.
        label: birds: ``y`` (0 = landbird, 1 = waterbird); photos: ``place`` (0 = land,
            1 = water).
    """

    name: str
    path: str
    label: int


@dataclasses.dataclass(frozen=True)
class BirdAssets:
    """The bird cut-outs (RGBA) and background photos a benchmark is built from.

    Raises:
        ConfigError: a label other than 0/1, or duplicate names.
    """

    birds: tuple[Asset, ...]
    photos: tuple[Asset, ...]

    def __post_init__(self) -> None:
        for kind, assets in (("bird", self.birds), ("photo", self.photos)):
            names = [a.name for a in assets]
            if len(set(names)) != len(names):
                raise ConfigError(f"duplicate {kind} names in {sorted(names)}")
            for a in assets:
                if a.label not in (0, 1):
                    raise ConfigError(f"{kind} {a.name!r}: label must be 0 or 1, got {a.label!r}")

    def select(self, kind: str, label: int) -> tuple[Asset, ...]:
        """The ``"bird"`` or ``"photo"`` assets with this label, sorted by name."""
        assets = self.birds if kind == "bird" else self.photos
        return tuple(sorted((a for a in assets if a.label == label), key=lambda a: a.name))


def _locate(relpath: str, roots: Sequence[Path]) -> Path | None:
    for root in roots:
        path = root / relpath
        if path.is_file():
            return path
    return None


def _table() -> dict[str, tuple[str, str, int]]:
    """Path below ``/`` → (package, kind, label) for every file of both tables."""
    table = {
        f"{_STAMPS_DIR}/{name}": ("tuxpaint-stamps-default", "bird", y)
        for name, y in BIRD_STAMPS.items()
    }
    table.update({path: (package, "photo", place) for path, (package, place) in PHOTOS.items()})
    return table


def _run(cmd: list[str], cwd: Path | None = None) -> tuple[bool, str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    logger.info("running %s", " ".join(cmd))
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
    return proc.returncode == 0, " | ".join(tail)


def _obtain_packages(packages: Sequence[str], cache_root: Path) -> None:
    """Install the packages (root), else download and extract them into ``cache_root/root``."""
    pkgs = list(packages)
    failures = []
    if shutil.which("apt-get") is None:
        failures.append("apt-get not found")
    else:
        if os.geteuid() == 0:
            install = ["apt-get", "install", "-y", "--no-install-recommends", *pkgs]
            ok, out = _run(install)
            if not ok:  # fresh containers have no package lists yet
                _run(["apt-get", "update"])
                ok, out = _run(install)
            if ok:
                return
            failures.append(f"apt-get install: {out}")
        debs = cache_root / "debs"
        debs.mkdir(parents=True, exist_ok=True)
        ok, out = _run(["apt-get", "download", *pkgs], cwd=debs)
        if ok and shutil.which("dpkg") is not None:
            for deb in sorted(debs.glob("*.deb")):
                ok, out = _run(["dpkg", "-x", str(deb), str(cache_root / "root")])
                if not ok:
                    failures.append(f"dpkg -x {deb.name}: {out}")
                    break
            else:
                return
        else:
            failures.append(f"apt-get download: {out}" if not ok else "dpkg not found")
    raise AssetUnavailableError(
        f"cannot obtain the Debian packages {pkgs} ({'; '.join(failures)}). Install them with "
        f"`sudo apt-get install -y --no-install-recommends {' '.join(pkgs)}`, or extract them "
        f"with `apt-get download {' '.join(pkgs)}` and `dpkg -x <file>.deb {cache_root / 'root'}`"
    )


def fetch_assets(
    cache_dir: str | os.PathLike | None = None,
    *,
    install: bool = True,
    search_roots: Sequence[str | os.PathLike] = ("/",),
) -> BirdAssets:
    """Find (or obtain) the bird cut-outs and background photos listed in the tables.

    Files are looked for under ``search_roots`` (where the packages are installed, or a
    volume they were extracted to) and ``cache_dir/root``. When some are missing and
    ``install`` is set: as root, ``apt-get install -y --no-install-recommends`` the packages
    (running ``apt-get update`` once if that fails); otherwise, or if that fails,
    ``apt-get download`` them into ``cache_dir/debs`` and ``dpkg -x`` them into
    ``cache_dir/root``. Files missing from a package version are skipped with a warning.

    Args:
        cache_dir: folder for downloaded packages; default :data:`DEFAULT_CACHE_DIR`
            (relative to the working directory, git-ignored).
        install: obtain missing packages; False only looks.
        search_roots: folders the packages' paths (``usr/share/...``) are looked up under
            before the cache; installing with apt puts them under ``/``.

    Returns:
        The assets, with names = paths below ``/``.

    Raises:
        AssetUnavailableError: the packages cannot be obtained, or fewer than 3 birds or
            photos of some kind remain (one per split is the minimum); the message names the
            packages and how to install them.
    """
    cache_root = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser().absolute()
    roots = [*(Path(r) for r in search_roots), cache_root / "root"]
    table = _table()
    missing = {pkg for rel, (pkg, _, _) in table.items() if _locate(rel, roots) is None}
    if missing and install:
        logger.info("obtaining Debian packages %s", sorted(missing))
        _obtain_packages([p for p in PACKAGES if p in missing], cache_root)
    birds, photos, absent = [], [], []
    for rel, (_, kind, label) in table.items():
        path = _locate(rel, roots)
        if path is None:
            absent.append(rel)
            continue
        (birds if kind == "bird" else photos).append(Asset(name=rel, path=str(path), label=label))
    if absent:
        logger.warning("%d listed asset files not found, skipped: %s", len(absent), absent)
    assets = BirdAssets(birds=tuple(birds), photos=tuple(photos))
    for kind in ("bird", "photo"):
        for label in (0, 1):
            if len(assets.select(kind, label)) < 3:
                raise AssetUnavailableError(
                    f"only {len(assets.select(kind, label))} {kind}s with label {label} found "
                    f"(need 3: one per split); install the Debian packages {list(PACKAGES)} with "
                    f"`apt-get install -y --no-install-recommends {' '.join(PACKAGES)}`"
                    + ("" if install else ", or call fetch_assets(install=True)")
                )
    logger.info("assets: %d birds, %d photos", len(birds), len(photos))
    return assets


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


def _load_stamp(path: str) -> np.ndarray:
    """RGBA stamp cropped to its alpha bounding box: (h, w, 4) uint8."""
    try:
        with Image.open(path) as img:
            rgba = np.asarray(img.convert("RGBA"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read bird stamp {path}: {exc}") from exc
    rows, cols = np.nonzero(rgba[..., 3] >= 128)
    if rows.size == 0:
        raise DatasetError(f"bird stamp {path} has no opaque pixels (alpha >= 128)")
    return rgba[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].copy()


def _load_photo(path: str, short_side: int) -> np.ndarray:
    """RGB photo scaled so its shorter side is ``short_side``: (h, w, 3) uint8."""
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


# --- composition ---------------------------------------------------------------------------


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


# --- the benchmark -------------------------------------------------------------------------


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
        for name in ("n_train", "n_val", "n_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
        if self.n_test % 4:
            raise ConfigError(
                f"n_test must be a multiple of 4 (four equal groups), got {self.n_test}"
            )
        if not isinstance(self.size, int) or self.size < 32:
            raise ConfigError(f"size must be an int >= 32, got {self.size!r}")
        check_fraction("correlation", self.correlation)
        if self.val_correlation is not None:
            check_fraction("val_correlation", self.val_correlation)
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
        val = self.correlation if self.val_correlation is None else self.val_correlation
        return {
            "train": group_counts(self.n_train, self.correlation),
            "val": group_counts(self.n_val, val),
            "test": group_counts(self.n_test, 0.5),
        }


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
                stamps[bird.path] = _load_stamp(bird.path)
            if photo.path not in photos:
                photos[photo.path] = _load_photo(photo.path, short_side)
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
        AssetUnavailableError: the Debian packages cannot be obtained.
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


def split_group_table(df: pd.DataFrame) -> pd.DataFrame:
    """Sample counts with one row per split (train, val, test) and one column per group.

    >>> df = pd.DataFrame({"split": ["train", "test", "test"], "group": [0, 1, 3]})
    >>> split_group_table(df).values.tolist()
    [[1, 0, 0], [0, 0, 0], [0, 1, 1]]
    """
    table = pd.crosstab(df["split"], df["group"])
    return table.reindex(index=[s for s in SPLITS], fill_value=0).fillna(0).astype(int)


# --- looking at it -------------------------------------------------------------------------


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of a bool mask that touch a background pixel (4-neighbourhood)."""
    padded = np.pad(mask, 1, mode="constant")
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


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
        (s, g)
        for s in SPLITS
        for g in sorted(df["_group"].unique())
        if ((df.split == s) & (df._group == g)).any()
    ]
    label_width, pad = 190, 4
    sheet = Image.new(
        "RGB", (label_width + per_group * (thumb + pad), max(1, len(rows)) * (thumb + pad)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for r, (split, group) in enumerate(rows):
        subset = df[(df.split == split) & (df._group == group)]
        top = r * (thumb + pad)
        draw.text((4, top + 8), f"{split}  group {group}", fill="black")
        draw.text((4, top + 26), names.get(group, ""), fill="black")
        draw.text((4, top + 44), f"n = {len(subset)}", fill="black")
        for c, item in enumerate(subset.head(per_group).itertuples()):
            image = decode_image(read_bytes(item.image_uri, s3))
            tile = np.array(
                Image.fromarray(image).resize((thumb, thumb), Image.Resampling.BILINEAR)
            )
            if isinstance(item.mask_uri, str):
                mask = decode_image(read_bytes(item.mask_uri, s3))[..., 0]
                mask = np.asarray(
                    Image.fromarray(mask).resize((thumb, thumb), Image.Resampling.NEAREST)
                )
                tile[_outline(mask >= 128)] = (255, 0, 0)
            sheet.paste(Image.fromarray(tile), (label_width + c * (thumb + pad), top))
    write_bytes(out_png, encode_png(np.asarray(sheet)), s3)
    logger.info("contact sheet of %d rows written to %s", len(rows), out_png)
    return out_png


# --- command line --------------------------------------------------------------------------


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``python -m abs_ray.data.birds``."""
    defaults = BirdsConfig()
    parser = argparse.ArgumentParser(
        description="Build the offline Waterbirds-like birds benchmark from Debian photo packages.",
        add_help=add_help,
    )
    parser.add_argument("--out", default=None, help="output folder, local or s3:// (required)")
    parser.add_argument(
        "--fetch-only",
        action="store_true",
        help="only obtain the Debian photo packages (installs with apt as root), then exit",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-val", type=int, default=defaults.n_val)
    parser.add_argument("--n-test", type=int, default=defaults.n_test, help="multiple of 4")
    parser.add_argument("--correlation", type=float, default=defaults.correlation)
    parser.add_argument(
        "--val-correlation", type=float, default=None, help="default: --correlation"
    )
    parser.add_argument("--image-format", choices=("jpg", "png"), default=defaults.image_format)
    parser.add_argument(
        "--bird-split",
        choices=BIRD_SPLITS,
        default=defaults.bird_split,
        help="held_out: val/test birds are unseen species; shared: every split uses every "
        "bird, only photos are held out (as Waterbirds)",
    )
    parser.add_argument(
        "--no-backgrounds", action="store_true", help="do not write clean backgrounds"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="16/8/16 samples at 64 px (overrides sizes)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help=f"package cache (default {DEFAULT_CACHE_DIR})"
    )
    parser.add_argument(
        "--contact-sheet", default=None, help="also write a PNG grid of samples here"
    )
    return parser


def _config_from_args(args: argparse.Namespace) -> BirdsConfig:
    """The :class:`BirdsConfig` the parsed arguments describe (``ConfigError`` if invalid)."""
    fields = {
        "seed": args.seed,
        "size": args.size,
        "n_train": args.n_train,
        "n_val": args.n_val,
        "n_test": args.n_test,
        "correlation": args.correlation,
        "val_correlation": args.val_correlation,
        "image_format": args.image_format,
        "backgrounds": not args.no_backgrounds,
        "bird_split": args.bird_split,
    }
    if args.tiny:  # tiny sets the sizes and the format; the other options still apply
        sized = ("size", "n_train", "n_val", "n_test", "image_format")
        return BirdsConfig.tiny(**{k: v for k, v in fields.items() if k not in sized})
    return BirdsConfig(**fields)


def main(argv: Sequence[str] | None = None) -> int:
    """Build the benchmark, print counts per split and group, optionally a contact sheet."""
    parser = get_args_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.fetch_only:
        try:
            assets = fetch_assets(args.cache_dir)
        except AbsRayError as exc:
            logger.error("%s: %s", type(exc).__name__, exc)
            return 2
        print(f"birds assets: {len(assets.birds)} bird cut-outs, {len(assets.photos)} photos")
        return 0
    if not args.out:
        parser.error("--out is required (or --fetch-only)")
    try:
        cfg = _config_from_args(args)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    start = time.perf_counter()
    try:
        assets = fetch_assets(args.cache_dir)
        manifest = write_birds(args.out, cfg, assets)
    except AbsRayError as exc:
        logger.error("%s: %s", type(exc).__name__, exc)
        return 2
    elapsed = time.perf_counter() - start
    table = split_group_table(manifest)
    table.columns = [f"g{g}" for g in table.columns]
    print(
        f"birds benchmark: {len(manifest)} images at {cfg.size} px in {args.out} ({elapsed:.1f} s)"
    )
    print("groups: " + ", ".join(f"g{g} = {n}" for g, n in GROUP_NAMES.items()))
    print(table.to_string())
    print("config: " + json.dumps(dataclasses.asdict(cfg)))
    if args.contact_sheet:
        contact_sheet(args.out, args.contact_sheet)
        print(f"contact sheet: {args.contact_sheet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
