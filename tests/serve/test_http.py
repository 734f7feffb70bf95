"""The HTTP edge without Ray: body deadline, malformed uploads, query checks, offline docs.

Requests are real Starlette ``Request`` objects on hand-made ASGI scopes and ``receive``
callables, so a slow client or a hostile multipart body can be played exactly. The fuzz
tests (hypothesis) assert the property the service promises: a request's bytes never make
the parsing raise anything but a typed request error (a 4xx), never a 500.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

from abs_ray.errors import AbsRayError
from abs_ray.serve import docs, http
from abs_ray.serve import query as queries
from abs_ray.serve.jobs import SwapOptions
from abs_ray.web.errors import (
    InvalidParameterError,
    MalformedRequestError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
    error_body,
    http_status,
)

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def _request(body_chunks, headers=(), query=b"", delay_s=0.0, stall=False) -> Request:
    """A request whose body arrives as ``body_chunks``, ``delay_s`` apart; ``stall``: then
    nothing more ever arrives (a client that stopped sending)."""
    chunks = list(body_chunks)

    async def receive():
        if chunks:
            if delay_s:
                await asyncio.sleep(delay_s)
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks) or stall}
        if stall:
            await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/swap",
        "query_string": query,
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        # Serve's ingress scopes carry the app: Starlette then raises HTTPException(400) on a
        # bad multipart body, which parse_upload must still turn into a typed 400.
        "app": object(),
    }
    return Request(scope, receive)


# --- body deadline -----------------------------------------------------------------------


def test_stalled_body_is_cut_at_the_deadline_with_408():
    request = _request([PNG[:4]], headers=[("Content-Length", "100000")], stall=True)
    start = time.monotonic()
    with pytest.raises(RequestTimeoutError, match=r"within 0.3 s \(4 of 100000 bytes"):
        asyncio.run(http.read_body(request, 10**6, timeout_s=0.3))
    assert time.monotonic() - start < 5
    assert http_status(RequestTimeoutError("x")) == 408


def test_trickling_body_is_cut_although_each_chunk_is_quick():
    """A deadline on the whole body, not per chunk: one byte every 50 ms never ends in time."""
    request = _request([b"\0"] * 1000, delay_s=0.05)
    with pytest.raises(RequestTimeoutError):
        asyncio.run(http.read_body(request, 10**6, timeout_s=0.5))


def test_body_within_deadline_and_limit_is_read_whole():
    request = _request([b"ab", b"cd", b"ef"], delay_s=0.01)
    assert asyncio.run(http.read_body(request, 100, timeout_s=5)) == b"abcdef"
    with pytest.raises(PayloadTooLargeError):
        asyncio.run(http.read_body(_request([b"x" * 60, b"x" * 60]), 100, timeout_s=5))


# --- malformed multipart ---------------------------------------------------------------------


def _multipart(parts, boundary="b0undary", ctype=None) -> tuple[bytes, list]:
    """A multipart body of ``(name, filename or None, data)`` parts."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data
        body += b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    ctype = ctype or f"multipart/form-data; boundary={boundary}"
    return body, [("Content-Type", ctype), ("Content-Length", str(len(body)))]


def _parse(body: bytes, headers, parts=http.SWAP_PARTS):
    return asyncio.run(http.parse_upload(_request([body], headers), body, parts))


@pytest.mark.parametrize(
    ("what", "build"),
    [
        (
            "four file parts",
            lambda: _multipart([(n, "f.png", PNG) for n in ("image", "background", "mask", "x")]),
        ),
        (
            "missing boundary",
            lambda: _multipart([("image", "f.png", PNG)], ctype="multipart/form-data"),
        ),
        (
            "70 kB text field",
            lambda: _multipart([("image", "f.png", PNG), ("mask", None, b"a" * 70_000)]),
        ),
        (
            "non-ASCII boundary, header (latin-1) and body (UTF-8) disagree",
            lambda: _multipart(
                [("image", "f.png", PNG)],
                boundary="b\u00e9",
                ctype="multipart/form-data; boundary=b\u00e9",
            ),
        ),
        (
            "part without a name",
            lambda: (
                b"--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n",
                [("Content-Type", "multipart/form-data; boundary=b")],
            ),
        ),
    ],
)
def test_malformed_multipart_is_a_400(what, build):
    body, headers = build()
    with pytest.raises(MalformedRequestError) as info:
        _parse(body, headers)
    assert http_status(info.value) == 400, what
    assert error_body(info.value)["error"] == "malformed_request"


def test_well_formed_multipart_gives_the_files():
    body, headers = _multipart([("image", "i.png", PNG), ("mask", "m.png", b"mask")])
    upload = _parse(body, headers)
    assert upload.image == PNG and upload.mask == b"mask" and upload.background is None


