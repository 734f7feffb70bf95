"""The classifier's augmentation on the CPU: this repository's code against kornia's, part by part.

Issue 15 asks to use kornia wherever kornia is not slower. Each part below is timed on the same
batch (``--batch`` x 3 x ``--size``², float in ``[0, 1]``, seed 0) with both implementations,
rounds alternating between the sides so that load from other processes hits both alike; the
figure is the median wall time over rounds (min and median process-CPU time alongside: on a
shared box CPU time is what other processes' load distorts least), at each ``--threads`` count
(``torch.set_num_threads``).

- ``crop_flip``: RandomResizedCrop (area 0.7-1, aspect 3/4-4/3) back to ``--size`` and a
  horizontal flip (p = 0.5), draw included. abs_ray: :func:`~abs_ray.train.augment.sample_crop_params`
  (explicit generator) + :func:`~abs_ray.train.augment.apply_crop` (kornia's
  ``crop_and_resize``, then a ``torch.where`` flip). kornia: ``K.RandomResizedCrop`` (both
  ``cropping_mode`` values) then ``K.RandomHorizontalFlip``; and abs_ray's draw (boxes rounded
  to whole pixels) applied with kornia's slice-mode crop (``crop_by_indices``), the candidate
  that keeps the replayable draw.
- ``flip``: the flip alone, same draw on both sides: ``torch.where(flip, x.flip(-1), x)`` vs
  ``K.RandomHorizontalFlip`` replaying that draw (``params={"batch_prob": ...}``).
- ``cutmix``: :func:`~abs_ray.train.augment.cutmix` (one box per batch, p = 1) vs
  ``K.RandomCutMixV2(p=1)`` (a box per sample; different draws, same kind of work).
- ``to_float``: uint8 ``(B, H, W, 3)`` numpy -> float ``(B, 3, H, W)`` in ``[0, 1]``:
  :func:`abs_ray.ops.to_float_chw` vs ``kornia.image.image_to_tensor(...).float() / 255``.
- ``swap_warp``: the swap's warp of image and alpha (the ops' hand-built sampling grid, one
  grid for both) vs kornia's ``warp_affine`` twice (image bilinear, alpha nearest) on the
  same matrices.
- ``colour_randaugment``: ``erm_aug``'s colour jitter + RandAugment, kornia already; timed for
  reference (no hand-written side).

Usage:
    python bench/augment.py                       # 32 x 3 x 224², threads 1 and 2, 10 rounds
    python bench/augment.py --rounds 30 --parts crop_flip flip --out /tmp/crop.json

Writes ``bench/results/augment.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import kornia.augmentation as K
import kornia.image
import torch
from kornia.geometry.transform import crop_by_indices, get_affine_matrix2d, warp_affine

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from abs_ray.ops import SwapConfig, sample_swap_params, to_float_chw, warp_foreground  # noqa: E402
from abs_ray.ops.swap_params import foreground_boxes  # noqa: E402
from abs_ray.train.augment import (  # noqa: E402
    apply_crop,
    cutmix,
    heavy_augment,
    sample_crop_params,
)

logger = logging.getLogger("bench.augment")

CROP_SCALE = (0.7, 1.0)
RATIO = (3 / 4, 4 / 3)


def _kornia_crop_flip(size: int, mode: str) -> torch.nn.Module:
    return torch.nn.Sequential(
        K.RandomResizedCrop((size, size), scale=CROP_SCALE, ratio=RATIO, cropping_mode=mode),
        K.RandomHorizontalFlip(p=0.5),
    )


def _slice_crop(images: torch.Tensor, crop, size: int) -> torch.Tensor:
    """abs_ray's replayable draw, boxes rounded to whole pixels, applied as kornia's slice mode
    (``crop_by_indices``: a slice and one ``interpolate`` per sample), then the flip."""
    x0, y0, x1, y1 = crop.boxes.round().unbind(dim=1)
    corners = torch.stack(
        [torch.stack(p, dim=1) for p in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))], dim=1
    )
    out = crop_by_indices(images, corners, (size, size), "bilinear", align_corners=True)
    return torch.where(crop.flip.view(-1, 1, 1, 1), out.flip(-1), out)


def _swap_inputs(images: torch.Tensor) -> tuple:
    """Rectangular alphas of varied size and place, and the paper's swap params for them."""
    batch, _, height, width = images.shape
    g = torch.Generator().manual_seed(1)
    alpha = torch.zeros(batch, 1, height, width)
    for i in range(batch):
        h, w = torch.randint(height // 4, height // 2, (2,), generator=g).tolist()
        y0 = torch.randint(0, height - h, (1,), generator=g).item()
        x0 = torch.randint(0, width - w, (1,), generator=g).item()
        alpha[i, 0, y0 : y0 + h, x0 : x0 + w] = 1.0
    labels = torch.zeros(batch, dtype=torch.long)
    params = sample_swap_params(alpha, labels, labels[:2], SwapConfig(), g)
    return alpha, params


def _kornia_warp(images: torch.Tensor, alpha: torch.Tensor, params) -> tuple:
    boxes, _ = foreground_boxes(alpha)
    center = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    scale = params.scale[:, None].repeat(1, 2)
    matrix = get_affine_matrix2d(params.translate, center.float(), scale, params.angle)[:, :2]
    size = tuple(images.shape[-2:])
    fg = warp_affine(images, matrix, size, "bilinear", "border", align_corners=True)
    a = warp_affine(alpha, matrix, size, "nearest", "zeros", align_corners=True)
    return fg, a


def parts(images: torch.Tensor, size: int) -> dict[str, dict[str, Callable[[], object]]]:
    """``{part: {side: no-argument callable}}`` on ``images``."""
    batch, _, height, width = images.shape
    gen = torch.Generator().manual_seed(0)
    crop = sample_crop_params(batch, height, width, CROP_SCALE, True, gen)
    flip_module = K.RandomHorizontalFlip(p=0.5)
    flip_params = {
        "batch_prob": crop.flip.float(),
        "forward_input_shape": torch.tensor(images.shape),
    }
    slice_crop, resample_crop = (
        _kornia_crop_flip(size, "slice"),
        _kornia_crop_flip(size, "resample"),
    )
    cutmix_module = K.RandomCutMixV2(p=1.0, use_correct_lambda=True, data_keys=["input", "class"])
    labels = torch.arange(batch) % 2
    u8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    alpha, swap_params = _swap_inputs(images)
    flip = crop.flip.view(-1, 1, 1, 1)
    return {
        "crop_flip": {
            "abs_ray": lambda: apply_crop(
                images, sample_crop_params(batch, height, width, CROP_SCALE, True, gen), size
            ),
            "kornia_slice": lambda: slice_crop(images),
            "kornia_resample": lambda: resample_crop(images),
            "abs_ray_params_kornia_slice": lambda: _slice_crop(
                images, sample_crop_params(batch, height, width, CROP_SCALE, True, gen), size
            ),
        },
        "flip": {
            "abs_ray": lambda: torch.where(flip, images.flip(-1), images),
            "kornia": lambda: flip_module(images, params=flip_params),
        },
        "cutmix": {
            "abs_ray": lambda: cutmix(images, gen, p=1.0),
            "kornia": lambda: cutmix_module(images, labels),
        },
        "to_float": {
            "abs_ray": lambda: to_float_chw(u8),
            "kornia": lambda: kornia.image.image_to_tensor(u8, keepdim=False).float().div_(255),
        },
        "swap_warp": {
            "abs_ray": lambda: warp_foreground(images, alpha, swap_params),
            "kornia": lambda: _kornia_warp(images, alpha, swap_params),
        },
        "colour_randaugment": {"kornia": lambda: heavy_augment(images)},
    }


def time_part(sides: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict]:
    """Median and min wall milliseconds per side and median process-CPU milliseconds (what
    load from other processes distorts least: waiting for a core does not count), rounds
    alternating between the sides."""
    wall: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(rounds + 1):  # round 0 warms up
        for side, fn in sides.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            if i:
                wall[side].append((time.perf_counter() - start) * 1000)
                cpu[side].append((time.process_time() - start_cpu) * 1000)
    return {
        side: {
            "median_ms": round(statistics.median(wall[side]), 2),
            "min_ms": round(min(wall[side]), 2),
            "cpu_median_ms": round(statistics.median(cpu[side]), 2),
        }
        for side in sides
    }


def verdicts(result: dict[str, dict[str, dict]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per part and kornia side, its time over abs_ray's (``> 1``: kornia slower), by median
    wall and by median CPU time."""
    out = {}
    for part, sides in result.items():
        if "abs_ray" not in sides:
            continue
        ours = sides["abs_ray"]
        out[part] = {
            side: {key: round(v[key] / ours[key], 2) for key in ("median_ms", "cpu_median_ms")}
            for side, v in sides.items()
            if side != "abs_ray"
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--parts", nargs="+", default=None, help="only these parts (default: all)")
    p.add_argument("--out", default="bench/results/augment.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.manual_seed(0)
    images = torch.rand(
        args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)
    )
    default_threads = torch.get_num_threads()
    load_before = os.getloadavg()  # other processes' load: the figures' noise
    runs = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        result = {}
        for part, sides in parts(images, args.size).items():
            if args.parts and part not in args.parts:
                continue
            result[part] = time_part(sides, args.rounds)
            logger.info("threads %d %s: %s", threads, part, result[part])
        runs[str(threads)] = {"ms": result, "ratios": verdicts(result)}
    torch.set_num_threads(default_threads)
    write_result(
        args.out,
        {
            "config": {
                "batch": args.batch,
                "size": args.size,
                "rounds": args.rounds,
                "device": "cpu",
                "kornia": kornia.__version__,
            },
            "threads": runs,
            "load_average": {"before": load_before, "after": os.getloadavg()},
        },
    )


if __name__ == "__main__":
    main()
