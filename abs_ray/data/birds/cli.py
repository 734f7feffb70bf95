"""``python -m abs_ray.data.birds``: build the birds benchmark, or check its assets are here.

Fetching the Debian packages is not this module's job: ``make assets`` runs
``scripts/fetch-birds-assets.sh``, which asks ``--missing-packages`` what to obtain and
``--check`` whether it worked.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Sequence

from abs_ray.console import add_logging_args, logging_kwargs, setup_logging
from abs_ray.data.birds.assets import DEFAULT_CACHE_DIR, fetch_assets, missing_packages
from abs_ray.data.birds.build import BIRD_SPLITS, GROUP_NAMES, BirdsConfig, write_birds
from abs_ray.data.birds.sheet import contact_sheet, split_group_table
from abs_ray.errors import AbsRayError, ConfigError

logger = logging.getLogger(__name__)

__all__ = ["get_args_parser", "main"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """Arguments of ``python -m abs_ray.data.birds``."""
    defaults = BirdsConfig()
    parser = argparse.ArgumentParser(
        prog="python -m abs_ray.data.birds",
        description="Build the offline Waterbirds-like birds benchmark from Debian photo packages.",
        add_help=add_help,
    )
    parser.add_argument("--out", default=None, help="output folder, local or s3:// (required)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="only check that the Debian photo files are here (`make assets` puts them there)",
    )
    mode.add_argument(
        "--missing-packages",
        action="store_true",
        help="only print the Debian packages some listed file is missing from, one a line",
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
    add_logging_args(parser)
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


def _check(cache_dir: str | None) -> int:
    """``--check``: find the assets, print how many; 2 (logged) when too few are here."""
    try:
        assets = fetch_assets(cache_dir)
    except AbsRayError as exc:
        logger.error("%s: %s", type(exc).__name__, exc)
        return 2
    print(f"birds assets: {len(assets.birds)} bird cut-outs, {len(assets.photos)} photos")
    return 0


def _build(args: argparse.Namespace) -> int:
    """Build the benchmark at ``args.out``; print counts per split and group."""
    try:
        cfg = _config_from_args(args)
    except ConfigError as exc:
        logger.error("%s", exc)
        return 2
    start = time.perf_counter()
    try:
        manifest = write_birds(args.out, cfg, fetch_assets(args.cache_dir))
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


def main(argv: Sequence[str] | None = None) -> int:
    """Build the benchmark (``--out``), or only check or list the missing assets.

    Returns:
        The exit status: 0, or 2 for a bad setting or missing assets (logged).
    """
    parser = get_args_parser()
    args = parser.parse_args(argv)
    setup_logging(**logging_kwargs(args), ray=False)
    if args.missing_packages:
        for package in missing_packages(args.cache_dir):
            print(package)
        return 0
    if args.check:
        return _check(args.cache_dir)
    if not args.out:
        parser.error("--out is required (or --check, --missing-packages)")
    return _build(args)
