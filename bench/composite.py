"""Compositing throughput: ``abs_ray.ops``' batched swap vs a per-sample PIL/torchvision loop.

Both sides do the same work on the same 64 samples (224 px, synthetic shapes with exact masks,
each sample's background from the batch's bank), starting from what the disentangled data
decodes to: uint8 RGB image + alpha (the ``foreground_png``) and uint8 inpainted backgrounds.

- **baseline** (how a research data loader does it, one sample at a time): ``Image.fromarray``
  the RGBA foreground, ``getbbox`` of its alpha, ``torchvision.transforms.functional.affine``
  (scale, rotation, shift about the box centre; bilinear), resize the chosen background
  (a no-op copy here: the bank is already 224 px), ``Image.paste(fg, mask=fg)``, ``to_tensor``,
  then ``torch.stack``.
- **abs_ray**: :func:`abs_ray.train.augment.swap_batch` on the ``(64, ...)`` batch, on
  ``--device``, exactly as a training step calls it: uint8 → float, draw the parameters
  (:func:`abs_ray.ops.sample_swap_params`, class-uniform background, keep-in-frame), gather
  the backgrounds from the uint8 bank, :func:`abs_ray.ops.paste_foregrounds` (one sampling
  grid for image and alpha, ``F.grid_sample``, blend in place).

The breakdown also times ``F.grid_sample`` alone on the batch (bilinear, 3 channels): the
resampling kernel every torch/kornia warp runs, and a floor for any batched bilinear warp;
``goal_ms_per_batch`` is the time per batch the goal allows against the loop.

The parameters are drawn once by abs_ray (seeded generator, ``SwapConfig()`` defaults: scale
0.5-1.5, ±30°, ±32 px) and the baseline applies those same numbers, so the loop's own
``random.uniform`` calls are not even timed. Before timing, the two outputs are compared (mean
absolute difference in ``[0, 1]`` units, next to the difference an untransformed paste would
give): they differ only at object edges (PIL resamples the RGBA premultiplied and bilinearly,
abs_ray resamples the alpha nearest-neighbour). The bench stops if they disagree.

Rounds alternate baseline, abs_ray, baseline, ... so that load from other processes hits both
alike; the figure is the median over rounds. Both sides run at each ``--threads`` count
(``torch.set_num_threads``; PIL is single-threaded either way).

Usage:
    python bench/composite.py                      # small: 5 rounds per side, ~15 s on 2 CPUs
    python bench/composite.py --full               # 30 rounds
    python bench/composite.py --device cuda --threads 1

Writes ``bench/results/composite.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from abs_ray.data import SyntheticConfig, generate_synthetic  # noqa: E402
from abs_ray.ops import (  # noqa: E402
    SwapConfig,
    SwapParams,
    paste_foregrounds,
    sample_swap_params,
    warp_foreground,
)
from abs_ray.train.augment import RecentBackgrounds, swap_batch, to_float  # noqa: E402

logger = logging.getLogger("bench.composite")

GOAL = 10.0  # the target: batched swap >= 10x the per-sample loop on CPU
# Both sides must agree this well to be compared: mean |difference| in [0, 1] units, and as a
# fraction of the difference an untransformed paste gives (a flipped rotation sign gives ~0.25).
MAX_MEAN_ABS_DIFF = 0.005
MAX_RELATIVE_DIFF = 0.1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_inputs(size: int, batch: int) -> dict[str, np.ndarray]:
    """A batch as the disentangled data decodes: RGBA foregrounds, RGB backgrounds (uint8)."""
    cfg = SyntheticConfig(n_train=batch, n_val=0, n_test=0, size=size, seed=0)
    samples = [s for s in generate_synthetic(cfg) if s.split == "train"]
    return {
        "rgba": np.stack([np.dstack([s.image, s.mask]) for s in samples]),  # (B, H, W, 4)
        "background": np.stack([s.background for s in samples]),  # (N, H, W, 3), the bank
        "label": np.array([s.y for s in samples]),
    }


class Batched:
    """The abs_ray side: the training step's swap on one batch, parameters from ``seed``."""

    def __init__(self, inputs: dict[str, np.ndarray], device: torch.device, seed: int) -> None:
        rgba = torch.from_numpy(inputs["rgba"]).to(device)
        self.image_u8 = rgba[..., :3].contiguous()  # (B, H, W, 3)
        self.alpha_u8 = rgba[..., 3].contiguous()  # (B, H, W)
        self.labels = torch.from_numpy(inputs["label"]).to(device)
        self.bank = RecentBackgrounds(len(inputs["background"]))
        bgs = torch.from_numpy(inputs["background"]).permute(0, 3, 1, 2).contiguous()
        self.bank.add(bgs.to(device), self.labels)
        self.cfg = SwapConfig()
        self.device = device
        self.seed = seed

    def __call__(self) -> tuple[torch.Tensor, SwapParams]:
        images = to_float(self.image_u8)
        alpha = self.alpha_u8.unsqueeze(1).float().div_(255.0)
        gen = torch.Generator().manual_seed(self.seed)
        out, _, params = swap_batch(images, alpha, self.labels, self.bank, self.cfg, 1.0, gen)
        return out, params


