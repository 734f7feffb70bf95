"""The HTTP edge of the swap service: body limits, upload parsing, decoding, errors.

Everything the ingress deployment does besides forwarding to the model lives in
``abs_ray.serve`` modules testable without Ray; this one reads and decodes requests:

- :func:`read_body` reads the request body up to ``max_body_bytes`` (Serve sets no limit):
  a larger ``Content-Length`` is refused before anything is read, a chunked body as soon as
  it passes the limit (413); the whole body must arrive within ``body_timeout_s`` (408), so
  a slow or stalled client holds an ingress slot for a bounded time;
- :func:`parse_upload` takes either a raw image body (any content type but JSON, text and
  form-urlencoded: ``curl --data-binary @x.png -H 'Content-Type: image/png'``) or
  ``multipart/form-data`` with file parts ``image`` and, where the endpoint takes them,
  ``background`` and ``mask``. Parts must be *files*: a URL in a text field is refused, and
  nothing the caller names is ever fetched (no server-side request forgery); a body the
  multipart parser cannot read is a 400, whatever the parser raised;
- :func:`decode_upload` decodes with the pixel limit and typed errors;
- :func:`create_api` builds the FastAPI app with the JSON error handlers of
  :mod:`abs_ray.web.handlers` (shared with the labelling app).

Elsewhere: query parameters in :mod:`abs_ray.serve.query`, result encoding in
:mod:`abs_ray.serve.responses`, the offline API docs in :mod:`abs_ray.serve.docs`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from abs_ray import __version__
from abs_ray.errors import AbsRayError
from abs_ray.io import decode_image
from abs_ray.serve.config import ServiceConfig
from abs_ray.serve.jobs import Job, SwapOptions
from abs_ray.web.errors import (
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
    RequestTimeoutError,
    UnsupportedMediaTypeError,
)
from abs_ray.web.handlers import error_handler, http_exception_response

__all__ = [
    "ERROR_RESPONSES",
    "INPAINT_PARTS",
    "MASK_PARTS",
    "SWAP_PARTS",
    "Upload",
    "body_deadline",
    "create_api",
    "decode_upload",
    "new_seed",
    "openapi_body",
    "parse_upload",
    "read_body",
    "ready_job",
]

logger = logging.getLogger(__name__)

SWAP_PARTS = ("image", "background", "mask")
MASK_PARTS = ("image",)
INPAINT_PARTS = ("image", "mask")
_REFUSED_TYPES = ("application/json", "application/x-www-form-urlencoded")
_PART_DOCS = {
    "image": "the image (PNG, JPEG, WebP, BMP, GIF, TIFF)",
    "background": "a background to paste on instead of the bank's (resized to the image)",
    "mask": "the foreground mask instead of the detector's: same size as the image, "
    "white = object (or an alpha channel)",
}


# --- request body ---------------------------------------------------------------------------


async def read_body(request: Request, max_bytes: int, timeout_s: float | None = None) -> bytes:
    """The request body, refusing more than ``max_bytes`` or a body slower than ``timeout_s``.

    The deadline is for the whole body (not between chunks): a client trickling a byte a
    second would otherwise hold the request, and its ingress slot, for as long as it likes.

    Raises:
        PayloadTooLargeError: ``Content-Length`` or the bytes received exceed the limit.
        InvalidRequestError: a malformed ``Content-Length``.
        RequestTimeoutError: the body did not arrive within ``timeout_s``.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InvalidRequestError(f"malformed Content-Length {declared!r}") from None
        if size > max_bytes:
            raise PayloadTooLargeError(
                f"request body is {size} bytes, over the limit of {max_bytes} bytes"
            )
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_bytes:
                    raise PayloadTooLargeError(
                        f"request body is over the limit of {max_bytes} bytes (stopped reading)"
                    )
    except TimeoutError:
        expected = f" of {declared}" if declared is not None else ""
        raise RequestTimeoutError(
            f"request body not received within {timeout_s:g} s ({len(body)}{expected} bytes "
            "arrived)"
        ) from None
    return bytes(body)


