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

Slow-client mode (``--slow-clients N``) measures the service under hostile clients instead:
it deploys the shipped Serve config (``--config``, only the port changed) on a private
2-CPU cluster, measures ``POST /v1/swap`` and ``GET /-/healthz`` latency from one client
unloaded, then again while ``N`` sockets hold requests open: each sends a swap request's
headers with ``Content-Length: 100000`` and 4 bytes of body, then nothing (``idle``) or one
byte every 2 s (``trickle``), or half of its headers (``headers``); each reconnects as soon
as it is cut, so ``N`` stay open throughout. It reports the latency ratio under load and
when and how each slow connection was cut (its HTTP status, or ``closed``)::

    python bench/serve_load.py --slow-clients 300 --out bench/results/serve-slow.json
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
    slow = parser.add_argument_group("slow clients")
    slow.add_argument("--slow-clients", type=int, default=0, help="0: the batching benchmark")
    slow.add_argument("--slow-mode", choices=("idle", "trickle", "headers"), default="idle")
    slow.add_argument("--probe-requests", type=int, default=60, help="timed requests per phase")
    slow.add_argument("--window-s", type=float, default=60.0, help="longest probe phase")
    slow.add_argument("--hold-s", type=float, default=0.0, help="keep the attack on this long")
    slow.add_argument("--config", default="deployments/serve_config.yaml")
    slow.add_argument("--num-cpus", type=int, default=2, help="CPUs of the private cluster")
    slow.add_argument("--give-up-s", type=float, default=150.0, help="stop waiting for a cut")
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
    from abs_ray.serve.jobs import Job
    from abs_ray.serve.service import SwapService

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


# --- slow clients -----------------------------------------------------------------------------


def deploy_config(path: str, num_cpus: int) -> tuple[str, dict]:
    """Deploy a Serve config file as shipped (port changed) on a private local cluster.

    Returns the base URL and the config deployed. ``deploy_apps`` is what ``serve deploy``
    asks the controller to do, without starting the dashboard it would go through.
    """
    import ray
    import yaml
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    with open(path) as f:
        config = yaml.safe_load(f)
    port = _free_port()
    config["http_options"] = {**config.get("http_options", {}), "port": port}
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    serve.start(http_options=config["http_options"], proxy_location=config.get("proxy_location"))
    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
    names = [app["name"] for app in config["applications"]]
    deadline = time.monotonic() + 300
    while True:
        apps = serve.status().applications
        if all(n in apps and apps[n].status == "RUNNING" for n in names):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"applications not running after 300 s: {apps}")
        time.sleep(1)
    return f"http://127.0.0.1:{port}", config


_SLOW_HEAD = (
    "POST /v1/swap HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: image/png\r\n"
    "Content-Length: 100000\r\n\r\n"
)


