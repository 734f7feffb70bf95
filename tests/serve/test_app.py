"""The deployed service over real HTTP on 127.0.0.1.

One application for the whole module, deployed from ``deployments/serve_config.yaml`` exactly
as ``serve deploy`` does (only the HTTP port is changed to a free one) on the session's Ray
cluster, and deleted afterwards with Serve shut down so later tests get their CPUs back.
``@serve.batch`` needs a real Serve (it crashes under ``_local_testing_mode``).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import http.server
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from abs_ray.io import decode_image, encode_png

pytestmark = pytest.mark.slow

APP = "abs-swap"
# Identity transform: the foreground stays where it is, so its pixels can be compared.
STILL = {"scale_min": 1, "scale_max": 1, "degrees": 0, "translate": 0}


@pytest.fixture(scope="module")
def service(deploy, shipped_config):
    """Base URL of the app deployed with ``serve deploy`` from the repo's config file."""
    with deploy(shipped_config) as app:
        yield app.url


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


def test_info_health_ready_and_docs(service):
    info = requests.get(f"{service}/v1/info", timeout=30).json()
    assert info["mask_source"]["kind"] == "saliency" and info["mask_source"]["trained"] is False
    assert info["bank"]["source"] == "demo" and info["bank"]["size"] == 32
    assert info["abs_ray"] and info["torch"] and info["ray"]
    assert info["batching"]["max_batch_size"] == 8
    assert info["limits"]["body_timeout_s"] == 10
    assert requests.get(f"{service}/-/healthz", timeout=30).status_code == 200
    ready = requests.get(f"{service}/v1/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    paths = requests.get(f"{service}/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/swap", "/v1/mask", "/v1/inpaint", "/v1/info", "/v1/ready"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/swap"]["post"]["requestBody"]["content"]


