"""The method's effect: worst-group accuracy on the offline birds benchmark.

Train is 100 % correlated (every waterbird on water, every landbird on land); test has the
four groups in equal numbers. Methods, each trained on the same pipeline output:

- ``erm``: the original images;
- ``erm_aug``: the original images with colour jitter, RandAugment and CutMix;
- ``abs``: AutoBackSwap end to end: a detector trained from ``num_labelled`` patch-labelled
  images → the pipeline (masks, inpainting) → training on swapped foregrounds;
- ``oracle``: the same swap with the true masks cutting the foreground out.

Ablations (``abs`` only, as in the paper): the inpainter, the number of patch-labelled images
and the grid size. Each changes one setting of the main configuration.

Everything runs on one local Ray cluster: the detector as a Ray task, ``disentangle`` on Ray
Data, training on Ray Train. Seeds vary the classifier's initialisation, shuffling, swaps
and crops; the benchmark images and the detectors are the same for every seed.

Usage:
    python bench/quality.py            # small: 128 px, ~40 min on 2 CPU cores
    python bench/quality.py --full     # 224 px, grid 16, more data and epochs (hours on CPU)
    python bench/quality.py --only main --seeds 0
    python bench/quality.py --only main --set size=224 --set grid=16 --out bench/results/quality-224.json
    python bench/quality.py --only main --set bird_split=held_out --work runs/bq-heldout --out bench/results/quality-heldout.json

``bird_split``: ``shared`` (the default here) tests the training birds on background photos
never seen in training, as Waterbirds does (its test birds are new photos of the training
species), so test accuracy measures reliance on the background; ``held_out`` tests on bird
species never seen in training, which mixes that with transfer to new species.

Writes ``bench/results/quality.json`` (``--out``; ``bench/report.py`` shows every
``quality*.json``); work folders go to ``runs/bench-quality`` (``--work``; reused: a finished
pipeline output or training run is not redone: runs with other training settings go to their
own folder; when the data settings change, the old detectors, pipelines and runs are moved to
``<work>/stale-<time>``; other detector epochs or time budgets need another ``--work``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import write_result  # noqa: E402

from abs_ray.env import configure_environment  # noqa: E402

logger = logging.getLogger("bench.quality")

METHODS = ("erm", "erm_aug", "abs", "oracle")

#: Small: minutes-to-an-hour on 2 CPU cores. Full: the paper's scale where a CPU allows.
MODES = {
    "small": {
        "size": 128,
        "grid": 8,
        "n_train": 320,
        "n_val": 80,
        "n_test": 400,
        "num_labelled": 200,
        "detector_seconds": 240,
        "detector_epochs": 400,
        "train_epochs": 6,
        "seeds": (0, 1, 2),
        "ablation_seeds": (0,),
        "inpainters": ("patchmatch", "telea", "gray"),
        "labelled": (50, 100, 200, 400),
        "grids": (8, 16),
        "bird_split": "shared",
        "freeze_backbone": True,
        "train_lr": 1e-3,
    },
}
MODES["full"] = {
    **MODES["small"],
    "size": 224,
    "grid": 16,
    "n_train": 1000,
    "n_val": 300,
    "n_test": 600,
    "detector_seconds": 1800,
    "detector_epochs": 200,
    "train_epochs": 30,
    "ablation_seeds": (0, 1, 2),
    "freeze_backbone": False,
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One pipeline output: a detector (labelled images, grid) and an inpainter."""

    num_labelled: int
    grid: int
    inpainter: str

    @property
    def key(self) -> str:
        return f"l{self.num_labelled}-g{self.grid}-{self.inpainter}"


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _stats(values: list[float]) -> dict:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"mean": None, "std": None, "values": values}
    mean = sum(clean) / len(clean)
    std = (
        math.sqrt(sum((v - mean) ** 2 for v in clean) / (len(clean) - 1)) if len(clean) > 1 else 0.0
    )
    return {"mean": round(mean, 4), "std": round(std, 4), "values": [round(v, 4) for v in clean]}


