"""The files the birds benchmark is built from, and finding them on this machine.

Which Debian file is a water or land bird, and a water or land photo, is decided by hand in
the tables :data:`BIRD_STAMPS` and :data:`PHOTOS` (files looked at one by one; excluded ones are
listed with the reason). The packages are GPL/LGPL/CC: they and the built images are never
committed.

This module only *reads*: ``make assets`` (``scripts/fetch-birds-assets.sh``) installs the
packages with apt as root, or else extracts them into ``<cache>/root``;
:func:`fetch_assets` looks for the listed files there and under ``/`` and raises
:class:`~abs_ray.errors.AssetUnavailableError` naming ``make assets`` when too few are found.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from abs_ray.errors import AssetUnavailableError, ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "BIRD_STAMPS",
    "DEFAULT_CACHE_DIR",
    "PACKAGES",
    "PHOTOS",
    "Asset",
    "BirdAssets",
    "fetch_assets",
    "missing_packages",
]

#: Debian packages the benchmark is built from.
PACKAGES: tuple[str, ...] = (
    "tuxpaint-stamps-default",
    "tuxpaint-data",
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
)
#: Where ``scripts/fetch-birds-assets.sh`` extracts the packages when it cannot install them
#: (``<cache>/root``, git-ignored); relative to the working directory.
DEFAULT_CACHE_DIR = os.path.join(".cache", "abs_ray", "debian")

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


def _table() -> dict[str, tuple[str, str, int]]:
    """Path below ``/`` → (package, kind, label) for every file of both tables."""
    table = {
        f"{_STAMPS_DIR}/{name}": ("tuxpaint-stamps-default", "bird", y)
        for name, y in BIRD_STAMPS.items()
    }
    table.update({path: (package, "photo", place) for path, (package, place) in PHOTOS.items()})
    return table


def _roots(
    cache_dir: str | os.PathLike | None, search_roots: Sequence[str | os.PathLike]
) -> list[Path]:
    """Where the packages' files are looked for: ``search_roots``, then ``<cache>/root``."""
    cache_root = Path(cache_dir or DEFAULT_CACHE_DIR).expanduser().absolute()
    return [*(Path(r) for r in search_roots), cache_root / "root"]


def _locate(relpath: str, roots: Sequence[Path]) -> Path | None:
    for root in roots:
        path = root / relpath
        if path.is_file():
            return path
    return None


def missing_packages(
    cache_dir: str | os.PathLike | None = None,
    *,
    search_roots: Sequence[str | os.PathLike] = ("/",),
) -> list[str]:
    """The Debian packages that some listed file is missing from, in :data:`PACKAGES` order.

    Args:
        cache_dir: the package cache; default :data:`DEFAULT_CACHE_DIR`.
        search_roots: folders the packages' paths (``usr/share/...``) are looked up under
            before ``<cache_dir>/root``.

    Returns:
        Package names; empty when every listed file is found.

    Example:
        >>> import tempfile
        >>> missing_packages(tempfile.mkdtemp(), search_roots=[tempfile.mkdtemp()]) == list(PACKAGES)
        True
    """
    roots = _roots(cache_dir, search_roots)
    missing = {pkg for rel, (pkg, _, _) in _table().items() if _locate(rel, roots) is None}
    return [p for p in PACKAGES if p in missing]


def fetch_assets(
    cache_dir: str | os.PathLike | None = None,
    *,
    search_roots: Sequence[str | os.PathLike] = ("/",),
) -> BirdAssets:
    """Find the bird cut-outs and background photos listed in the tables on this machine.

    Files are looked for under ``search_roots`` (where apt installs the packages, or a volume
    they were extracted to) and ``cache_dir/root`` (where ``make assets`` extracts them when
    it cannot install them). Nothing is installed or downloaded here. Files missing from a
    package version are skipped with a warning.

    Args:
        cache_dir: the package cache; default :data:`DEFAULT_CACHE_DIR` (relative to the
            working directory, git-ignored).
        search_roots: folders the packages' paths (``usr/share/...``) are looked up under
            before the cache.

    Returns:
        The assets, with names = paths below ``/``.

    Raises:
        AssetUnavailableError: fewer than 3 birds or photos of some kind were found (one per
            split is the minimum); the message names the missing packages and ``make assets``.
    """
    roots = _roots(cache_dir, search_roots)
    birds, photos, absent = [], [], []
    for rel, (_, kind, label) in _table().items():
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
            found = len(assets.select(kind, label))
            if found < 3:
                raise AssetUnavailableError(
                    f"only {found} {kind}s with label {label} found under "
                    f"{[str(r) for r in roots]} (need 3: one per split); the Debian packages "
                    f"{missing_packages(cache_dir, search_roots=search_roots)} are missing: "
                    "run `make assets`"
                )
    logger.info("assets: %d birds, %d photos", len(birds), len(photos))
    return assets
