"""Training-step time with background swapping (``abs``) against the plain step (``erm``).

Same process, same model, same batch, steps interleaved (erm, abs, erm, abs, ...) so that load
from other processes hits both alike. Wall and process-CPU time are both recorded: on a shared
CPU box, wall time swings with other processes' load, CPU time much less (use ``--threads 1``
there, which also keeps OpenMP from spinning on busy cores). Each step is the full :func:`abs_ray.train.loop.train_step`
(swap for ``abs``, then RandomResizedCrop + flip, forward, backward, SGD step); the swap alone
is timed too. Writes ``bench/results/train_step.json``.

    python bench/train_step.py                                   # resnet50, 224 px, batch 32
    python bench/train_step.py --setups resnet50:224:32 efficientnet_lite0:224:32 --threads 1
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from abs_ray.data import SyntheticConfig, generate_synthetic  # noqa: E402
from abs_ray.models import create_classifier  # noqa: E402
from abs_ray.train import TrainConfig  # noqa: E402
from abs_ray.train.augment import RecentBackgrounds, swap_batch, to_float  # noqa: E402
from abs_ray.train.loop import swap_config, train_step  # noqa: E402

logger = logging.getLogger("bench.train_step")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(size: int, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch of synthetic images with true masks and clean backgrounds, as the
    Ray Data decoding delivers it (uint8, on the device)."""
    cfg = SyntheticConfig(n_train=batch, n_val=0, n_test=0, size=size, seed=0)
    samples = [s for s in generate_synthetic(cfg) if s.split == "train"]
    return {
        "image": torch.from_numpy(np.stack([s.image for s in samples])).to(device),
        "alpha": torch.from_numpy(np.stack([s.mask for s in samples])).to(device),
        "background": torch.from_numpy(np.stack([s.background for s in samples])).to(device),
        "label": torch.tensor([s.y for s in samples], device=device),
    }


class _Timer:
    """Wall and process-CPU seconds of a block (CPU time is what a shared box distorts least:
    waiting for a core does not count)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> _Timer:
        _sync(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bench(backbone: str, size: int, batch: int, steps: int, device: torch.device) -> dict:
    """Per-step seconds (wall and CPU) of erm and abs, and of the swap alone."""
    data = _batch(size, batch, device)
    torch.manual_seed(0)
    weights = "default" if backbone == "efficientnet_lite0" else None  # offline here
    model = create_classifier(backbone, num_classes=2, weights=weights).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    cfgs = {m: TrainConfig(data="-", method=m, backbone=backbone) for m in ("erm", "abs")}
    bank = RecentBackgrounds(256)
    gen = torch.Generator().manual_seed(0)
    wall: dict[str, list[float]] = {"erm": [], "abs": [], "swap": []}
    cpu: dict[str, list[float]] = {"erm": [], "abs": [], "swap": []}
    for i in range(steps + 1):  # the first round warms up
        for method in ("erm", "abs"):
            with _Timer(device) as t:
                train_step(model, optimizer, data, cfgs[method], bank, gen, size)
            if i:
                wall[method].append(t.wall)
                cpu[method].append(t.cpu)
        images = to_float(data["image"])
        alpha = data["alpha"].unsqueeze(1).float().div_(255.0)
        with _Timer(device) as t:
            swap_batch(images, alpha, data["label"], bank, swap_config(cfgs["abs"], size), 1.0, gen)
        if i:
            wall["swap"].append(t.wall)
            cpu["swap"].append(t.cpu)

    def summary(times: dict[str, list[float]]) -> dict:
        med = {k: statistics.median(v) for k, v in times.items()}
        low = {k: min(v) for k, v in times.items()}
        return {
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "min_s": {k: round(v, 4) for k, v in low.items()},
            "ratio_abs_over_erm_median": round(med["abs"] / med["erm"], 3),
            "ratio_abs_over_erm_min": round(low["abs"] / low["erm"], 3),
            "swap_over_erm_median": round(med["swap"] / med["erm"], 3),
            "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        }

    result = {
        "backbone": backbone,
        "weights": weights,
        "image_size": size,
        "batch": batch,
        "steps": steps,
        "device": str(device),
        "wall": summary(wall),
        "cpu": summary(cpu) if device.type == "cpu" else None,
    }
    key = "cpu" if device.type == "cpu" else "wall"
    r = result[key]
    logger.info(
        "%s %d px batch %d on %s (%s time, median): erm %.3f s, abs %.3f s, swap %.3f s; "
        "abs/erm %.3f (min-based %.3f)",
        backbone, size, batch, device, key, r["median_s"]["erm"], r["median_s"]["abs"],
        r["median_s"]["swap"], r["ratio_abs_over_erm_median"], r["ratio_abs_over_erm_min"],
    )  # fmt: skip
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--setups", nargs="+", default=["resnet50:224:32"], metavar="BACKBONE:SIZE:BATCH"
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps per method (after 1 warm-up)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default="bench/results/train_step.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    device = torch.device(args.device)
    results = []
    for setup in args.setups:
        backbone, size, batch = setup.split(":")
        results.append(bench(backbone, int(size), int(batch), args.steps, device))
    write_result(
        args.out,
        {
            "what": "train step seconds, abs (swap + crop/flip + fwd/bwd/SGD) vs erm (crop/flip + "
            "fwd/bwd/SGD), same process, same model and batch, interleaved; wall and process CPU "
            "time (on a shared CPU box the CPU-time ratio is the reliable one)",
            "torch_threads": torch.get_num_threads(),
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