def summarise(reports: list[dict], seeds: list[int], group_names: dict[int, str]) -> dict:
    """Mean ± std over seeds of test worst-group, overall and per-group accuracy."""
    tests = [r["best"]["test"] for r in reports]
    groups = sorted({int(g) for t in tests for g in t["per_group"]})
    return {
        "seeds": seeds,
        "worst_group": _stats([t["worst_group_accuracy"] for t in tests]),
        "accuracy": _stats([t["overall_accuracy"] for t in tests]),
        "mean_group": _stats([t["mean_group_accuracy"] for t in tests]),
        "per_group": {
            group_names.get(g, str(g)): {
                k: v
                for k, v in _stats([t["per_group"].get(str(g), math.nan) for t in tests]).items()
                if k != "values"
            }
            for g in groups
        },
        "best_epochs": [r["best"]["epoch"] for r in reports],
    }


class Bench:
    def __init__(self, mode: dict, work: str) -> None:
        self.mode, self.work = mode, work
        self.data = os.path.join(work, "birds")
        self.detectors: dict[str, dict] = {}

    def build_data(self) -> None:
        from abs_ray.data.birds import BirdsConfig, write_birds
        from abs_ray.io import exists

        cfg = BirdsConfig(
            n_train=self.mode["n_train"],
            n_val=self.mode["n_val"],
            n_test=self.mode["n_test"],
            size=self.mode["size"],
            seed=0,
            correlation=1.0,
            bird_split=self.mode["bird_split"],
        )
        wanted = {"generator": "birds", **json.loads(json.dumps(dataclasses.asdict(cfg)))}
        config = os.path.join(self.data, "config.json")
        if exists(config) and _read_json(config) == wanted:
            return
        # Detectors, pipeline outputs and training runs in this work folder belong to the old
        # data: move them aside rather than reuse them with the new data.
        stale = [os.path.join(self.work, d) for d in ("detectors", "pipelines", "train")]
        stale = [d for d in stale if os.path.exists(d)]
        if stale:
            aside = os.path.join(self.work, f"stale-{time.strftime('%Y%m%d-%H%M%S')}")
            logger.warning("the data settings changed: moving %s to %s", stale, aside)
            os.makedirs(aside)
            for d in stale:
                os.rename(d, os.path.join(aside, os.path.basename(d)))
        logger.info("building the birds benchmark in %s", self.data)
        write_birds(self.data, cfg)

    def pipeline(self, v: Variant) -> str:
        """Detector + disentangle for one variant (reused when already done); its output."""
        from abs_ray.pipeline import PipelineConfig, PoolConfig, run

        out = os.path.join(self.work, "pipelines", v.key)
        manifest = os.path.join(out, "manifest.json")
        if os.path.exists(manifest):
            summary = _read_json(manifest)
        else:
            # The detector depends on (labelled, grid) only: reuse it across inpainters.
            det_key = f"l{v.num_labelled}-g{v.grid}"
            det_ckpt = os.path.join(self.work, "detectors", det_key, "detector.pt")
            base = PipelineConfig()
            cfg = PipelineConfig(
                data=self.data,
                out=out,
                stages=("disentangle",)
                if os.path.exists(det_ckpt)
                else ("detector", "disentangle"),
                detector_checkpoint=det_ckpt if os.path.exists(det_ckpt) else None,
                detector=dataclasses.replace(
                    base.detector,
                    image_size=self.mode["size"],
                    grid=v.grid,
                    num_labelled=v.num_labelled,
                    epochs=self.mode["detector_epochs"],
                    max_train_seconds=self.mode["detector_seconds"],
                    eval_max=self.mode["n_test"],
                    sheet_samples=8,
                ),
                inpainter=v.inpainter,
                inpaint=PoolConfig(min_size=2, max_size=2, batch_size=8, num_cpus=0.5),
                preview_samples=8,
            )
            summary = run(cfg)
            trained = os.path.join(out, "detector", "detector.pt")
            if os.path.exists(trained) and not os.path.exists(det_ckpt):
                import shutil

                os.makedirs(os.path.dirname(det_ckpt), exist_ok=True)
                for name in ("detector.pt", "metrics.json", "mask_sheet.png"):
                    shutil.copy(os.path.join(out, "detector", name), os.path.dirname(det_ckpt))
        metrics_file = os.path.join(
            self.work, "detectors", f"l{v.num_labelled}-g{v.grid}", "metrics.json"
        )
        if os.path.exists(metrics_file):
            held = _read_json(metrics_file).get("held_out") or {}
            self.detectors[f"l{v.num_labelled}-g{v.grid}"] = {
                "balanced_patch_accuracy": held.get("balanced_patch_accuracy"),
                "iou": held.get("mask_iou"),
                "seconds": summary.get("seconds", {}).get("detector"),
            }
        counts = summary.get("counts", {})
        if counts.get("errors"):
            logger.warning("%s: %d inputs failed in the pipeline", v.key, counts["errors"])
        return out

    def train(self, data: str, method: str, seed: int, tag: str) -> dict:
        from abs_ray.train import TrainConfig, run_training

        cfg = TrainConfig(
            data=data,
            # runs are reused by name: keep other training settings apart
            out=os.path.join(
                self.work,
                "train",
                f"e{self.mode['train_epochs']}-lr{self.mode['train_lr']:g}"
                + ("-frozen" if self.mode["freeze_backbone"] else "-finetuned"),
            ),
            method=method,
            run_name=f"{tag}-{method}-s{seed}",
            freeze_backbone=self.mode["freeze_backbone"],
            epochs=self.mode["train_epochs"],
            lr=self.mode["train_lr"],
            num_workers=2,
            cpus_per_worker=0.5,
            seed=seed,
            sample_grid=0,
        )
        start = time.perf_counter()
        report = run_training(cfg)
        t = report["best"]["test"]
        logger.info(
            "%s %s seed %d: test worst-group %.3f, accuracy %.3f (%.0f s)",
            tag,
            method,
            seed,
            t["worst_group_accuracy"],
            t["overall_accuracy"],
            time.perf_counter() - start,
        )
        return report


