"""Typed request errors of abs-ray's HTTP apps and their status codes.

Shared by the swap service (:mod:`abs_ray.serve`) and the labelling app
(:mod:`abs_ray.label`, whose own errors extend :class:`RequestError`). Every error an app
answers with is an :class:`~abs_ray.errors.AbsRayError`; :func:`http_status` maps it to a
4xx code and :func:`error_body` to the JSON body, so an app needs one exception handler
(:mod:`abs_ray.web.handlers`).

- 400 :class:`MalformedRequestError`: a body that cannot be parsed (multipart syntax, a
  missing or non-ASCII boundary, a part over the size limit);
- 408 :class:`RequestTimeoutError`: the body did not arrive within ``body_timeout_s``;
- 413 :class:`PayloadTooLargeError`: the body is over ``max_body_bytes``;
- 415 :class:`UnsupportedMediaTypeError` (JSON or text where an image belongs),
  :class:`~abs_ray.errors.EmptyImageError`, :class:`~abs_ray.errors.NotAnImageError`;
- 422 :class:`InvalidRequestError`, the other image decoding errors, a
  :class:`~abs_ray.errors.ConfigError` raised while validating the request's values, an
  :class:`~abs_ray.models.inpainters.InpaintingError`: over the pixel limit, a corrupt or
  truncated image, ``n`` too large, a bad parameter, an empty bank selection.

- 503 :class:`ServiceUnavailableError`: the model cannot answer now (its replica died and
  the retries ran out, or the readiness check failed); not the caller's fault, worth a retry.

Anything else (storage, missing assets, bugs) is a server fault: 500, logged, with a generic
detail.

Example:
    >>> http_status(PayloadTooLargeError("body is 11 MB, limit 10 MB"))
    413
    >>> from abs_ray.errors import NotAnImageError, ImageTooLargeError
    >>> http_status(NotAnImageError("x")), http_status(ImageTooLargeError("y"))
    (415, 422)
    >>> http_status(RequestTimeoutError("no body within 10 s")), http_status(RuntimeError("bug"))
    (408, 500)
    >>> error_body(InvalidRequestError("n must be <= 16, got 17"))
    {'status': 422, 'error': 'invalid_request', 'type': 'InvalidRequestError', 'detail': 'n must be <= 16, got 17'}
"""

from __future__ import annotations

import sys
from typing import Any

from abs_ray.errors import (
    AbsRayError,
    ConfigError,
    EmptyImageError,
    ImageDecodeError,
    NotAnImageError,
)

__all__ = [
    "BankSelectionError",
    "InvalidParameterError",
    "InvalidRequestError",
    "MalformedRequestError",
    "PayloadTooLargeError",
    "RequestError",
    "RequestTimeoutError",
    "ServiceUnavailableError",
    "UnsupportedMediaTypeError",
    "error_body",
    "http_status",
]


class RequestError(AbsRayError, ValueError):
    """Base of the errors a request can cause; ``status`` is its HTTP code."""

    status = 422
    code = "invalid_request"


class MalformedRequestError(RequestError):
    """The request cannot be parsed: a malformed multipart body, a bad boundary, a part over
    the size limit."""

    status = 400
    code = "malformed_request"


class RequestTimeoutError(RequestError):
    """The request body did not arrive within the deadline (a slow or stalled client)."""

    status = 408
    code = "request_timeout"


class PayloadTooLargeError(RequestError):
    """The request body is larger than the configured limit."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaTypeError(RequestError):
    """The body is of a media type the endpoint does not take (e.g. JSON for an image)."""

    status = 415
    code = "unsupported_media_type"


class InvalidRequestError(RequestError):
    """A parameter or upload is out of range, missing or inconsistent."""

    status = 422
    code = "invalid_request"


class InvalidParameterError(InvalidRequestError):
    """A query parameter is refused (e.g. a single-valued one given twice); the message names it."""

    code = "invalid_parameter"


class BankSelectionError(InvalidRequestError):
    """The label/group filter leaves no background in the bank."""

    code = "empty_bank_selection"


class ServiceUnavailableError(AbsRayError, RuntimeError):
    """The model cannot answer now (no live replica, or the readiness job failed): 503.

    Not caused by the request: the same request may succeed later.
    """

    status = 503
    code = "unavailable"


def http_status(exc: BaseException) -> int:
    """The HTTP status code for an exception (500 for server faults)."""
    if isinstance(exc, RequestError | ServiceUnavailableError):
        return exc.status
    if isinstance(exc, EmptyImageError | NotAnImageError):
        return 415
    if isinstance(exc, ImageDecodeError | ConfigError):
        return 422
    # Checked without importing torch: an InpaintingError exists only once its module is loaded.
    inpainters = sys.modules.get("abs_ray.models.inpainters")
    if inpainters is not None and isinstance(exc, inpainters.InpaintingError):
        return 422
    return 500


def error_body(exc: BaseException) -> dict[str, Any]:
    """The JSON error body: ``status``, a stable ``error`` code, the ``type`` and ``detail``.

    Server faults (500) get a generic detail so internals never leak to the caller.
    """
    status = http_status(exc)
    if status == 500:
        return {
            "status": 500,
            "error": "internal_error",
            "type": "InternalError",
            "detail": "internal error; see the service log",
        }
    if isinstance(exc, RequestError | ServiceUnavailableError):
        code = exc.code
    elif isinstance(exc, ImageDecodeError):
        code = exc.reason
    else:
        code = "invalid_request"
    return {"status": status, "error": code, "type": type(exc).__name__, "detail": str(exc)}