def body_deadline(timeout_s: float, spread: float = 0.2) -> float:
    """This request's body deadline: ``timeout_s`` less a random share of up to ``spread``.

    Slow clients that connected together would otherwise all be cut in the same instant
    and, if they come back at once, be cut together again: a burst of hundreds of
    responses and new requests every ``timeout_s`` that stalls normal requests for a
    moment. Spread over ``[(1 - spread) * timeout_s, timeout_s]`` the bursts dissolve.

    >>> all(8.0 <= body_deadline(10.0) <= 10.0 for _ in range(100))
    True
    """
    return timeout_s * (1.0 - spread * secrets.SystemRandom().random())


@dataclasses.dataclass(frozen=True)
class Upload:
    """The encoded files of a request: ``image`` and optional ``background``/``mask``."""

    image: bytes
    background: bytes | None = None
    mask: bytes | None = None


async def parse_upload(
    request: Request, body: bytes, parts: tuple[str, ...] = SWAP_PARTS
) -> Upload:
    """Split a request body into its files.

    Args:
        request: the request (for its headers and scope).
        body: the body, already read with :func:`read_body`.
        parts: file parts this endpoint accepts (``image`` is required).

    Raises:
        UnsupportedMediaTypeError: a JSON, text or form-urlencoded body.
        MalformedRequestError: a multipart body the parser cannot read (bad syntax, a missing
            or non-ASCII boundary, too many parts, a text part over 64 kB).
        InvalidRequestError: a missing ``image`` part, an unknown or repeated part, or a part
            that is text instead of a file (e.g. a URL).
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        if ctype in _REFUSED_TYPES or ctype.startswith("text/"):
            raise UnsupportedMediaTypeError(
                f"a {ctype} body is not an image: send the image bytes as the body "
                "(Content-Type image/* or application/octet-stream) or multipart/form-data "
                f"with file parts {list(parts)}; URLs are never fetched"
            )
        return Upload(image=body)

    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    # Without "app" in the scope, Starlette raises the parser's MultiPartException itself
    # instead of an HTTPException(400) that would bypass the JSON error body.
    scope = {k: v for k, v in request.scope.items() if k != "app"}
    form_request = Request(scope, replay)
    try:
        form = await form_request.form(
            max_files=len(parts), max_fields=len(parts), max_part_size=64 * 1024
        )
    except MultiPartException as exc:
        raise MalformedRequestError(f"malformed multipart body: {exc.message}") from exc
    except StarletteHTTPException as exc:
        raise MalformedRequestError(f"malformed multipart body: {exc.detail}") from exc
    except Exception as exc:
        # The parser reads nothing but this request's bytes: whatever it raises on them
        # (UnicodeError on a non-ASCII boundary, ValueError, ...) is the request's fault.
        raise MalformedRequestError(
            f"malformed multipart body ({type(exc).__name__}: {exc})"
        ) from exc
    files: dict[str, bytes] = {}
    try:
        for key, value in form.multi_items():
            if key not in parts:
                raise InvalidRequestError(
                    f"unknown form part {key!r}; this endpoint accepts file parts {list(parts)}"
                )
            if key in files:
                raise InvalidRequestError(f"form part {key!r} is given more than once")
            if not isinstance(value, UploadFile):
                raise InvalidRequestError(
                    f"form part {key!r} must be a file upload, got a text field; the service "
                    "never fetches URLs or buckets named in a request"
                )
            files[key] = await value.read()
    finally:
        await form.close()
    if "image" not in files:
        raise InvalidRequestError(f"multipart body needs an 'image' file part, got {sorted(files)}")
    return Upload(image=files["image"], background=files.get("background"), mask=files.get("mask"))


def _decode_mask(data: bytes, max_pixels: int) -> np.ndarray:
    """A mask upload -> ``(H, W)`` uint8: its alpha channel if it has one, else its gray level."""
    rgba = decode_image(data, max_pixels=max_pixels, alpha=True)
    alpha = rgba[..., 3]
    if (alpha != 255).any():
        return np.ascontiguousarray(alpha)
    return np.rint(rgba[..., :3].mean(axis=2)).astype(np.uint8)


def decode_upload(
    upload: Upload, kind: str, cfg: ServiceConfig, options: SwapOptions | None = None
) -> Job:
    """Decode an upload into a :class:`~abs_ray.serve.jobs.Job`, with every limit checked.

    Raises:
        EmptyImageError, NotAnImageError: (415) not an image.
        ImageTooLargeError: (422) over ``max_pixels``.
        TruncatedImageError, CorruptImageError: (422) damaged image.
        InvalidRequestError: (422) a mask of another size, or ``n * pixels`` over
            ``max_work_pixels``.
    """
    image = decode_image(upload.image, max_pixels=cfg.max_pixels)
    height, width = image.shape[:2]
    mask = None if upload.mask is None else _decode_mask(upload.mask, cfg.max_pixels)
    if mask is not None and mask.shape != (height, width):
        raise InvalidRequestError(
            f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {width}x{height}: they "
            "must be the same size"
        )
    background = None
    if upload.background is not None:
        background = decode_image(upload.background, max_pixels=cfg.max_pixels)
    if options is not None and options.n * height * width > cfg.max_work_pixels:
        raise InvalidRequestError(
            f"n * width * height = {options.n} * {width} * {height} = "
            f"{options.n * width * height} is over the limit of {cfg.max_work_pixels} pixels "
            "per request; ask for fewer variants or a smaller image"
        )
    return Job(kind, image, mask=mask, background=background, swap=options)


def ready_job(side: int = 16) -> Job:
    """The readiness check's job: the mask of a ``side x side`` black image (a real model call).

    >>> job = ready_job()
    >>> job.kind, job.image.shape
    ('mask', (16, 16, 3))
    """
    return Job("mask", np.zeros((side, side, 3), dtype=np.uint8))


def new_seed() -> int:
    """A random seed in ``[0, 2**63)`` (reported back so the result can be replayed)."""
    return secrets.randbelow(2**63)


# --- errors ---------------------------------------------------------------------------------


def _validation_response(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "body"))
        msg = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            msg = "unknown parameter (the service never fetches URLs or buckets named in a request)"
        errors.append({"loc": loc, "msg": msg, "type": str(err.get("type", ""))})
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors) or "invalid request"
    body = {
        "status": 422,
        "error": "invalid_parameter",
        "type": "RequestValidationError",
        "detail": detail,
        "errors": errors,
    }
    return JSONResponse(body, status_code=422)


def openapi_body(parts: tuple[str, ...]) -> dict[str, Any]:
    """``openapi_extra`` describing a raw image body or a multipart upload with ``parts``."""
    binary = {"type": "string", "format": "binary"}
    properties = {p: {**binary, "description": _PART_DOCS[p]} for p in parts}
    return {
        "requestBody": {
            "required": True,
            "description": "the image as the raw body, or multipart/form-data with file parts "
            f"{', '.join(parts)}; URLs are never fetched",
            "content": {
                "image/png": {"schema": binary},
                "image/jpeg": {"schema": binary},
                "application/octet-stream": {"schema": binary},
                "multipart/form-data": {
                    "schema": {"type": "object", "required": ["image"], "properties": properties}
                },
            },
        }
    }


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "malformed multipart body"},
    408: {"description": "body not received within body_timeout_s"},
    413: {"description": "body over max_body_bytes"},
    415: {"description": "not an image, or a JSON/text body"},
    422: {
        "description": "over the pixel limit, damaged image, bad or repeated parameter, n too large"
    },
    503: {"description": "the model cannot answer now (retry later)"},
}


def create_api() -> FastAPI:
    """The FastAPI app of the ingress, with JSON error handlers (routes are added by it).

    FastAPI's own ``/docs``, ``/redoc`` and ``/openapi.json`` are off: the ingress serves
    ``/docs`` offline and ``/openapi.json`` itself, both behind the ``docs`` setting.
    """
    api = FastAPI(
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        title="abs-ray swap service",
        version=__version__,
        description=(
            "AutoBackSwap on demand: paste an image's foreground on other backgrounds "
            "(POST /v1/swap), get its mask (POST /v1/mask) or its completed background "
            "(POST /v1/inpaint). Images go in the body (raw or multipart); parameters in "
            "the query string. Errors are JSON: {status, error, type, detail}."
        ),
    )
    api.add_exception_handler(RequestValidationError, _validation_response)
    api.add_exception_handler(StarletteHTTPException, http_exception_response)
    # Typed errors raised outside a route's own try (dependencies such as single_valued).
    api.add_exception_handler(AbsRayError, error_handler)
    return api