def main(args: argparse.Namespace) -> dict:
    import ray

    from abs_ray.data.birds import GROUP_NAMES

    mode = dict(MODES["full" if args.full else "small"])
    for item in args.set or []:
        key, _, value = item.partition("=")
        if key not in mode or not value:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(mode)}")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a bare string: --set bird_split=shared
        mode[key] = type(mode[key])(parsed)
    if args.seeds:
        mode["seeds"] = mode["ablation_seeds"] = tuple(int(s) for s in args.seeds.split(","))
    only = set(args.only.split(","))
    bench = Bench(mode, args.work)
    start = time.perf_counter()
    bench.build_data()
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    main_variant = Variant(mode["num_labelled"], mode["grid"], mode["inpainters"][0])
    result: dict = {
        "mode": ("full" if args.full else "small")
        + (" + " + " ".join(args.set) if args.set else ""),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in mode.items()},
        "main": {},
        "ablations": {},
        "detectors": bench.detectors,
        "notes": [],
    }

    def run_methods(variant: Variant, methods, seeds, tag: str) -> dict:
        data = bench.pipeline(variant)
        out = {}
        for method in methods:
            reports = [bench.train(data, method, s, tag) for s in seeds]
            out[method] = summarise(reports, list(seeds), GROUP_NAMES)
        return out

    try:
        if "main" in only:
            result["main"] = run_methods(main_variant, METHODS, mode["seeds"], main_variant.key)
        seeds = mode["ablation_seeds"]
        ablations = {
            "inpainter": [
                (name, dataclasses.replace(main_variant, inpainter=name))
                for name in mode["inpainters"]
            ],
            "num_labelled": [
                (str(n), dataclasses.replace(main_variant, num_labelled=n))
                for n in mode["labelled"]
            ],
            "grid": [(str(g), dataclasses.replace(main_variant, grid=g)) for g in mode["grids"]],
        }
        for name, variants in ablations.items():
            if name not in only and "ablations" not in only:
                continue
            result["ablations"][name] = {
                label: run_methods(v, ("abs",), seeds, v.key)["abs"] for label, v in variants
            }
    finally:
        ray.shutdown()
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--full", action="store_true", help="the full-scale configuration")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default: the mode's)")
    p.add_argument(
        "--only",
        default="main,inpainter,num_labelled,grid",
        help="what to run: main, inpainter, num_labelled, grid, ablations",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a setting of the mode (JSON value), e.g. --set size=224 --set grid=16",
    )
    p.add_argument("--work", default="runs/bench-quality")
    p.add_argument("--out", default="bench/results/quality.json")
    return p


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("ray", "mlflow", "urllib3", "abs_ray.models.detector_train"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    configure_environment()
    cli = get_args_parser().parse_args()
    if cli.full:
        cli.work = cli.work if cli.work != "runs/bench-quality" else "runs/bench-quality-full"
    write_result(cli.out, main(cli))
