"""Detector quality: the dense head vs the paper's pooled head vs the zero-shot saliency prior.

On the offline birds benchmark at 224 px, G = 16 (``data/birds224-shared`` and
``data/birds224-heldout``, built by ``make bench-detector``), each run trains one detector
with :func:`~abs_ray.models.detector_train.train_detector`'s steps (images loaded once per
draw and shared by the dense and pooled runs) from ``num_labelled`` mask-labelled
training images (80/20 train/val) and measures it on the 200 test images (unseen background
photos; on the held-out split also unseen bird species):

- ``dense``: the library default (dense head on frozen Lite0, 4 cached views, AdamW 3e-3
  one-cycle, 40 epochs);
- ``pooled``: the paper's head and optimiser (SGD lr 0.3, ReduceLROnPlateau, at most 200
  epochs, early stop after 60) on the same frozen Lite0 and the same 4 cached views, with
  the class-balanced loss (without it the frozen pooled head sits on "all background");
- ``saliency``: :class:`~abs_ray.serve.saliency.BorderContrastSaliency` (no training;
  ``num_labelled`` 0, one record per split).

One record per run in ``bench/results/detector.json`` (``head``, ``backbone``,
``num_labelled``, ``grid``, ``size``, ``seed``, ``split``, ``mask_iou`` at tight 0.5,
``mask_iou_at_0.33``, ``balanced_patch_accuracy`` (held-out test patches),
``val_balanced_accuracy``, ``seconds`` (feature caching + training, or the prior's inference;
image loading apart, as ``load_seconds``; on a shared box the wall time depends on the load,
``cpu_seconds`` (the process's CPU time in those steps, all threads) much less), ``device``, ``threads``); the file is rewritten after
every run and runs already in it are skipped, so an interrupted bench resumes. Runs go in
priority order (200 labels seed 0 shared, then held-out, then seeds 1-2, then 50/100/400),
so that a bench stopped early has the most important figures.

Usage:
    python bench/detector.py                        # the whole plan, resumable
    python bench/detector.py --max-runs 3           # the first 3 missing runs
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from abs_ray.data import load_dataset  # noqa: E402
from abs_ray.models.detector_train import DetectorTrainConfig, load_labelled_images  # noqa: E402
from abs_ray.ops.metrics import balanced_accuracy, mask_iou  # noqa: E402
from abs_ray.ops.patches import upsample_patch_grid  # noqa: E402

logger = logging.getLogger("bench.detector")

SIZE, GRID, EVAL_MAX = 224, 16, 200
SPLITS = {"shared": "data/birds224-shared", "held_out": "data/birds224-heldout"}
POOLED_RECIPE = dict(
    head="pooled",
    optimizer="sgd",
    schedule="plateau",
    lr=0.3,
    epochs=200,
    balance_classes=True,
)


def plan() -> list[tuple[str, str, int, int]]:
    """``(head, split, num_labelled, seed)`` in priority order."""
    runs = [("saliency", "shared", 0, 0), ("dense", "shared", 200, 0), ("pooled", "shared", 200, 0)]
    runs += [("saliency", "held_out", 0, 0), ("dense", "held_out", 200, 0)]
    runs += [("pooled", "held_out", 200, 0)]
    for seed in (1, 2):
        runs += [("dense", "shared", 200, seed), ("pooled", "shared", 200, seed)]
    for n in (50, 100, 400):
        runs += [("dense", "shared", n, 0), ("pooled", "shared", n, 0)]
    return runs


def key(head: str, split: str, n: int, seed: int) -> str:
    return f"{head}-{split}-l{n}-s{seed}"


def _eval_rows(manifest):
    df = manifest[(manifest["split"].astype(str) == "test") & manifest["mask_uri"].notna()]
    df = df.sort_values("id", kind="stable")
    if len(df) > EVAL_MAX:
        df = df.sample(n=EVAL_MAX, random_state=0).sort_values("id", kind="stable")
    return df.reset_index(drop=True)


@torch.no_grad()
def run_saliency(data_uri: str) -> dict:
    """The zero-shot prior on the held-out test images, scored as evaluate_detector does."""
    from abs_ray.serve.saliency import BorderContrastSaliency

    data = load_labelled_images(
        _eval_rows(load_dataset(data_uri)), image_size=SIZE, grid=GRID, num_workers=2
    )
    t0 = time.perf_counter()
    sal = BorderContrastSaliency(grid=GRID, image_size=SIZE).eval()
    prob = torch.cat(
        [
            torch.sigmoid(sal(data.images[i : i + 32].float() / 255.0))
            for i in range(0, len(data), 32)
        ]
    )
    out = {"balanced_patch_accuracy": balanced_accuracy(prob >= 0.5, data.labels < 0.5)}
    for name, t in (("mask_iou", 0.5), ("mask_iou_at_0.33", 0.33)):
        fg = upsample_patch_grid((prob < t).float(), (SIZE, SIZE)) > 0.5
        out[name] = float(mask_iou(fg, data.masks).mean())
    out["seconds"] = time.perf_counter() - t0
    out["n_eval"] = len(data)
    # The ceiling of any G x G patch mask: the true patch labels themselves.
    perfect = upsample_patch_grid((data.labels >= 0.5).float(), (SIZE, SIZE)) > 0.5
    out["perfect_patch_mask_iou"] = float(mask_iou(perfect, data.masks).mean())
    return out


#: Loaded images per (data, labelled, seed): the dense and pooled runs of one draw share them
#: (reading and resizing 400 images takes minutes on a loaded 2-core box).
_LOADED: dict[tuple[str, int, int], object] = {}


def _train(cfg: DetectorTrainConfig, data_uri: str) -> dict:
    """:func:`train_detector`'s steps (load, build, fit, evaluate, write) with the loaded
    images cached across runs; ``seconds`` = feature caching + fit, without image loading."""
    from abs_ray.models.detector_train import run as run_module
    from abs_ray.models.detector_train.fit import fit_detector

    draw = (data_uri, cfg.num_labelled, cfg.seed)
    t0 = time.perf_counter()
    if draw not in _LOADED:
        _LOADED.clear()
        _LOADED[draw] = run_module._load_data(cfg, load_dataset(data_uri), None)
    data = _LOADED[draw]
    t_loaded = time.perf_counter()
    device = torch.device(cfg.device)
    model = run_module._build_model(cfg, device, None)
    cpu0 = time.process_time()
    fit = fit_detector(model, data.train, data.val, cfg)
    t_fit, cpu = time.perf_counter(), time.process_time() - cpu0
    metrics = run_module._evaluate(model, data, fit, cfg, device)
    metrics["seconds"] = {"load": t_loaded - t0, "features": fit.feature_seconds}
    metrics["seconds"]["total"] = t_fit - t_loaded
    metrics["seconds"]["cpu"] = cpu
    metrics["history"] = fit.history
    run_module._write_outputs(model, data, metrics, cfg, device, None)
    return metrics


def run_trained(head: str, data_uri: str, n: int, seed: int, work: Path, device: str) -> dict:
    recipe = POOLED_RECIPE if head == "pooled" else {}
    cfg = DetectorTrainConfig(
        out=str(work / key(head, Path(data_uri).name, n, seed)),
        data=data_uri,
        grid=GRID,
        image_size=SIZE,
        num_labelled=n,
        eval_split="test",
        eval_max=EVAL_MAX,
        seed=seed,
        device=device,
        sheet_samples=8,
        num_workers=2,
        min_balanced_accuracy=0.0,  # the bench records weak detectors too
        **recipe,
    )
    metrics = _train(cfg, data_uri)
    held = metrics["held_out"]
    return {
        "mask_iou": held["mask_iou"],
        "mask_iou_at_0.33": held["mask_iou_at_0.33"],
        "balanced_patch_accuracy": held["balanced_patch_accuracy"],
        "val_balanced_accuracy": metrics["val"]["balanced_patch_accuracy"],
        "seconds": metrics["seconds"]["total"],
        "feature_seconds": metrics["seconds"]["features"],
        "load_seconds": metrics["seconds"]["load"],
        "cpu_seconds": metrics["seconds"]["cpu"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": metrics["epochs_run"],
        "n_eval": int(held["n"]),
        "recipe": {k: getattr(cfg, k) for k in ("optimizer", "schedule", "lr", "epochs")}
        | {"feature_cache_views": cfg.feature_cache_views, "freeze_backbone": True},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/results/detector.json")
    ap.add_argument("--work", default="runs/bench-detector")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-runs", type=int, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    records = json.loads(out.read_text())["runs"] if out.exists() else []
    done = {r["key"] for r in records}
    todo = [r for r in plan() if key(*r) not in done][: args.max_runs]
    for head, split, n, seed in todo:
        logger.info("run %s", key(head, split, n, seed))
        if head == "saliency":
            result = run_saliency(SPLITS[split])
        else:
            result = run_trained(head, SPLITS[split], n, seed, Path(args.work), args.device)
        records.append(
            {
                "key": key(head, split, n, seed),
                "head": head,
                "backbone": "efficientnet_lite0",
                "num_labelled": n,
                "grid": GRID,
                "size": SIZE,
                "seed": seed,
                "split": split,
                "device": args.device,
                "threads": args.threads,
                **result,
            }
        )
        write_result(str(out), {"suite": "detector", "runs": records})
        logger.info("%s: %s", records[-1]["key"], {k: result[k] for k in ("mask_iou", "seconds")})


if __name__ == "__main__":
    main()
