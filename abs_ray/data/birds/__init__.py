"""An offline Waterbirds-like benchmark built from photos in Debian packages.

Water birds and land birds are real photo cut-outs (Tux Paint stamps: RGBA PNG whose alpha
is an exact foreground mask), pasted with a random scale, position and horizontal flip onto
random crops of water or land photos (Tux Paint templates, KDE Plasma wallpapers, MATE
backgrounds).

- :mod:`~abs_ray.data.birds.assets`: the hand-made tables of which file is a water or land
  bird or photo, and :func:`fetch_assets`, which finds them on this machine (it never
  installs: ``make assets`` does, through ``scripts/fetch-birds-assets.sh``);
- :mod:`~abs_ray.data.birds.compose`: :class:`PasteParams` and :func:`compose_bird`, one
  replayable paste;
- :mod:`~abs_ray.data.birds.build`: :class:`BirdsConfig`, the asset split,
  :func:`build_birds` and :func:`write_birds` (Waterbirds layout with masks);
- :mod:`~abs_ray.data.birds.sheet`: counts per split and group, and a contact sheet;
- :mod:`~abs_ray.data.birds.cli`: the command line.

The packages are GPL/LGPL/CC: they and the built images are never committed.

Command line::

    make assets   # once: installs (root) or extracts the Debian packages
    python -m abs_ray.data.birds --out data/birds --contact-sheet data/birds_sheet.png
"""

from abs_ray.data.birds.assets import (
    BIRD_STAMPS,
    DEFAULT_CACHE_DIR,
    PACKAGES,
    PHOTOS,
    Asset,
    BirdAssets,
    fetch_assets,
    missing_packages,
)
from abs_ray.data.birds.build import (
    BIRD_SPLITS,
    GROUP_NAMES,
    BirdsConfig,
    build_birds,
    split_assets,
    write_birds,
)
from abs_ray.data.birds.cli import get_args_parser, main
from abs_ray.data.birds.compose import (
    PasteParams,
    compose_bird,
    load_photo,
    load_stamp,
    sample_paste_params,
)
from abs_ray.data.birds.sheet import contact_sheet, split_group_table

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
    "load_photo",
    "load_stamp",
    "main",
    "missing_packages",
    "sample_paste_params",
    "split_assets",
    "split_group_table",
    "write_birds",
]
