"""The deployed service over real HTTP on 127.0.0.1.

One application for the whole module, deployed from ``deployments/serve_config.yaml`` exactly
as ``serve deploy`` does (only the HTTP port is changed to a free one) on the session's Ray
cluster, and deleted afterwards with Serve shut down so later tests get their CPUs back.
``@serve.batch`` needs a real Serve (it crashes under ``_local_testing_mode``).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import yaml

from abs_ray.io import decode_image, encode_png

pytestmark = pytest.mark.slow

APP = "abs-swap"
# Identity transform: the foreground stays where it is, so its pixels can be compared.
STILL = {"scale_min": 1, "scale_max": 1, "degrees": 0, "translate": 0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(ray_cluster, tmp_path_factory, serve_config_path, repo_root):
    """Base URL of the app deployed with ``serve deploy`` from the repo's config file."""
    from ray import serve

    config = yaml.safe_load(serve_config_path.read_text())
    port = _free_port()
    config["http_options"] = {**config["http_options"], "host": "127.0.0.1", "port": port}
    path = tmp_path_factory.mktemp("serve") / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    exe = os.path.join(os.path.dirname(sys.executable), "serve")
    subprocess.run(
        [exe, "deploy", str(path), "--address", ray_cluster["dashboard"]],
        check=True,
        cwd=repo_root,
        capture_output=True,
        timeout=120,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            status = serve.status().applications.get(APP)
            if status is not None and status.status == "RUNNING":
                break
            if status is not None and status.status == "DEPLOY_FAILED":
                pytest.fail(f"deploy failed: {status.message}")
            if time.monotonic() > deadline:
                pytest.fail(f"app not running after 240 s: {status}")
            time.sleep(1)
        yield url
    finally:
        serve.delete(APP)
        serve.shutdown()


def _swap(url, image: bytes, **params):
    return requests.post(
        f"{url}/v1/swap",
        params=params,
        data=image,
        headers={"Content-Type": "image/png"},
        timeout=60,
    )


def test_swap_returns_png_of_same_size(service, sample):
    response = _swap(service, encode_png(sample.image))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    out = decode_image(response.content)
    assert out.shape == sample.image.shape
    params = json.loads(response.headers["X-Swap-Params"])
    assert {"bg_index", "bg_id", "scale", "angle", "dx", "dy"} <= set(params)
    assert int(response.headers["X-Seed"]) >= 0
    assert response.headers["X-Mask-Source"] == "saliency"


def test_same_seed_gives_identical_bytes(service, synthetic_samples):
    image = encode_png(synthetic_samples[1].image[:, 8:])  # 64 x 56: not square
    first = _swap(service, image, seed=1234)
    again = _swap(service, image, seed=1234)
    other = _swap(service, image, seed=1235)
    assert first.status_code == again.status_code == other.status_code == 200
    assert decode_image(first.content).shape == (64, 56, 3)
    assert first.content == again.content
    assert first.headers["X-Swap-Params"] == again.headers["X-Swap-Params"]
    assert first.content != other.content


def _multipart(url, endpoint, files, **params):
    files = {k: (f"{k}.png", v, "image/png") for k, v in files.items()}
    return requests.post(f"{url}{endpoint}", params=params, files=files, timeout=60)


def test_known_mask_keeps_foreground_and_replaces_background(service, sample):
    """Caller's exact mask, identity transform: object pixels kept, background pixels new."""
    fg = sample.mask == 255
    response = _multipart(
        service,
        "/v1/swap",
        {"image": encode_png(sample.image), "mask": encode_png(sample.mask)},
        seed=5,
        **STILL,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Mask-Source"] == "upload"
    out = decode_image(response.content)
    assert np.array_equal(out[fg], sample.image[fg])
    changed = (out != sample.image).any(axis=-1)
    assert changed[~fg].mean() > 0.99


def test_uploaded_background_is_used_exactly(service, synthetic_samples):
    src, other = synthetic_samples[0], synthetic_samples[2]
    response = _multipart(
        service,
        "/v1/swap",
        {
            "image": encode_png(src.image),
            "mask": encode_png(src.mask),
            "background": encode_png(other.background),
        },
        **STILL,
    )
    assert response.status_code == 200, response.text
    expected = np.where(src.mask[..., None] == 255, src.image, other.background)
    assert np.array_equal(decode_image(response.content), expected)
    assert json.loads(response.headers["X-Swap-Params"])["bg_id"] == "upload"


def test_variants_json_with_params_and_bank_filter(service, sample):
    response = _swap(service, encode_png(sample.image), n=3, seed=9, label=0)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seed"] == 9 and body["n"] == 3 and len(body["variants"]) == 3
    for variant in body["variants"]:
        image = decode_image(base64.b64decode(variant["png"]))
        assert image.shape == sample.image.shape
        params = variant["params"]
        assert params["bg_label"] == 0 and params["bg_id"].startswith("demo/")
        assert 0.5 <= params["scale"] <= 1.5 and abs(params["angle"]) <= 30
    again = _swap(service, encode_png(sample.image), n=3, seed=9, label=0).json()
    assert again["variants"] == body["variants"]


def test_mask_endpoint_returns_alpha_and_patch_grid(service, sample):
    response = _multipart(service, "/v1/mask", {"image": encode_png(sample.image)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mask_source"] == "saliency" and body["grid"] == 16
    assert np.asarray(body["patch_prob"]).shape == (16, 16)
    assert len(body["foreground_patches"]) == 256 and set(body["foreground_patches"]) <= {"0", "1"}
    alpha = decode_image(base64.b64decode(body["alpha_png"]))
    assert alpha.shape[:2] == sample.image.shape[:2]
    png = requests.post(
        f"{service}/v1/mask", params={"format": "png"}, data=encode_png(sample.image), timeout=60
    )
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["X-Patch-Grid"].startswith("16x16:")


def test_inpaint_endpoint_changes_only_the_hole(service, sample):
    response = _multipart(
        service, "/v1/inpaint", {"image": encode_png(sample.image), "mask": encode_png(sample.mask)}
    )
    assert response.status_code == 200, response.text
    out = decode_image(response.content)
    assert out.shape == sample.image.shape
    hole_fraction = float(response.headers["X-Hole-Fraction"])
    assert (sample.mask == 255).mean() <= hole_fraction < 0.9
    far = np.ones_like(sample.mask, dtype=bool)  # pixels more than 4 px from the object
    ys, xs = np.nonzero(sample.mask)
    far[max(ys.min() - 4, 0) : ys.max() + 5, max(xs.min() - 4, 0) : xs.max() + 5] = False
    assert np.array_equal(out[far], sample.image[far])


def test_info_health_and_docs(service):
    info = requests.get(f"{service}/v1/info", timeout=30).json()
    assert info["mask_source"]["kind"] == "saliency" and info["mask_source"]["trained"] is False
    assert info["bank"]["source"] == "demo" and info["bank"]["size"] == 32
    assert info["abs_ray"] and info["torch"] and info["ray"]
    assert info["batching"]["max_batch_size"] == 8
    assert requests.get(f"{service}/-/healthz", timeout=30).status_code == 200
    docs = requests.get(f"{service}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = requests.get(f"{service}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/swap", "/v1/mask", "/v1/inpaint", "/v1/info"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/swap"]["post"]["requestBody"]["content"]


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def _chunked_post(url: str, path: str, chunks) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.request(
            "POST", path, body=chunks, headers={"Content-Type": "image/png"}, encode_chunked=True
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_bad_inputs_get_their_status_and_the_service_keeps_answering(service, sample):
    from ray import serve

    good = encode_png(sample.image)
    recorder = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    lure = f"http://127.0.0.1:{recorder.server_address[1]}/background.png"
    _Recorder.hits.clear()
    before = requests.get(f"{service}/v1/info", timeout=30).json()["stats"]
    big = np.zeros((2100, 2100, 3), dtype=np.uint8)  # 4.4 MP > 4 MP, a small PNG
    cases = [
        # (what, request, status, error)
        (
            "body over limit",
            lambda: _swap(service, b"\0" * (10 * 2**20 + 1)),
            413,
            "payload_too_large",
        ),
        ("not an image", lambda: _swap(service, b"hello, not a picture"), 415, "not_an_image"),
        ("empty body", lambda: _swap(service, b""), 415, "empty"),
        (
            "json body",
            lambda: requests.post(f"{service}/v1/swap", json={"image": lure}, timeout=60),
            415,
            "unsupported_media_type",
        ),
        ("over pixel limit", lambda: _swap(service, encode_png(big)), 422, "too_large"),
        ("truncated", lambda: _swap(service, good[: len(good) // 2]), 422, "truncated"),
        ("n too large", lambda: _swap(service, good, n=17), 422, "invalid_request"),
        ("png for n=2", lambda: _swap(service, good, n=2, format="png"), 422, "invalid_parameter"),
        ("n zero", lambda: _swap(service, good, n=0), 422, "invalid_parameter"),
        (
            "scale order",
            lambda: _swap(service, good, scale_min=2, scale_max=1),
            422,
            "invalid_parameter",
        ),
        ("degrees", lambda: _swap(service, good, degrees=500), 422, "invalid_parameter"),
        (
            "work limit",
            lambda: _swap(service, encode_png(big[:2000, :2000]), n=16),
            422,
            "invalid_request",
        ),
        ("no such class", lambda: _swap(service, good, label=7), 422, "empty_bank_selection"),
        (
            "url parameter",
            lambda: _swap(service, good, background_url=lure),
            422,
            "invalid_parameter",
        ),
        (
            "url form field",
            lambda: requests.post(
                f"{service}/v1/swap",
                files={"image": ("i.png", good, "image/png")},
                data={"background": lure},
                timeout=60,
            ),
            422,
            "invalid_request",
        ),
        (
            "mask size",
            lambda: _multipart(
                service, "/v1/swap", {"image": good, "mask": encode_png(sample.mask[:32])}
            ),
            422,
            "invalid_request",
        ),
        (
            "no image part",
            lambda: _multipart(service, "/v1/swap", {"mask": good}),
            422,
            "invalid_request",
        ),
    ]
    for what, send, status, error in cases:
        response = send()
        assert response.status_code == status, (what, response.text)
        body = response.json()
        assert body["status"] == status and body["error"] == error, (what, body)
        assert body["detail"], what
    status, body = _chunked_post(service, "/v1/swap", (b"\0" * 2**20 for _ in range(12)))
    assert status == 413 and body["error"] == "payload_too_large"
    recorder.shutdown()
    assert _Recorder.hits == []  # nothing the caller named was fetched
    assert _swap(service, good).status_code == 200
    assert serve.status().applications[APP].status == "RUNNING"
    after = requests.get(f"{service}/v1/info", timeout=30).json()["stats"]
    assert after["jobs"] > before["jobs"]  # the same model replica: counters did not restart


def test_200_requests_from_16_clients(service, synthetic_samples):
    images = [encode_png(s.image) for s in synthetic_samples]

    def one(i: int):
        with requests.Session() as session:
            if i % 4 == 3:
                r = session.post(
                    f"{service}/v1/mask",
                    params={"format": "png"},
                    data=images[i % len(images)],
                    timeout=120,
                )
            else:
                r = session.post(
                    f"{service}/v1/swap",
                    params={"seed": i},
                    data=images[i % len(images)],
                    timeout=120,
                )
            return r.status_code, r.headers.get("content-type"), r.content

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(200)))
    statuses = [s for s, _, _ in results]
    assert all(s == 200 for s in statuses), sorted(set(statuses))
    for i, (_, ctype, content) in enumerate(results):
        assert ctype == "image/png"
        assert decode_image(content).shape[:2] == (64, 64), i