async def _slow_request(host: str, port: int, mode: str, give_up_s: float) -> dict:
    """One slow client; returns ``{"status": int | "closed" | "open" | "refused", "cut_s"}``.

    ``idle``: a 100 kB swap request's headers and 4 bytes of body, then nothing;
    ``trickle``: the same, then one byte every 2 s; ``headers``: half of the request line and
    headers, never finished. ``cut_s`` is the time from connecting to the server's answer or
    close (``open``: still open after ``give_up_s``).
    """
    import asyncio

    opened = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return {"status": "refused", "cut_s": time.monotonic() - opened}
    head = _SLOW_HEAD.format(host=host, port=port).encode()
    first = head[: len(head) // 2] if mode == "headers" else head + b"\x89PNG"
    status: int | str = "open"
    drip = None
    try:
        writer.write(first)
        await writer.drain()
        if mode == "trickle":

            async def trickle() -> None:
                while True:
                    await asyncio.sleep(2)
                    writer.write(b"\0")
                    await writer.drain()

            drip = asyncio.ensure_future(trickle())
        line = await asyncio.wait_for(reader.readline(), give_up_s)
        parts = line.split()
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else "closed"
    except TimeoutError:
        status = "open"
    except (ConnectionError, OSError):
        status = "closed"
    finally:
        if drip is not None:
            drip.cancel()
        writer.close()
    return {"status": status, "cut_s": round(time.monotonic() - opened, 3)}


class SlowClients:
    """``n`` slow clients that reconnect as soon as they are cut (a sustained attack).

    They run on an event loop of their own in a thread; :meth:`stop` ends them and returns
    one record per finished connection (see :func:`_slow_request`).
    """

    def __init__(self, url: str, n: int, mode: str, give_up_s: float) -> None:
        import asyncio

        host, port = url.removeprefix("http://").split(":")
        self.records: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def client() -> None:
            while True:
                self.records.append(await _slow_request(host, int(port), mode, give_up_s))

        async def start() -> list:
            return [asyncio.ensure_future(client()) for _ in range(n)]

        self.tasks = asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def stop(self) -> list[dict]:
        """Cancel every client (open connections are closed) and return the records."""

        def cancel() -> None:
            for task in self.tasks:
                task.cancel()

        self.loop.call_soon_threadsafe(cancel)
        time.sleep(1)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        return list(self.records)


def probe(url: str, image: bytes, count: int, window_s: float, timeout_s: float = 60.0) -> dict:
    """Up to ``count`` sequential swaps and health checks within ``window_s``.

    Latency percentiles of the swaps that succeeded; a timeout (``timeout_s``, as a caller
    would use) or non-200 counts as a failure.
    """
    import requests

    swap, health, failures, timeline = [], [], {}, []
    began = time.monotonic()
    end = began + window_s
    with requests.Session() as session:
        for i in range(count):
            if time.monotonic() > end:
                break
            start = time.perf_counter()
            try:
                r = session.post(
                    f"{url}/v1/swap",
                    params={"seed": i},
                    data=image,
                    headers={"Content-Type": "image/png"},
                    timeout=timeout_s,
                )
                code: int | str = r.status_code
            except requests.RequestException as exc:
                code = type(exc).__name__
            if code == 200:
                swap.append(time.perf_counter() - start)
                timeline.append((round(time.monotonic() - began, 2), round(swap[-1] * 1000)))
            else:
                failures[str(code)] = failures.get(str(code), 0) + 1
            start = time.perf_counter()
            try:
                session.get(f"{url}/-/healthz", timeout=timeout_s)
                health.append(time.perf_counter() - start)
            except requests.RequestException:
                failures["healthz"] = failures.get("healthz", 0) + 1

    def pct(values: list[float], q: float) -> float | None:
        return round(float(np.percentile(np.asarray(values) * 1000, q)), 1) if values else None

    return {
        "ok": len(swap),
        "failures": failures,
        "swap_p50_ms": pct(swap, 50),
        "swap_p95_ms": pct(swap, 95),
        "swap_max_ms": pct(swap, 100),
        "healthz_p50_ms": pct(health, 50),
        "healthz_p95_ms": pct(health, 95),
        "timeline": timeline,  # (seconds into the phase, swap ms)
    }


def slow_clients(args: argparse.Namespace) -> dict:
    """Latency of normal requests without and with ``--slow-clients`` held open; cut times."""
    import ray
    from ray import serve

    image = _image(args.image_size)
    url, config = deploy_config(args.config, args.num_cpus)
    try:
        probe(url, image, 10, 60)  # warm-up
        unloaded = probe(url, image, args.probe_requests, args.window_s)
        logger.info("unloaded: %s", {k: v for k, v in unloaded.items() if k != "timeline"})
        attack = SlowClients(url, args.slow_clients, args.slow_mode, args.give_up_s)
        time.sleep(3)  # let them all reach the service
        loaded = probe(url, image, args.probe_requests, args.window_s)
        logger.info(
            "with %d slow clients: %s",
            args.slow_clients,
            {k: v for k, v in loaded.items() if k != "timeline"},
        )
        time.sleep(max(0.0, args.hold_s - args.window_s))
        cuts = attack.stop()
        after = probe(url, image, 10, 60)
        app = serve.status().applications
        deployments = {
            name: {str(k): v for k, v in d.replica_states.items()}
            for a in app.values()
            for name, d in a.deployments.items()
        }
    finally:
        serve.shutdown()
        ray.shutdown()
    statuses: dict[str, int] = {}
    for c in cuts:
        statuses[str(c["status"])] = statuses.get(str(c["status"]), 0) + 1
    cut_s = np.asarray([c["cut_s"] for c in cuts if c["status"] not in ("open", "refused")])
    ratio = None
    if unloaded["swap_p95_ms"] and loaded["swap_p95_ms"]:
        ratio = round(loaded["swap_p95_ms"] / unloaded["swap_p95_ms"], 2)
    return {
        "mode": "slow_clients",
        "config": args.config,
        "http_options": config["http_options"],
        "ingress_and_model": [
            {k: d.get(k) for k in ("name", "max_ongoing_requests", "autoscaling_config")}
            for d in config["applications"][0].get("deployments", [])
        ],
        "replicas_at_end": deployments,
        "cluster_cpus": args.num_cpus,
        "slow_clients": args.slow_clients,
        "slow_mode": args.slow_mode,
        "image_size": args.image_size,
        "unloaded": unloaded,
        "with_slow_clients": loaded,
        "after": after,
        "p95_ratio": ratio,
        "slow_connections": len(cuts),
        "slow_statuses": statuses,
        "cut_s": {
            q: round(float(np.percentile(cut_s, p)), 2) if len(cut_s) else None
            for q, p in (("p50", 50), ("p95", 95), ("max", 100))
        },
        "load_average_at_end": os.getloadavg(),
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_environment()
    cli = get_args_parser().parse_args()
    write_result(cli.out, slow_clients(cli) if cli.slow_clients else main(cli))