# --- query parameters ------------------------------------------------------------------------


def test_repeated_single_valued_parameter_is_refused_by_name():
    check = queries.single_valued(queries.SwapQuery)
    with pytest.raises(InvalidParameterError, match="'n' is given 2 times"):
        check(_request([], query=b"n=1&n=2"))
    with pytest.raises(InvalidParameterError, match="'seed'"):
        check(_request([], query=b"label=1&seed=3&seed=3"))
    check(_request([], query=b"label=0&label=1&group=2&group=3&n=2"))  # lists may repeat
    assert http_status(InvalidParameterError("x")) == 422


def test_labels_beyond_int64_are_refused_before_the_model():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        queries.SwapQuery(label=[2**63])
    with pytest.raises(ValidationError):
        queries.SwapQuery(group=[-(2**63) - 1])
    assert queries.SwapQuery(label=[2**63 - 1]).label == [2**63 - 1]
    with pytest.raises(AbsRayError):  # and the model's own check, for callers without HTTP
        SwapOptions(labels=(2**64,))


# --- fuzz: no request bytes make parsing fail with anything but a request error -------------

_TOKENS = st.sampled_from(
    [
        "n",
        "seed",
        "label",
        "group",
        "scale_min",
        "format",
        "degrees",
        "x",
        "",
        "%00",
        "%ff",
        "\u00e9",
        "1",
        "-1",
        str(2**64),
        "1e999",
        "nan",
        "png",
        "json",
        "&",
        "=",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.lists(st.tuples(_TOKENS, _TOKENS), max_size=6))
def test_fuzz_query_strings_give_a_query_or_a_4xx(pairs):
    from pydantic import ValidationError

    query = "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8")
    request = _request([], query=query)
    try:
        queries.single_valued(queries.SwapQuery)(request)
        params = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        values = {k: v if k in ("label", "group") else v[-1] for k, v in params.items()}
        query_model = queries.SwapQuery.model_validate(values)
        from abs_ray.serve.config import ServiceConfig

        query_model.options(ServiceConfig(), seed=1)
    except (RequestError, ValidationError):
        pass  # a 4xx: FastAPI answers a ValidationError with 422


_PART_NAMES = st.sampled_from(["image", "background", "mask", "x", "", 'a"b', "\u00e9"])


@st.composite
def _multipart_bodies(draw):
    boundary = draw(st.sampled_from(["b", "xYz-123", "\u00e9\u00e9", "", " ", "a" * 80]))
    ctype = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "multipart/form-data; charset=utf-8",
            ]
        )
    )
    body = b""
    for _ in range(draw(st.integers(0, 5))):
        name = draw(_PART_NAMES)
        filename = draw(st.one_of(st.none(), st.sampled_from(["f.png", "", "\u00e9.png"])))
        disposition = draw(
            st.sampled_from(
                [f'form-data; name="{name}"', "form-data", "attachment", f"form-data; name={name}"]
            )
        )
        if filename is not None:
            disposition += f'; filename="{filename}"'
        data = draw(st.one_of(st.binary(max_size=64), st.just(b"z" * 70_000)))
        head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
        if draw(st.booleans()):
            head += "Content-Type: image/png\r\n"
        body += head.encode("utf-8") + b"\r\n" + data + b"\r\n"
    if draw(st.booleans()):
        body += f"--{boundary}--\r\n".encode()
    body += draw(st.binary(max_size=16))
    return body, [("Content-Type", ctype)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=_multipart_bodies())
def test_fuzz_multipart_bodies_give_an_upload_or_a_4xx(case):
    body, headers = case
    try:
        upload = _parse(body, headers)
    except RequestError as exc:
        assert 400 <= http_status(exc) < 500
    else:
        assert isinstance(upload.image, bytes)


# --- docs -----------------------------------------------------------------------------------


def test_docs_page_references_nothing_outside_the_service():
    page = docs.docs_page("abs-ray swap service").body.decode()
    assert "swagger-ui-bundle.js" in page and "swagger-ui.css" in page
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", page)
    assert urls, page
    assert all(u.startswith("/") for u in urls), urls
    assert not re.search(r"https?://", page), "an absolute URL on the docs page"
    assert '"validatorUrl": null' in page  # no call to validator.swagger.io


def test_docs_assets_come_from_the_installed_package():
    for name, media in docs.DOCS_ASSETS.items():
        response = docs.docs_asset(name)
        assert response.status_code == 200 and response.media_type == media
    assert docs.docs_asset("../../etc/passwd").status_code == 404
    assert docs.docs_asset("index.html").status_code == 404  # only what the page loads
