"""The HTTP edge of the swap service: body limits, upload parsing, decoding, encoding, errors.

Everything the ingress deployment does besides forwarding to the model lives here, so it is
testable without Ray:

- :func:`read_body` reads the request body up to ``max_body_bytes`` (Serve sets no limit):
  a larger ``Content-Length`` is refused before anything is read, a chunked body as soon as
  it passes the limit (413);
- :func:`parse_upload` takes either a raw image body (any content type but JSON, text and
  form-urlencoded: ``curl --data-binary @x.png -H 'Content-Type: image/png'``) or
  ``multipart/form-data`` with file parts ``image`` and, where the endpoint takes them,
  ``background`` and ``mask``. Parts must be *files*: a URL in a text field is refused, and
  nothing the caller names is ever fetched (no server-side request forgery);
- :func:`decode_upload` decodes with the pixel limit and typed errors;
- query parameters are pydantic models that forbid unknown keys (:class:`SwapQuery`,
  :class:`MaskQuery`, :class:`InpaintQuery`);
- :func:`error_response` turns any exception into a JSON body with the status from
  :func:`abs_ray.serve.errors.http_status`;
- :func:`create_api` builds the FastAPI app with those handlers (OpenAPI at ``/docs``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import secrets
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException

from abs_ray import __version__
from abs_ray.io import decode_image, encode_png
from abs_ray.serve.config import ServiceConfig
from abs_ray.serve.errors import (
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    error_body,
    http_status,
)
from abs_ray.serve.service import InpaintResult, Job, MaskResult, SwapOptions, SwapResult

__all__ = [
    "INPAINT_PARTS",
    "MASK_PARTS",
    "SWAP_PARTS",
    "InpaintQuery",
    "MaskQuery",
    "SwapQuery",
    "Upload",
    "create_api",
    "decode_upload",
    "error_response",
    "inpaint_response",
    "mask_response",
    "openapi_body",
    "parse_upload",
    "read_body",
    "swap_response",
    "unwrap_error",
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


# --- query parameters -----------------------------------------------------------------------


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SwapQuery(_Query):
    """Query parameters of ``POST /v1/swap``; unset ranges take the service defaults."""

    n: int = Field(1, ge=1, description="number of variants (at most the service's max_variants)")
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**63,
        description="seed of the draw; the response reports the one used (random if unset)",
    )
    scale_min: float | None = Field(None, gt=0, le=100, description="lowest foreground scale")
    scale_max: float | None = Field(None, gt=0, le=100, description="highest foreground scale")
    degrees: float | None = Field(None, ge=0, le=180, description="rotation range +-degrees")
    translate: float | None = Field(
        None, ge=0, le=1, description="shift range per axis, fraction of the shorter side"
    )
    keep_in_frame: bool = Field(True, description="keep the moved foreground in the image")
    class_uniform: bool = Field(True, description="draw the background's class uniformly first")
    label: list[int] = Field(default_factory=list, description="only backgrounds of these classes")
    group: list[int] = Field(default_factory=list, description="only backgrounds of these groups")
    feather: float | None = Field(None, ge=0, le=64, description="inward feathering sigma (px)")
    format: Literal["auto", "png", "json"] = Field(
        "auto", description="auto: PNG for n = 1, else JSON with base64 PNGs"
    )

    @model_validator(mode="after")
    def _scale_order(self) -> SwapQuery:
        low, high = self.scale_min, self.scale_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"scale_min {low} must be <= scale_max {high}")
        if self.format == "png" and self.n > 1:
            raise ValueError(f"format=png returns one image; use format=json for n={self.n}")
        return self

    def options(self, cfg: ServiceConfig, seed: int) -> SwapOptions:
        """:class:`SwapOptions` with the service defaults filled in.

        Raises:
            InvalidRequestError: ``n`` over the limit, or ranges that do not fit together.
        """
        if self.n > cfg.max_variants:
            raise InvalidRequestError(f"n must be <= {cfg.max_variants}, got {self.n}")
        low = cfg.scale[0] if self.scale_min is None else self.scale_min
        high = cfg.scale[1] if self.scale_max is None else self.scale_max
        if low > high:
            raise InvalidRequestError(
                f"scale range [{low}, {high}] is empty (service default {list(cfg.scale)})"
            )
        try:
            return SwapOptions(
                n=self.n,
                seed=seed,
                scale=(low, high),
                degrees=cfg.degrees if self.degrees is None else self.degrees,
                translate=cfg.translate if self.translate is None else self.translate,
                keep_in_frame=self.keep_in_frame,
                class_uniform=self.class_uniform,
                labels=tuple(self.label),
                groups=tuple(self.group),
                feather=cfg.feather if self.feather is None else self.feather,
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc


class MaskQuery(_Query):
    """Query parameters of ``POST /v1/mask``."""

    format: Literal["json", "png"] = Field(
        "json", description="json: masks as base64 PNGs + patch grid; png: the alpha mask only"
    )


class InpaintQuery(_Query):
    """Query parameters of ``POST /v1/inpaint`` (none yet; unknown ones are refused)."""


# --- request body ---------------------------------------------------------------------------


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing more than ``max_bytes``.

    Raises:
        PayloadTooLargeError: ``Content-Length`` or the bytes received exceed the limit.
        InvalidRequestError: a malformed ``Content-Length``.
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
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise PayloadTooLargeError(
                f"request body is over the limit of {max_bytes} bytes (stopped reading)"
            )
    return bytes(body)


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
        InvalidRequestError: a malformed multipart body, a missing ``image`` part, an unknown
            or repeated part, or a part that is text instead of a file (e.g. a URL).
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

    form_request = Request(request.scope, replay)
    try:
        form = await form_request.form(
            max_files=len(parts), max_fields=len(parts), max_part_size=64 * 1024
        )
    except MultiPartException as exc:
        raise InvalidRequestError(f"malformed multipart body: {exc.message}") from exc
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
    """Decode an upload into a :class:`~abs_ray.serve.service.Job`, with every limit checked.

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


