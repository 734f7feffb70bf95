"""The hand-off, end to end with real parts: pipeline on S3 → Serve → reload.

A tiny pipeline run (detector trained here, then disentangle) writes its output to the moto
S3 server; the application is deployed with ``serve deploy`` from the shipped config naming
that output (``SwapModel``'s ``user_config.output``); ``/v1/info`` must report the trained
detector and the output's bank, and a swap's ``bg_id`` must be one of the output's ids. A
second run (another data set, the first run's detector) is then served by changing only the
``user_config``: Serve reconfigures the running replica, and requests sent all along must all
succeed while the fingerprint changes.
"""

from __future__ import annotations

import copy
import importlib.util
import threading
import time
from pathlib import Path

import boto3
import pytest
import requests

from abs_ray.io import encode_png
from abs_ray.pipeline import read_disentangled, run
from abs_ray.serve.bank import BackgroundBank

pytestmark = pytest.mark.slow


def _pipeline_helpers():
    """``write_layout`` and ``tiny_config`` of the pipeline tests (one tiny set-up for both)."""
    path = Path(__file__).resolve().parents[1] / "pipeline" / "conftest.py"
    spec = importlib.util.spec_from_file_location("pipeline_test_helpers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_layout, module.tiny_config


def _config(shipped: dict, output: str, s3) -> dict:
    """The shipped Serve config, serving ``output`` on a CPU, with the S3 server's settings."""
    config = copy.deepcopy(shipped)
    app = config["applications"][0]
    app["args"].update(device="cpu", num_gpus=0)
    # The replicas must reach the test's S3 server whatever environment the cluster started
    # with; the same runtime_env for both outputs, so a reload stays a user_config update.
    app["runtime_env"] = {
        "env_vars": {
            "AWS_ENDPOINT_URL": s3.endpoint_url,
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_DEFAULT_REGION": s3.region,
            "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
        }
    }
    model = next(d for d in app["deployments"] if d["name"] == "SwapModel")
    model["user_config"] = {"output": output}
    return config


@pytest.fixture(scope="module")
def outputs(s3_server, ray_cluster):
    """Two pipeline outputs on S3: run1 trains its detector; run2 (another data set) uses it."""
    write_layout, tiny_config = _pipeline_helpers()
    name = "handoff"
    boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.access_key,
        aws_secret_access_key=s3_server.secret_key,
        region_name=s3_server.region,
    ).create_bucket(Bucket=name)
    root = f"s3://{name}"
    write_layout(f"{root}/data1", "waterbirds", masks=True, s3=s3_server)
    write_layout(f"{root}/data2", "class_split", masks=False, s3=s3_server, seed=1)
    run(tiny_config(f"{root}/data1", f"{root}/run1"), s3=s3_server)
    run(
        tiny_config(
            f"{root}/data2",
            f"{root}/run2",
            stages=("disentangle",),
            detector_checkpoint=f"{root}/run1/detector/detector.pt",
        ),
        s3=s3_server,
    )
    return f"{root}/run1", f"{root}/run2"


def _swap(url: str, image: bytes) -> requests.Response:
    return requests.post(
        f"{url}/v1/swap",
        params={"format": "json", "seed": 1},
        data=image,
        headers={"Content-Type": "image/png"},
        timeout=60,
    )


def test_the_service_serves_the_pipeline_output_and_reloads_without_failures(
    outputs, s3_server, deploy, shipped_config, sample
):
    run1, run2 = outputs
    ids1 = set(read_disentangled(run1, s3=s3_server)["id"])
    ids2 = set(read_disentangled(run2, s3=s3_server)["id"])
    assert ids1 and ids2 and not ids1 & ids2
    fp1 = BackgroundBank.from_pipeline_output(run1, s3=s3_server).fingerprint()
    fp2 = BackgroundBank.from_pipeline_output(run2, s3=s3_server).fingerprint()
    assert fp1 != fp2
    image = encode_png(sample.image)

    with deploy(_config(shipped_config, run1, s3_server)) as app:
        info = requests.get(f"{app.url}/v1/info", timeout=60).json()
        assert info["mask_source"]["kind"] == "detector"
        assert info["mask_source"]["checkpoint"] == f"{run1}/detector/detector.pt"
        assert info["bank"]["fingerprint"] == fp1
        assert info["bank"]["size"] == len(ids1)
        assert info["output"]["uri"] == run1
        assert info["output"]["code_version"]
        assert info["output"]["counts"]["ok"] == len(ids1)
        response = _swap(app.url, image)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["mask_source"] == "detector"
        assert body["bank_fingerprint"] == fp1
        assert body["variants"][0]["params"]["bg_id"] in ids1

        # Reload: only SwapModel's user_config changes; requests go on meanwhile.
        statuses: list[int] = []
        seen: list[str] = []
        stop = threading.Event()

        def traffic() -> None:
            while not stop.is_set():
                r = _swap(app.url, image)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    seen.append(r.json()["bank_fingerprint"])

        thread = threading.Thread(target=traffic, daemon=True)
        thread.start()
        try:
            app.apply(_config(shipped_config, run2, s3_server))
            deadline = time.monotonic() + 240
            while fp2 not in seen[-1:] and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(1.0)
        finally:
            stop.set()
            thread.join(timeout=120)
        assert statuses and all(s == 200 for s in statuses), statuses
        assert seen[0] == fp1 and seen[-1] == fp2, (seen[:3], seen[-3:])
        # Once switched, never back: the old bank is gone from the replica.
        assert fp1 not in seen[seen.index(fp2) :]
        info = requests.get(f"{app.url}/v1/info", timeout=60).json()
        assert info["output"]["uri"] == run2
        assert info["bank"]["fingerprint"] == fp2
        assert info["mask_source"]["checkpoint"] == f"{run1}/detector/detector.pt"
        response = _swap(app.url, image)
        assert response.json()["variants"][0]["params"]["bg_id"] in ids2
