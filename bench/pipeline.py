"""``disentangle`` throughput: the Ray Data pipeline vs a plain single-process loop.

Both do the same work on the same images in one process run: read each file from storage,
decode, resize, run the detector, build tight/loose masks, inpaint, encode the foreground
(RGBA) and background as PNG, and write Parquet. The Ray side runs
:func:`abs_ray.pipeline.run_disentangle_stage` on a fresh local cluster limited to 1 and then
2 CPUs. The ratio is Ray images/s over loop images/s.

Ray's fixed cost (starting the actor processes, importing torch and the inpainter in each:
~5 s on 2 busy cores) is inside the Ray figure; at a few dozen images it dominates, which is
why both modes use enough images for the figure to be a throughput (192: ~3 min; 480: ~6 min
on 2 cores).

Usage:
    python bench/pipeline.py                # small: 192 images at 224 px, patchmatch
    python bench/pipeline.py --full         # 480 images
    python bench/pipeline.py --images 96 --inpainter telea --cpus 1,2,4

Writes ``bench/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import write_result  # noqa: E402

from abs_ray.env import configure_environment  # noqa: E402

configure_environment()


def plain_loop(
    manifest, checkpoint: str | None, inpainter: str, out: str, size: int, grid: int = 16
) -> float:
    """The single-process baseline; returns seconds."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    from abs_ray.io import decode_image, encode_png, read_bytes, write_bytes
    from abs_ray.models import create_inpainter, load_detector
    from abs_ray.ops import masks_from_background_prob, patch_coverage

    t0 = time.perf_counter()
    model = load_detector(checkpoint) if checkpoint else None
    paint = create_inpainter(inpainter)
    rows = []
    for r in manifest.itertuples():
        img = decode_image(read_bytes(r.image_uri))
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
        x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
        with torch.inference_mode():
            if model is None:  # true masks, as mask_source="truth"
                m = decode_image(read_bytes(r.mask_uri))[..., 0]
                m = np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST))
                tight = loose = torch.from_numpy(m > 127).float()[None, None]
                prob = 1 - patch_coverage(tight, grid)
                bg = paint(x, loose)
            else:
                prob = torch.sigmoid(model(x))
                tight, loose = masks_from_background_prob(
                    prob, (size, size), model.config.tight, model.config.loose
                )
                bg = paint(x, loose)
        alpha = (tight[0, 0] * 255).round().byte().numpy()
        bg = (bg[0] * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        rows.append(
            {
                "id": r.id,
                "foreground_png": encode_png(np.concatenate([img, alpha[..., None]], axis=-1)),
                "background_png": encode_png(bg),
                "patch_prob": prob[0].flatten().tolist(),
            }
        )
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    write_bytes(os.path.join(out, "loop.parquet"), buf.getvalue())
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=192)
    p.add_argument("--full", action="store_true", help="480 images")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--inpainter", default="patchmatch")
    p.add_argument(
        "--mask-source",
        choices=("truth", "detector"),
        default="truth",
        help="truth: the synthetic masks (a fixed, object-sized hole per image); "
        "detector: a quickly trained one (holes depend on its quality)",
    )
    p.add_argument("--cpus", default="1,2", help="Ray cluster sizes to measure")
    p.add_argument("--out", default="bench/results/pipeline.json")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    n = 480 if args.full else args.images

    import ray

    from abs_ray.data import SyntheticConfig, load_dataset, write_synthetic
    from abs_ray.models.detector_train import DetectorTrainConfig, train_detector
    from abs_ray.pipeline import PipelineConfig, PoolConfig, code_version, run_disentangle_stage

    work = tempfile.mkdtemp(prefix="abs-bench-")
    data = os.path.join(work, "data")
    write_synthetic(
        data,
        SyntheticConfig(
            n_train=n // 2, n_val=0, n_test=n - n // 2 - (n - n // 2) % 4, size=args.size, seed=0
        ),
    )
    manifest = load_dataset(data)
    t = time.perf_counter()
    checkpoint = None
    if args.mask_source == "detector":
        train_cfg = DetectorTrainConfig(
            out=os.path.join(work, "detector"),
            image_size=args.size,
            grid=16,
            freeze_backbone=True,
            epochs=15,
            num_labelled=min(64, n // 2),
            eval_split=None,
            sheet_samples=0,
        )
        train_detector(train_cfg, manifest)
        checkpoint = os.path.join(work, "detector", "detector.pt")
    detector_s = time.perf_counter() - t

    loop_s = plain_loop(manifest, checkpoint, args.inpainter, work, args.size)
    result = {
        "images": len(manifest),
        "size": args.size,
        "inpainter": args.inpainter,
        "code_version": code_version(),
        "mask_source": args.mask_source,
        "detector": "efficientnet_lite0 (frozen, trained here)" if checkpoint else None,
        "detector_train_s": round(detector_s, 1),
        "loop": {"seconds": round(loop_s, 2), "images_per_s": round(len(manifest) / loop_s, 2)},
        "ray": {},
    }
    print(
        f"plain loop: {len(manifest)} images in {loop_s:.1f} s = {len(manifest) / loop_s:.2f} images/s"
    )
    for cpus in [int(c) for c in args.cpus.split(",")]:
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
        cfg = PipelineConfig(
            data=data,
            out=os.path.join(work, f"ray{cpus}"),
            stages=("disentangle",),
            detector_checkpoint=checkpoint,
            mask_source=args.mask_source,
            inpainter=args.inpainter,
            preview_samples=0,
            # Scale the pools to the cluster: one inpainting actor per CPU (the bottleneck).
            inpaint=dataclasses.replace(
                PipelineConfig().inpaint, min_size=cpus, max_size=cpus, num_cpus=0.5
            ),
            detect=PoolConfig(min_size=1, max_size=1, batch_size=32, num_cpus=0.25),
        )
        t = time.perf_counter()
        summary = run_disentangle_stage(
            cfg,
            manifest,
            checkpoint,
            __import__("abs_ray.io", fromlist=["S3Options"]).S3Options.from_env(),
            code_version=code_version(),
        )
        wall = time.perf_counter() - t
        ray.shutdown()
        assert summary["counts"]["ok"] == len(manifest), summary["counts"]
        rate = len(manifest) / wall
        result["ray"][str(cpus)] = {
            "seconds": round(wall, 2),
            "images_per_s": round(rate, 2),
            "ratio_vs_loop": round(rate / result["loop"]["images_per_s"], 2),
            "stage_seconds": summary["seconds"],
        }
        print(
            f"ray, {cpus} CPU: {wall:.1f} s = {rate:.2f} images/s = {rate / result['loop']['images_per_s']:.2f}x the loop"
        )
    write_result(args.out, result)
    print(json.dumps({k: result[k] for k in ("loop", "ray")}, indent=2))


if __name__ == "__main__":
    main()
