"""Per-image time of every registered inpainter at 224², on this machine's CPU.

Images: scikit-image's astronaut and coffee photos resized to 224², each with a bird-sized
blob hole (about 17 % of the image before the default 3-px dilation). Each inpainter is timed
on one image per call (median of ``--repeats`` calls after a warm-up, alternating the two photos)
and on a batch of ``--batch`` images (time per image). ``torchscript`` runs a small stand-in
convolutional network scripted here (not a real AOT-GAN/LaMa), so its figure is the plumbing
overhead plus a tiny model. Ratios are against ``telea``, the in-process baseline.

Usage:
    python bench/inpainters.py [--repeats 7] [--batch 8] [--threads 1] [--out bench/results/inpainters.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
import warnings

import cv2
import numpy as np
import torch
from skimage import data
from torch import nn

from abs_ray.models.inpainters import create_inpainter, inpainter_names

SIZE = 224


class _StandIn(nn.Module):
    """A 4-layer conv net with the inpainter signature: a stand-in for a learned model."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 3, 3, padding=1),
        )

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([image, mask], dim=1)))


def _photos() -> tuple[torch.Tensor, torch.Tensor]:
    pics = [
        cv2.resize(p, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        for p in (data.astronaut(), data.coffee())
    ]
    masks = []
    for center in ((105, 120), (125, 100)):
        mask = np.zeros((SIZE, SIZE), np.uint8)
        cv2.ellipse(mask, center, (55, 38), 15.0, 0, 360, 1, -1)
        cv2.circle(mask, (center[0] + 55, center[1] - 20), 18, 1, -1)  # the head
        masks.append(mask)
    image = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).float() / 255
    return image, torch.from_numpy(np.stack(masks)).float()[:, None]


def _time(fn, repeats: int) -> float:
    fn(0)  # warm-up
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    image, mask = _photos()
    tmp = tempfile.mkdtemp()
    ts_uri = os.path.join(tmp, "standin.pt")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_StandIn().eval()), buf)
    with open(ts_uri, "wb") as f:
        f.write(buf.getvalue())

    configs = {name: {} for name in inpainter_names()}
    configs["torchscript"] = {"uri": ts_uri}
    configs["noise"] = {"seed": 0}
    configs["patch_scramble"] = {"seed": 0}
    variants = {"patchmatch_patch5": ("patchmatch", {"patch_size": 5})}

    batch_image = image.repeat(args.batch // 2 + 1, 1, 1, 1)[: args.batch]
    batch_mask = mask.repeat(args.batch // 2 + 1, 1, 1, 1)[: args.batch]
    results = {}
    for label, (name, kwargs) in {**{n: (n, c) for n, c in configs.items()}, **variants}.items():
        inpainter = create_inpainter(name, **kwargs)
        single = _time(
            lambda i, p=inpainter: p(image[i % 2 : i % 2 + 1], mask[i % 2 : i % 2 + 1]),
            args.repeats,
        )
        batched = _time(
            lambda i, p=inpainter: p(batch_image, batch_mask), max(3, args.repeats // 2)
        )
        results[label] = {
            "config": inpainter.config(),
            "seconds_per_image": single,
            f"seconds_per_image_batch{args.batch}": batched / args.batch,
        }
        print(
            f"{label:18s} {single * 1e3:9.2f} ms/image  {batched / args.batch * 1e3:9.2f} ms/image in a batch of {args.batch}"
        )
    base = results["telea"]["seconds_per_image"]
    for r in results.values():
        r["ratio_vs_telea"] = r["seconds_per_image"] / base
    report = {
        "size": SIZE,
        "hole_fraction": float(mask.mean()),
        "dilated_hole_fraction": float(create_inpainter("gray").hole_mask(mask).mean()),
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch": torch.__version__,
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    return report


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch and OpenCV threads (1: one Ray task per core)"
    )
    parser.add_argument("--out", default="bench/results/inpainters.json")
    return parser


if __name__ == "__main__":
    main(get_args_parser().parse_args())