def per_sample_loop(
    inputs: dict[str, np.ndarray], records: list[dict[str, float]], identity: bool = False
) -> torch.Tensor:
    """The baseline: PIL/torchvision, one sample at a time; ``(B, 3, H, W)`` float in [0, 1].

    ``identity`` pastes every foreground untransformed (only for the agreement check's
    reference figure).
    """
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    out = []
    for rgba, rec in zip(inputs["rgba"], records, strict=True):
        fg = Image.fromarray(rgba, "RGBA")
        bg = Image.fromarray(inputs["background"][rec["bg_index"]], "RGB")
        bg = bg.resize(fg.size, Image.BILINEAR)  # a loader's resize to the training size
        if not identity:
            box = fg.getchannel("A").getbbox()
            if box is not None:
                # abs_ray rotates about the box centre in pixel-centre coordinates; PIL puts
                # pixel i's centre at i + 0.5, and getbbox's right/bottom are exclusive.
                center = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
                fg = TF.affine(
                    fg,
                    angle=rec["angle"],
                    translate=[rec["dx"], rec["dy"]],
                    scale=rec["scale"],
                    shear=[0.0, 0.0],
                    interpolation=InterpolationMode.BILINEAR,
                    center=center,
                )
        bg.paste(fg, (0, 0), mask=fg)
        out.append(TF.to_tensor(bg))
    return torch.stack(out)


def check_agreement(batched: Batched, inputs: dict[str, np.ndarray]) -> dict:
    """Mean absolute difference of the two sides on the same parameters (and, for scale, of
    abs_ray against an untransformed paste). Raises ``SystemExit`` when they disagree."""
    ours, params = batched()
    ours = ours.float().cpu()
    records = params.to_records()
    theirs = per_sample_loop(inputs, records)
    untransformed = per_sample_loop(inputs, records, identity=True)
    diff = (ours - theirs).abs()
    check = {
        "mean_abs_diff": round(float(diff.mean()), 5),
        "fraction_pixels_diff_over_0.1": round(float((diff.amax(dim=1) > 0.1).float().mean()), 5),
        "mean_abs_diff_vs_untransformed_paste": round(float((ours - untransformed).abs().mean()), 5),
        "max_mean_abs_diff": MAX_MEAN_ABS_DIFF,
        "max_relative_diff": MAX_RELATIVE_DIFF,
        "params": {
            "scale": [round(min(r["scale"] for r in records), 3), round(max(r["scale"] for r in records), 3)],
            "angle": [round(min(r["angle"] for r in records), 1), round(max(r["angle"] for r in records), 1)],
        },
    }  # fmt: skip
    logger.info("agreement: %s", check)
    relative = check["mean_abs_diff"] / max(check["mean_abs_diff_vs_untransformed_paste"], 1e-9)
    check["relative_diff"] = round(relative, 4)
    if not (check["mean_abs_diff"] <= MAX_MEAN_ABS_DIFF and relative <= MAX_RELATIVE_DIFF):
        raise SystemExit(
            f"the two sides disagree: mean |abs_ray - loop| = {check['mean_abs_diff']} "
            f"(allowed {MAX_MEAN_ABS_DIFF}), {relative:.3f} of an untransformed paste's "
            f"(allowed {MAX_RELATIVE_DIFF}); not comparing different work"
        )
    return check


def breakdown(batched: Batched, rounds: int) -> dict[str, float]:
    """Median milliseconds of the abs_ray side's parts, each timed alone (the parts of
    :func:`swap_batch`; ``paste_foregrounds`` includes ``warp_foreground``), and of
    ``F.grid_sample`` alone (bilinear, the batch's image, an identity grid)."""
    device = batched.device
    images = to_float(batched.image_u8)
    alpha = batched.alpha_u8.unsqueeze(1).float().div_(255.0)
    params = sample_swap_params(
        alpha, batched.labels, batched.bank.labels, batched.cfg, torch.Generator().manual_seed(0)
    )
    chosen = batched.bank.images.index_select(0, params.bg_index).float().div_(255.0)
    eye = torch.eye(2, 3, device=device).expand(images.shape[0], 2, 3)
    grid = F.affine_grid(eye, list(images.shape), align_corners=True)
    parts = {
        "uint8_to_float": lambda: (to_float(batched.image_u8), batched.alpha_u8.float() / 255),
        "sample_swap_params": lambda: sample_swap_params(
            alpha, batched.labels, batched.bank.labels, batched.cfg, torch.Generator()
        ),
        "gather_backgrounds": lambda: (
            batched.bank.images.index_select(0, params.bg_index).float().div_(255.0)
        ),
        "warp_foreground": lambda: warp_foreground(images, alpha, params),
        "paste_foregrounds": lambda: paste_foregrounds(images, alpha, chosen, params),
        "grid_sample_alone": lambda: F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=True
        ),
    }
    out = {}
    for name, fn in parts.items():
        fn()  # warm-up
        times = []
        for _ in range(rounds):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
        out[name] = round(statistics.median(times) * 1000, 2)
    return out


