"""The labelling app's HTTP side: the page and a small JSON API over a :class:`LabelSession`.

=========================================== ========================================================
``GET /``                                   the page (one self-contained HTML file, no CDN)
``GET /api/state``                          settings, counts, current model, scoring, training
``GET /api/next?client=C[&skip=ID]``        the next image to label (least confident first)
``GET /api/items/{id}``                     an image's saved label or pre-fill (``mask``)
``GET /api/image/{id}``                     the image as PNG
``PUT /api/labels/{id}``                    save ``{"mask": "0101..."}`` (``G * G`` chars, 1 = fg)
``POST /api/train``                         start retraining on the labels so far (202)
``GET /api/train``                          the retraining round's status and held-out accuracy
``GET /healthz``                            ``{"ok": true}``
=========================================== ========================================================

Errors are JSON ``{status, error, type, detail}`` (:mod:`abs_ray.web`, as the swap service's): 404 unknown image
id, 409 retraining busy or too few labels, 413 body over 64 KiB, 415 a body that is not JSON,
422 a bad mask (wrong length or characters) or parameter, 500 anything else (logged, generic
detail).
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from abs_ray import __version__
from abs_ray.errors import AbsRayError
from abs_ray.label.session import LabelSession
from abs_ray.web.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from abs_ray.web.handlers import error_handler, error_response, http_exception_response

logger = logging.getLogger(__name__)

__all__ = ["MAX_BODY_BYTES", "create_app", "page_html"]

#: Largest label request body: a 112 x 112 grid is 12.5 kB of mask characters.
MAX_BODY_BYTES = 64 * 1024
_CLIENT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
# The page may talk to this server only: no CDN, no other origin, nothing fetched elsewhere.
_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'"
)


class LabelBody(BaseModel):
    """Body of ``PUT /api/labels/{id}``."""

    model_config = ConfigDict(extra="forbid")

    mask: str
    client: str | None = None


def page_html() -> str:
    """The page, read from the package's ``static/index.html``."""
    return resources.files("abs_ray.label").joinpath("static/index.html").read_text("utf-8")


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return error_response(InvalidRequestError("; ".join(parts) or "invalid request"))


async def _read_label_body(request: Request) -> LabelBody:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"body is {length} bytes, limit {MAX_BODY_BYTES}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"body is over the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/json", ""):
        raise UnsupportedMediaTypeError(
            f'body must be JSON {{"mask": "0101..."}} (application/json), got {kind!r}'
        )
    try:
        data = json.loads(b"".join(chunks) or b"null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnsupportedMediaTypeError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError(
            f'body must be a JSON object {{"mask": "0101..."}}, got {type(data).__name__}'
        )
    try:
        return LabelBody.model_validate(data)
    except ValidationError as exc:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequestError(detail) from exc


def create_app(session: LabelSession) -> FastAPI:
    """The FastAPI app serving ``session`` (routes in the module docstring)."""
    api = FastAPI(
        title="abs-ray patch labelling",
        version=__version__,
        description="Label G x G foreground patches of a data set's images in the browser; "
        "labels go to the published info,mask CSV.",
    )
    api.add_exception_handler(RequestValidationError, _validation_error)
    api.add_exception_handler(StarletteHTTPException, http_exception_response)
    # Typed errors are answered by the exception middleware (4xx, not re-raised); anything
    # else reaches the server-error middleware, which answers 500 and logs the traceback.
    api.add_exception_handler(AbsRayError, error_handler)
    api.add_exception_handler(Exception, error_handler)
    page = page_html()

    @api.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        headers = {"Content-Security-Policy": _CSP, "Cache-Control": "no-cache"}
        return HTMLResponse(page, headers=headers)

    @api.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @api.get("/api/state")
    def state() -> dict[str, Any]:
        return session.state()

    @api.get("/api/next")
    def next_image(
        client: str = Query(..., pattern=_CLIENT_PATTERN, description="the page's random id"),
        skip: str | None = Query(None, description="an image this client skips"),
    ) -> dict[str, Any]:
        return session.next(client, skip=skip)

    @api.get("/api/items/{image_id:path}")
    def item(image_id: str) -> dict[str, Any]:
        return session.item(image_id)

    @api.get("/api/image/{image_id:path}")
    def image(image_id: str) -> Response:
        png = session.image_png(image_id)
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @api.put("/api/labels/{image_id:path}")
    async def save_label(image_id: str, request: Request) -> dict[str, Any]:
        session.check_id(image_id)
        body = await _read_label_body(request)
        return await run_in_threadpool(session.save, image_id, body.mask, body.client)

    @api.post("/api/train", status_code=202)
    def train() -> dict[str, Any]:
        return session.start_training()

    @api.get("/api/train")
    def train_status() -> dict[str, Any]:
        return session.training_status()

    return api
