"""Load test of the swap service: latency and throughput, dynamic batching on vs off.

Starts a local Ray cluster and Serve on 127.0.0.1, deploys ``deployments.augment:build_app``
twice (``max_batch_size`` 8, then 1 = batching off; one replica of each deployment so the
figures compare batching, not autoscaling), and for 1, 8 and 32 concurrent clients sends
``POST /v1/swap`` requests (one 224 px PNG each, ``n = 1``, masks from the configured mask
source) for a fixed number of requests per level. Reports p50/p95 latency, requests/s, and
the mean batch size the model replica saw (from ``/v1/info``).

Usage:
    python bench/serve_load.py                                  # defaults, ~2-3 min on 2 CPUs
    python bench/serve_load.py --requests 400 --clients 1,8,32,64
    python bench/serve_load.py --detector-checkpoint runs/x/detector/detector.pt

Writes ``bench/results/serve.json``. The client threads run on the same machine as the
service: on a small machine they take CPU from it, so compare figures from one run only.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _common import write_result  # noqa: E402

from abs_ray.env import configure_environment  # noqa: E402

logger = logging.getLogger("bench.serve_load")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="1,8,32", help="concurrency levels, comma-separated")
    parser.add_argument("--requests", type=int, default=160, help="requests per level")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8, help="max_batch_size when on")
    parser.add_argument("--detector-checkpoint", default=None, help="default: zero-shot saliency")
    parser.add_argument("--model-cpus", type=float, default=1.0)
    parser.add_argument("--out", default="bench/results/serve.json")
    return parser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _image(size: int) -> bytes:
    from abs_ray.data.synthetic import SyntheticConfig, generate_synthetic
    from abs_ray.io import encode_png

    cfg = SyntheticConfig(n_train=0, n_val=0, n_test=4, size=size, seed=0)
    return encode_png(next(iter(generate_synthetic(cfg))).image)


def run_level(url: str, image: bytes, clients: int, total: int) -> dict:
    """Send ``total`` swap requests from ``clients`` threads; latency percentiles and rate."""
    import requests

    lock = threading.Lock()
    sent = 0
    latencies: list[float] = []
    failures: dict[int, int] = {}

    def worker() -> None:
        nonlocal sent
        with requests.Session() as session:
            while True:
                with lock:
                    if sent >= total:
                        return
                    sent += 1
                    seed = sent
                start = time.perf_counter()
                response = session.post(
                    f"{url}/v1/swap",
                    params={"seed": seed},
                    data=image,
                    headers={"Content-Type": "image/png"},
                    timeout=300,
                )
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        failures[response.status_code] = failures.get(response.status_code, 0) + 1

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
            pool.submit(worker)
    wall = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "clients": clients,
        "requests": total,
        "ok": len(latencies),
        "failures": failures,
        "seconds": round(wall, 3),
        "req_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(float(np.percentile(ms, 50)), 1) if len(ms) else None,
        "p95_ms": round(float(np.percentile(ms, 95)), 1) if len(ms) else None,
    }


def model_only(args: argparse.Namespace, image: bytes, repeats: int = 6) -> dict:
    """What batching can buy inside the model replica: ``SwapService.process`` in this process
    on batches of 1 and of ``--batch-size`` swap jobs, same device, same threads as a replica.

    Batching amortises the mask model's call; compositing stays per job. On a CPU a batched
    forward is no cheaper per image (often dearer: caches), so the HTTP figures cannot show 2x
    there; on a GPU the batched forward costs about what one image costs.
    """
    import torch

    from abs_ray.io import decode_image
    from abs_ray.serve.config import ServiceConfig
    from abs_ray.serve.service import Job, SwapService

    torch.set_num_threads(max(1, int(args.model_cpus)))
    cfg = ServiceConfig.from_dict({"detector_checkpoint": args.detector_checkpoint})
    service = SwapService.from_config(cfg)
    pixels = decode_image(image)
    out: dict[str, float] = {}
    for batch in (1, args.batch_size):
        jobs = [Job("swap", pixels) for _ in range(batch)]
        service.process(jobs)  # warm-up
        rounds = max(1, repeats * args.batch_size // batch)
        start = time.perf_counter()
        for _ in range(rounds):
            service.process(jobs)
        out[str(batch)] = round(rounds * batch / (time.perf_counter() - start), 1)
    return {
        "jobs_per_s": out,
        "batched_vs_single": round(out[str(args.batch_size)] / out["1"], 2),
        "device": str(service.device),
        "mask_source": service.mask_source.info.get("kind"),
        "torch_threads": torch.get_num_threads(),
    }


def main(args: argparse.Namespace) -> dict:
    import ray
    import requests
    from ray import serve

    from deployments.augment import build_app

    levels = [int(c) for c in args.clients.split(",")]
    image = _image(args.image_size)
    model = model_only(args, image)
    logger.info("model replica's work alone, jobs/s by batch size: %s", model)
    # A private local cluster: never join one another process started on this machine.
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    url = f"http://127.0.0.1:{port}"
    modes: dict[str, dict] = {}
    try:
        for mode, batch in (("batching_on", args.batch_size), ("batching_off", 1)):
            settings = {
                "max_batch_size": batch,
                "detector_checkpoint": args.detector_checkpoint,
                "model_num_cpus": args.model_cpus,
                "ingress_num_cpus": 0.5,
            }
            serve.run(build_app(settings), name="bench", route_prefix="/")
            run_level(url, image, 8, 32)  # warm-up: first calls of every shape are slow
            results = []
            for clients in levels:
                before = requests.get(f"{url}/v1/info", timeout=60).json()["stats"]
                level = run_level(url, image, clients, args.requests)
                after = requests.get(f"{url}/v1/info", timeout=60).json()["stats"]
                jobs, batches = after["jobs"] - before["jobs"], after["batches"] - before["batches"]
                level["mean_batch_size"] = round(jobs / batches, 2) if batches else None
                logger.info("%s %s", mode, level)
                results.append(level)
            info = requests.get(f"{url}/v1/info", timeout=60).json()
            modes[mode] = {"max_batch_size": batch, "levels": results}
            serve.delete("bench")
    finally:
        serve.shutdown()
        ray.shutdown()
    on = {r["clients"]: r["req_per_s"] for r in modes["batching_on"]["levels"]}
    off = {r["clients"]: r["req_per_s"] for r in modes["batching_off"]["levels"]}
    return {
        "endpoint": "POST /v1/swap (n=1, raw PNG body)",
        "image_size": args.image_size,
        "requests_per_level": args.requests,
        "mask_source": info["mask_source"]["kind"],
        "device": info["device"],
        "model_num_cpus": args.model_cpus,
        "load_average_at_end": os.getloadavg(),
        "modes": modes,
        "speedup_on_vs_off": {str(c): round(on[c] / off[c], 2) for c in on if off.get(c)},
        "model_only": model,
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_environment()
    cli = get_args_parser().parse_args()
    write_result(cli.out, main(cli))