def measure(batched: Batched, inputs: dict, records: list, rounds: int, batch: int) -> dict:
    """Alternate rounds of both sides after one warm-up each; per-batch seconds and images/s."""
    device = batched.device
    times: dict[str, list[float]] = {"baseline": [], "abs_ray": []}
    for i in range(rounds + 1):
        start = time.perf_counter()
        per_sample_loop(inputs, records)
        elapsed = time.perf_counter() - start
        if i:
            times["baseline"].append(elapsed)
        _sync(device)
        start = time.perf_counter()
        batched()
        _sync(device)
        elapsed = time.perf_counter() - start
        if i:
            times["abs_ray"].append(elapsed)
    result: dict = {}
    for side, values in times.items():
        med = statistics.median(values)
        result[side] = {
            "median_s": round(med, 5),
            "min_s": round(min(values), 5),
            "images_per_s": round(batch / med, 1),
            "all_s": [round(v, 5) for v in values],
        }
    result["ratio"] = round(
        result["abs_ray"]["images_per_s"] / result["baseline"]["images_per_s"], 2
    )
    return result


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="where the batched swap runs (cpu, cuda, ...)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument(
        "--rounds", type=int, default=None, help="timed rounds per side (default 5, --full 30)"
    )
    p.add_argument("--full", action="store_true", help="30 rounds per side")
    p.add_argument("--small", action="store_true", help="5 rounds per side (the default)")
    p.add_argument(
        "--threads",
        default=None,
        help="torch thread counts to measure, comma-separated (default: 1 and torch's default)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/results/composite.json")
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    rounds = args.rounds or (30 if args.full else 5)
    default_threads = torch.get_num_threads()
    if args.threads:
        thread_counts = [int(t) for t in args.threads.split(",")]
    else:
        thread_counts = sorted({1, default_threads})
    device = torch.device(args.device)

    from abs_ray.pipeline import code_version

    inputs = make_inputs(args.size, args.batch)
    batched = Batched(inputs, device, args.seed)
    check = check_agreement(batched, inputs)
    records = batched()[1].to_records()  # the same draw every call (fixed seed)

    by_threads: dict[str, dict] = {}
    for threads in thread_counts:
        torch.set_num_threads(threads)
        r = measure(batched, inputs, records, rounds, args.batch)
        r["torch_threads"] = torch.get_num_threads()
        r["abs_ray_parts_ms"] = breakdown(batched, rounds)
        r["goal_ms_per_batch"] = round(1000 * args.batch / r["baseline"]["images_per_s"] / GOAL, 2)
        by_threads[str(threads)] = r
        logger.info(
            "%d thread(s), %s: loop %.1f images/s, abs_ray %.1f images/s = %.1fx",
            threads, device, r["baseline"]["images_per_s"], r["abs_ray"]["images_per_s"], r["ratio"],
        )  # fmt: skip
        logger.info("abs_ray parts, ms per batch: %s", r["abs_ray_parts_ms"])
    torch.set_num_threads(default_threads)

    # Headline: one thread on both sides (the loop cannot use more; a data loader scales it
    # with worker processes, as abs_ray scales with Ray workers).
    head_threads = "1" if "1" in by_threads else str(thread_counts[0])
    head = by_threads[head_threads]
    write_result(
        args.out,
        {
            "what": "images/s compositing a batch of swapped samples (fg affine + paste onto a "
            "background, uint8 in, float (B, 3, H, W) out): abs_ray.train.augment.swap_batch "
            "(batched, torch grid_sample) vs a per-sample PIL/torchvision loop applying the same "
            "parameters; same process, rounds interleaved, median",
            "mode": "full" if args.full else "small",
            "code_version": code_version(),
            "config": {
                "size": args.size,
                "batch": args.batch,
                "rounds": rounds,
                "device": str(device),
                "device_name": (
                    torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
                ),
                "swap": dataclasses.asdict(batched.cfg),
                "seed": args.seed,
                "torch_default_threads": default_threads,
            },
            "check": check,
            "by_threads": by_threads,
            "headline": {
                "torch_threads": int(head_threads),
                "baseline_images_per_s": head["baseline"]["images_per_s"],
                "abs_ray_images_per_s": head["abs_ray"]["images_per_s"],
                "ratio": head["ratio"],
                "goal": GOAL,
                "meets_goal": head["ratio"] >= GOAL,
            },
        },
    )


if __name__ == "__main__":
    main()