def test_docs_page_loads_everything_from_the_service(service):
    """Swagger UI is served offline: every URL on the page is the service's, and answers."""
    docs = requests.get(f"{service}/docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert not re.search(r"https?://", docs.text), "the docs page points outside the service"
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", docs.text)
    assert any(u.endswith("swagger-ui-bundle.js") for u in urls), urls
    for url in urls:
        assert url.startswith("/"), url
        assert requests.get(f"{service}{url}", timeout=30).status_code == 200, url
    assert requests.get(f"{service}/redoc", timeout=30).status_code == 404  # CDN-only page: off


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


# --- hostile clients -------------------------------------------------------------------------


def _raw_post(url: str, path: str, body: bytes, content_type: bytes) -> tuple[int, dict]:
    """POST with a Content-Type given as raw bytes (e.g. a non-ASCII boundary)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("POST", path)
        conn.putheader(b"Content-Type", content_type)
        conn.putheader(b"Content-Length", str(len(body)).encode())
        conn.endheaders(body)
        response = conn.getresponse()
        text = response.read()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, {"text": text[:200]}
    finally:
        conn.close()


def test_malformed_requests_get_4xx_not_500(service, sample):
    good = encode_png(sample.image)
    parts = {n: (f"{n}.png", good, "image/png") for n in ("image", "background", "mask")}
    boundary_less = b"--x\r\nContent-Disposition: form-data; name=image\r\n\r\nabc\r\n--x--\r\n"
    non_ascii = (
        '--b\u00e9\r\nContent-Disposition: form-data; name="image"; filename="i.png"\r\n\r\n'
    )
    cases = [
        (
            "four parts",
            lambda: requests.post(
                f"{service}/v1/swap", files={**parts, "extra": ("x.png", good)}, timeout=60
            ),
            400,
            "malformed_request",
        ),
        (
            "70 kB text field",
            lambda: requests.post(
                f"{service}/v1/swap",
                files={"image": parts["image"]},
                data={"mask": "a" * 70_000},
                timeout=60,
            ),
            400,
            "malformed_request",
        ),
        ("label beyond int64", lambda: _swap(service, good, label=2**63), 422, "invalid_parameter"),
        (
            "group beyond int64",
            lambda: _swap(service, good, group=-(2**63) - 1),
            422,
            "invalid_parameter",
        ),
        ("repeated n", lambda: _swap(service, good, n=[1, 2]), 422, "invalid_parameter"),
        (
            "repeated format",
            lambda: _swap(service, good, format=["png", "json"]),
            422,
            "invalid_parameter",
        ),
    ]
    for what, send, status, error in cases:
        response = send()
        assert response.status_code == status, (what, response.text)
        body = response.json()
        assert body["error"] == error and body["detail"], (what, body)
    assert "'n'" in _swap(service, good, n=[1, 2]).json()["detail"]  # names the parameter
    status, body = _raw_post(
        service, "/v1/swap", boundary_less, b"multipart/form-data"
    )  # no boundary
    assert status == 400 and body["error"] == "malformed_request", body
    # A non-ASCII boundary: parsed when header and body agree (latin-1 both), a 400 when
    # they do not (UTF-8 in the header, latin-1 in the body), never a 500.
    part = non_ascii.encode("latin-1") + good + "\r\n--b\u00e9--\r\n".encode("latin-1")
    status, body = _raw_post(
        service, "/v1/mask", part, "multipart/form-data; boundary=b\u00e9".encode()
    )
    assert status == 400 and body["error"] == "malformed_request", body
    status, body = _raw_post(
        service, "/v1/mask", part, "multipart/form-data; boundary=b\u00e9".encode("latin-1")
    )
    assert status == 200, body
    assert _swap(service, good, label=[0, 1]).status_code == 200  # list parameters may repeat


_QUERY_TOKENS = st.sampled_from(
    [
        "n",
        "seed",
        "label",
        "group",
        "format",
        "degrees",
        "scale_min",
        "feather",
        "x",
        "%ff",
        "\u00e9",
        "1",
        "0",
        "-1",
        str(2**64),
        "1e999",
        "nan",
        "png",
        "json",
        "true",
        "",
    ]
)


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(pairs=st.lists(st.tuples(_QUERY_TOKENS, _QUERY_TOKENS), max_size=5))
@example(pairs=[("label", str(2**64))])  # overflowed numpy in the model replica (a 500)
@example(pairs=[("group", "-" + str(2**64))])
def test_fuzz_query_strings_never_get_5xx(service, sample, pairs):
    query = "&".join(f"{k}={v}" for k, v in pairs)
    response = requests.post(
        f"{service}/v1/swap?{query}",
        data=encode_png(sample.image),
        headers={"Content-Type": "image/png"},
        timeout=60,
    )
    assert response.status_code < 500, (query, response.text)


@st.composite
def _multipart_bodies(draw):
    boundary = draw(st.sampled_from(["b", "xYz-123", "\u00e9", "", "a" * 80]))
    ctype = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                "multipart/form-data",
                f'multipart/form-data; boundary="{boundary}"',
            ]
        )
    )
    body = b""
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.sampled_from(["image", "background", "mask", "x", "", '"']))
        filename = draw(st.sampled_from(['; filename="f.png"', "", '; filename=""']))
        data = draw(st.one_of(st.binary(max_size=64), st.just(b"z" * 70_000)))
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n'
        body += head.encode() + b"\r\n" + data + b"\r\n"
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n".encode()
    return body + draw(st.binary(max_size=8)), ctype.encode("latin-1", "replace")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=_multipart_bodies())
def test_fuzz_multipart_bodies_never_get_5xx(service, case):
    body, ctype = case
    status, answer = _raw_post(service, "/v1/swap", body, ctype)
    assert status < 500, (body[:200], ctype, answer)


async def _slow_client(host: str, port: int, give_up_s: float) -> tuple[int | str, float, float]:
    """Headers of a 100 kB swap body and 4 bytes, then one byte a second.

    Returns the status (or ``closed``/``open``), the seconds it was open, and when it ended.
    """
    start = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"POST /v1/swap HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/png\r\n"
        "Content-Length: 100000\r\n\r\n"
    )
    writer.write(head.encode() + b"\x89PNG")

    async def trickle():
        while True:
            await asyncio.sleep(1)
            writer.write(b"\0")
            await writer.drain()

    drip = asyncio.ensure_future(trickle())
    try:
        line = await asyncio.wait_for(reader.readline(), give_up_s)
        parts = line.split()
        status = int(parts[1]) if len(parts) > 1 else "closed"
    except (ConnectionError, OSError):
        status = "closed"
    except TimeoutError:
        status = "open"
    finally:
        drip.cancel()
        writer.close()
    end = time.monotonic()
    return status, end - start, end


def test_slow_clients_are_cut_while_normal_requests_go_on(service, sample):
    """300 trickling uploads: each is cut (408) after body_timeout_s (10 s), with slack for a
    loaded machine; normal requests are answered before the first of them is cut (without
    waiting for slots the slow ones hold)."""
    host, port = service.removeprefix("http://").split(":")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def attack():
        return await asyncio.gather(*(_slow_client(host, int(port), 90) for _ in range(300)))

    slow = asyncio.run_coroutine_threadsafe(attack(), loop)
    try:
        time.sleep(2)  # all connected and sent their headers
        answered_at = []
        for i in range(8):
            response = _swap(service, encode_png(sample.image), seed=i)
            assert response.status_code == 200, response.text
            answered_at.append(time.monotonic())
        results = slow.result(120)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    statuses = sorted({str(s) for s, _, _ in results})
    assert statuses in (["408"], ["408", "closed"]), statuses
    assert max(t for _, t, _ in results) < 45, sorted(t for _, t, _ in results)[-5:]
    first_cut = min(end for _, _, end in results)
    assert sum(t < first_cut for t in answered_at) >= 3, (answered_at, first_cut)
