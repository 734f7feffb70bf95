"""Detector augmentation: kornia.augmentation vs the shipped tensor code, part by part.

The detector's joint augmentation (:mod:`abs_ray.models.detector_train.augment`) moves an
image and its ``(G, G)`` patch-label grid together (flips, quarter turns, a shift by whole
patches) and then jitters the image's colour and turns some images grey. Four of those parts
are what ``kornia.augmentation`` offers; this bench times each both ways on the same batch and
the same parameters (one seeded draw of
:func:`~abs_ray.models.detector_train.sample_augment_params`, replayed into kornia as its
``_params``), and checks that both sides give the same pixels and the same grid:

The "ours" side is the shipped code itself (:func:`~abs_ray.models.detector_train.augment.flip`,
``quarter_turn``, ``jitter_colour``, ``to_grayscale``, ``apply_augment``):

- **flips**: ``torch.where(flag, x.flip(-1), x)`` on image and grid vs
  ``AugmentationSequential(RandomHorizontalFlip, RandomVerticalFlip, data_keys=["input",
  "mask"])``. kornia requires the mask at the image's size, so its side upsamples the grid to
  ``(B, 1, S, S)`` and reads one pixel per patch back: that round trip is part of its cost.
- **rot90**: ``torch.rot90`` per group of equal turns vs ``RandomRotation90`` (nearest
  resampling, exact for quarter turns; kornia warps with ``grid_sample``), grid as above.
- **colour**: brightness, contrast, saturation, hue in that order, clamped after each
  (torchvision's formulas, written out by hand: :func:`hand_colour`) vs
  ``ColorJitter(order=(0, 1, 2, 3))`` (the same formulas).
- **grayscale**: ``torch.where(flag, rgb_to_grayscale(x), x)`` vs ``RandomGrayscale``.
- **colour_kornia_enhance**: the hand formulas vs the shipped ``jitter_colour``, which calls
  ``kornia.enhance``'s functions (no augmentation container): the one kornia variant that is
  not slower, so it is what ships.
- **whole**: :func:`~abs_ray.models.detector_train.apply_augment` against the all-kornia
  composition (with the patch shift, which stays ours: kornia's translations warp with
  ``grid_sample``, which has no wrap-around fill).

Each part times two sides, ``a`` and ``b`` (named in the result). Rounds alternate a, b, a,
... so that load from other processes hits both alike; each side's median and minimum over
rounds are kept, in milliseconds per batch, and the ratios ``b / a`` of both (the minimum is
what a shared machine disturbs least).

Usage:
    python bench/detector_augment.py                 # B=32, 224 px, G=16; 1 thread
    python bench/detector_augment.py --rounds 30 --threads 1 2

Writes ``bench/results/detector_augment.json``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import kornia
import kornia.augmentation as K
import torch
from kornia.augmentation.container.params import ParamItem

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from abs_ray.models.detector_train import (  # noqa: E402
    AugmentConfig,
    AugmentParams,
    apply_augment,
    sample_augment_params,
)
from abs_ray.models.detector_train.augment import (  # noqa: E402
    flip,
    jitter_colour,
    quarter_turn,
    shift_patches,
    to_grayscale,
)
from abs_ray.ops.patches import upsample_patch_grid  # noqa: E402

logger = logging.getLogger("bench.detector_augment")
Pair = tuple[torch.Tensor, torch.Tensor]


# --- the kornia side -------------------------------------------------------------------------


def _items(
    aug: K.AugmentationSequential, shape: torch.Size, values: list[dict[str, torch.Tensor]]
) -> list[ParamItem]:
    """``values`` (one dict per transform) as the ``params`` kornia replays."""
    fis = torch.tensor(list(shape))
    names = [name for name, _ in aug.named_children()]
    return [
        ParamItem(name, {**v, "forward_input_shape": fis}) for name, v in zip(names, values, strict=True)
    ]  # fmt: skip


class Kornia:
    """The four parts as ``AugmentationSequential`` containers, replaying our draws."""

    def __init__(self) -> None:
        mask = ["input", "mask"]
        self.flips = K.AugmentationSequential(
            K.RandomHorizontalFlip(), K.RandomVerticalFlip(), data_keys=mask
        )
        self.rot90 = K.AugmentationSequential(
            K.RandomRotation90(times=(0, 3), p=1.0, resample="nearest"), data_keys=mask
        )
        self.colour = K.AugmentationSequential(
            K.ColorJitter(0.2, 0.2, 0.2, 0.02, p=1.0, order=(0, 1, 2, 3))
        )
        self.grayscale = K.AugmentationSequential(K.RandomGrayscale(p=0.2))

    @staticmethod
    def _with_mask(aug, x: torch.Tensor, y: torch.Tensor, values: list[dict]) -> Pair:
        s, g = x.shape[-1], y.shape[-1]
        mask = upsample_patch_grid(y, (s, s))  # kornia wants the mask at the image's size
        out, out_mask = aug(x, mask, params=_items(aug, x.shape, values))
        p = s // g
        return out, out_mask[:, 0, p // 2 :: p, p // 2 :: p]

    def apply_flips(self, x: torch.Tensor, y: torch.Tensor, p: AugmentParams) -> Pair:
        values = [{"batch_prob": p.hflip.float()}, {"batch_prob": p.vflip.float()}]
        return self._with_mask(self.flips, x, y, values)

    def apply_rot90(self, x: torch.Tensor, y: torch.Tensor, p: AugmentParams) -> Pair:
        values = [{"times": p.rot90.float(), "batch_prob": torch.ones(len(p))}]
        return self._with_mask(self.rot90, x, y, values)

    def apply_colour(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        factors = {
            "brightness_factor": p.brightness,
            "contrast_factor": p.contrast,
            "saturation_factor": p.saturation,
            "hue_factor": p.hue,
            "order": torch.arange(4),
            "batch_prob": torch.ones(len(p)),
        }
        return self.colour(x, params=_items(self.colour, x.shape, [factors]))

    def apply_grayscale(self, x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
        values = [{"batch_prob": p.grayscale.float()}]
        return self.grayscale(x, params=_items(self.grayscale, x.shape, values))


# --- the run ---------------------------------------------------------------------------------


def kornia_whole(k: Kornia) -> Callable:
    """All four parts through kornia, the patch shift ours, in the shipped order."""

    def run(x: torch.Tensor, y: torch.Tensor, p: AugmentParams) -> Pair:
        x, y = k.apply_rot90(*k.apply_flips(x, y, p), p)
        x, y = shift_patches(x, y, p.shift, x.shape[-1] // y.shape[-1], "wrap")
        return k.apply_grayscale(k.apply_colour(x, p), p), y

    return run


def _interleaved_ms(a: Callable[[], object], b: Callable[[], object], rounds: int) -> dict:
    """Milliseconds of ``a`` and ``b`` run alternately ``rounds`` times each (after a warm-up):
    median and minimum of each. The minimum is the figure a shared machine disturbs least."""
    a(), b()
    times: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(rounds):
        for key, fn in (("a", a), ("b", b)):
            t0 = time.perf_counter()
            fn()
            times[key].append((time.perf_counter() - t0) * 1e3)
    return {
        key: {"median": round(statistics.median(v), 2), "min": round(min(v), 2)}
        for key, v in times.items()
    }


def _max_diff(a: object, b: object) -> float:
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    return max(float((u - v).abs().max()) for u, v in zip(a, b, strict=True))


def hand_colour(x: torch.Tensor, p: AugmentParams) -> torch.Tensor:
    """The colour steps as hand-written tensor code (what the detector shipped before it used
    ``kornia.enhance``): the reference both kornia variants are timed against."""

    def per(v: torch.Tensor) -> torch.Tensor:
        return v.to(x.dtype)[:, None, None, None]

    gray = kornia.color.rgb_to_grayscale
    x = (x * per(p.brightness)).clamp(0.0, 1.0)
    mean = gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    x = (mean + (x - mean) * per(p.contrast)).clamp(0.0, 1.0)
    g = gray(x)
    x = (g + (x - g) * per(p.saturation)).clamp(0.0, 1.0)
    return kornia.enhance.adjust_hue(x, p.hue * 2.0 * torch.pi).clamp(0.0, 1.0)


def measure(batch: int, size: int, grid: int, rounds: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=gen)
    y = (torch.rand(batch, grid, grid, generator=gen) < 0.3).float()
    p = sample_augment_params(batch, AugmentConfig(), torch.Generator().manual_seed(1))
    k = Kornia()
    korn = kornia_whole(k)
    # name: ((what side a is, a), (what side b is, b)); b / a > 1 means b is slower.
    parts = {
        "flips": (("ours", lambda: flip(x, y, p)), ("kornia", lambda: k.apply_flips(x, y, p))),
        "rot90": (
            ("ours", lambda: quarter_turn(x, y, p)),
            ("kornia", lambda: k.apply_rot90(x, y, p)),
        ),
        "colour": (("hand", lambda: hand_colour(x, p)), ("kornia", lambda: k.apply_colour(x, p))),
        "colour_kornia_enhance": (
            ("hand", lambda: hand_colour(x, p)),
            ("ours (kornia.enhance)", lambda: jitter_colour(x, p)),
        ),
        "grayscale": (
            ("ours", lambda: to_grayscale(x, p)),
            ("kornia", lambda: k.apply_grayscale(x, p)),
        ),
        "whole": (("ours", lambda: apply_augment(x, y, p)), ("kornia", lambda: korn(x, y, p))),
    }
    out = {}
    for name, ((a_name, a), (b_name, b)) in parts.items():
        diff = _max_diff(a(), b())
        ms = _interleaved_ms(a, b, rounds)
        out[name] = {
            "a": a_name,
            "b": b_name,
            "a_ms": ms["a"],
            "b_ms": ms["b"],
            "b_over_a_min": round(ms["b"]["min"] / ms["a"]["min"], 3),
            "b_over_a_median": round(ms["b"]["median"] / ms["a"]["median"], 3),
            "max_abs_diff": diff,
        }
        logger.info("threads %d %s: %s", threads, name, out[name])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="the detector's training batch")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--grid", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--out", default="bench/results/detector_augment.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    results = {
        str(t): measure(args.batch, args.size, args.grid, args.rounds, t) for t in args.threads
    }
    write_result(
        args.out,
        {
            "config": {
                "batch": args.batch,
                "size": args.size,
                "grid": args.grid,
                "rounds": args.rounds,
                "kornia": kornia.__version__,
            },
            "by_threads": results,
        },
    )


if __name__ == "__main__":
    main()
