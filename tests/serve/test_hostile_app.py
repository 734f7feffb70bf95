"""The hostile corpus (tests/hostile.py) against every endpoint of the deployed service.

Every file goes to ``/v1/swap``, ``/v1/mask`` and ``/v1/inpaint``, as the raw body and as a
multipart upload (under its own odd file name). The service must never answer 5xx: a good
image gets 200 with an output of its (EXIF-rotated) size (one under 2 pixels a side: the
service's own documented 422); a refused one gets the documented status (415 not an image,
422 a damaged, oversized or unsupported one) with the JSON error body ``{status, error, type,
detail}`` naming the typed error, and nothing of the file's bytes.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from abs_ray import errors
from abs_ray.io import decode_image
from tests.hostile import OK, corpus, echoes_content
from tests.serve.test_app import service  # noqa: F401 (the deployed app, one per module)

pytestmark = pytest.mark.slow

ENDPOINTS = ("/v1/swap", "/v1/mask", "/v1/inpaint")
FILES = [e for e in corpus() if not e.local_only]


def _expected(entry) -> tuple[str, int, str | None]:
    """(outcome, status, error code) the service documents for an entry.

    Decoding errors: 415 for not an image, 422 for the others (abs_ray/serve/errors.py). A
    good image with a side under 2 pixels is refused by the service itself
    (``InvalidRequestError``, 422: "image must be ... H, W >= 2").
    """
    if entry.expected == OK:
        if min(entry.shape) < 2:
            return "InvalidRequestError", 422, "invalid_request"
        return OK, 200, None
    status = 415 if entry.expected in ("EmptyImageError", "NotAnImageError") else 422
    return entry.expected, status, getattr(errors, entry.expected).reason


def _post(url: str, endpoint: str, entry, multipart: bool) -> requests.Response:
    params = {"seed": 1} if endpoint == "/v1/swap" else {}
    if multipart:
        files = {"image": (entry.name, entry.data, "application/octet-stream")}
        return requests.post(f"{url}{endpoint}", params=params, files=files, timeout=120)
    headers = {"Content-Type": "application/octet-stream"}
    return requests.post(
        f"{url}{endpoint}", params=params, data=entry.data, headers=headers, timeout=120
    )


def _check(url: str, endpoint: str, entry, multipart: bool) -> tuple[str, str | None]:
    """(outcome seen, a problem or None) for one request."""
    expected, expected_status, code = _expected(entry)
    response = _post(url, endpoint, entry, multipart)
    status = response.status_code
    if status >= 500:
        return f"{status}", f"server error {status}: {response.text[:200]}"
    if status == 200:
        if endpoint == "/v1/mask":
            body = response.json()
            shape = (body["height"], body["width"])
        else:
            shape = decode_image(response.content).shape[:2]
        if expected != OK:
            return OK, f"200 for a {expected}"
        return OK, None if shape == entry.shape else f"output {shape}, input {entry.shape}"
    try:
        body = response.json()
    except json.JSONDecodeError:
        return f"{status}", f"{status} without a JSON body: {response.text[:200]}"
    seen = body.get("type", f"{status}")
    problems = []
    if status != expected_status:
        problems.append(f"status {status}, documented {expected_status} ({body})")
    if set(body) < {"status", "error", "type", "detail"} or body["status"] != status:
        problems.append(f"error body {body}")
    if seen != expected:
        problems.append(f"type {seen}")
    elif body["error"] != code:
        problems.append(f"error code {body['error']}")
    if echoes_content(response.text, entry.data):
        problems.append("the body quotes the file's bytes")
    return seen, "; ".join(problems) or None


def test_every_corpus_file_on_every_endpoint_raw_and_multipart(service):  # noqa: F811
    cases = [(ep, e, mp) for e in FILES for ep in ENDPOINTS for mp in (False, True)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda c: _check(service, *c), cases))
    problems = [
        f"{e.name} {ep} {'multipart' if mp else 'raw'}: {problem}"
        for (ep, e, mp), (_, problem) in zip(cases, results, strict=True)
        if problem
    ]
    assert not problems, "\n".join(problems)
    assert [seen for seen, _ in results] == [_expected(e)[0] for _, e, _ in cases]
    assert requests.get(f"{service}/v1/info", timeout=30).status_code == 200