def new_seed() -> int:
    """A random seed in ``[0, 2**63)`` (reported back so the result can be replayed)."""
    return secrets.randbelow(2**63)


# --- responses ------------------------------------------------------------------------------


def _b64_png(array: np.ndarray) -> str:
    return base64.b64encode(encode_png(array)).decode("ascii")


def swap_response(result: SwapResult, fmt: str) -> Response:
    """PNG (one variant, ``format`` auto/png) or JSON with base64 PNGs and params of each.

    Raises:
        InvalidRequestError: ``format=png`` with more than one variant.
    """
    as_png = fmt == "png" or (fmt == "auto" and len(result.images) == 1)
    if as_png and len(result.images) != 1:
        raise InvalidRequestError(f"format=png returns one image; n={len(result.images)}")
    headers = {
        "X-Seed": str(result.seed),
        "X-Mask-Source": result.mask_source,
        "X-Foreground-Fraction": f"{result.foreground_fraction:.6f}",
    }
    if result.bank_fingerprint:
        headers["X-Bank-Fingerprint"] = result.bank_fingerprint
    if as_png:
        headers["X-Swap-Params"] = json.dumps(result.params[0], separators=(",", ":"))
        return Response(encode_png(result.images[0]), media_type="image/png", headers=headers)
    height, width = result.images[0].shape[:2]
    body = {
        "seed": result.seed,
        "n": len(result.images),
        "width": width,
        "height": height,
        "mask_source": result.mask_source,
        "foreground_fraction": result.foreground_fraction,
        "bank_fingerprint": result.bank_fingerprint,
        "variants": [
            {"png": _b64_png(image), "params": params}
            for image, params in zip(result.images, result.params, strict=True)
        ],
    }
    return JSONResponse(body, headers=headers)


def mask_response(result: MaskResult, fmt: str) -> Response:
    """The alpha PNG, or JSON with alpha and loose PNGs (base64) and the patch grid.

    The grid is ``patch_prob`` (``G x G`` ``P(background)``) and ``foreground_patches``: a
    string of ``G²`` characters ``0``/``1`` in row-major order, 1 = foreground (``p <
    tight``), the ``mask`` format of the paper's ``info,mask`` label CSV.
    """
    grid = None if result.prob is None else result.prob
    patches = None
    if grid is not None:
        patches = "".join("1" if p < result.tight_threshold else "0" for p in grid.flatten())
    headers = {"X-Mask-Source": result.mask_source}
    if fmt == "png":
        if patches is not None:
            headers["X-Patch-Grid"] = f"{grid.shape[0]}x{grid.shape[1]}:{patches}"
        return Response(encode_png(result.alpha), media_type="image/png", headers=headers)
    height, width = result.alpha.shape
    body = {
        "width": width,
        "height": height,
        "mask_source": result.mask_source,
        "tight": result.tight_threshold,
        "loose": result.loose_threshold,
        "grid": None if grid is None else int(grid.shape[0]),
        "patch_prob": None if grid is None else np.round(grid, 5).tolist(),
        "foreground_patches": patches,
        "foreground_fraction": float((result.alpha > 0).mean()),
        "alpha_png": _b64_png(result.alpha),
        "loose_png": _b64_png(result.loose),
    }
    return JSONResponse(body, headers=headers)


def inpaint_response(result: InpaintResult) -> Response:
    """The completed background as PNG (hole fraction and mask source in headers)."""
    headers = {
        "X-Mask-Source": result.mask_source,
        "X-Hole-Fraction": f"{result.hole_fraction:.6f}",
    }
    return Response(encode_png(result.background), media_type="image/png", headers=headers)


# --- errors ---------------------------------------------------------------------------------


def unwrap_error(exc: BaseException) -> BaseException:
    """The original exception of a Ray task/actor error (``RayTaskError.cause``), else ``exc``."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException) and type(exc).__module__.startswith("ray."):
        return cause
    return exc


def error_response(exc: BaseException) -> JSONResponse:
    """JSON error response for any exception; 5xx are logged with their traceback."""
    exc = unwrap_error(exc)
    status = http_status(exc)
    if status >= 500:
        logger.error("request failed: %s: %s", type(exc).__name__, exc, exc_info=exc)
    else:
        logger.info("request refused (%d): %s: %s", status, type(exc).__name__, exc)
    return JSONResponse(error_body(exc), status_code=status)


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


def _http_exception_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    body = {
        "status": exc.status_code,
        "error": "http_error",
        "type": "HTTPException",
        "detail": str(exc.detail),
    }
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


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
    413: {"description": "body over max_body_bytes"},
    415: {"description": "not an image, or a JSON/text body"},
    422: {"description": "over the pixel limit, damaged image, bad parameter, n too large"},
}


def create_api() -> FastAPI:
    """The FastAPI app of the ingress, with JSON error handlers (routes are added by it)."""
    api = FastAPI(
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
    api.add_exception_handler(StarletteHTTPException, _http_exception_response)
    return api
