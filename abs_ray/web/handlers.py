"""JSON error responses and exception handlers shared by abs-ray's FastAPI apps.

:func:`error_response` answers any exception with the status of
:func:`abs_ray.web.errors.http_status` and the body of :func:`~abs_ray.web.errors.error_body`
(5xx logged with their traceback, 4xx at INFO); :func:`http_exception_response` gives
Starlette's own HTTP errors (404 of an unknown route, 405) the same JSON shape;
:func:`error_handler` is :func:`error_response` as an exception handler.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from abs_ray.web.errors import error_body, http_status

__all__ = ["error_handler", "error_response", "http_exception_response", "unwrap_error"]

logger = logging.getLogger(__name__)


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


async def error_handler(request: Request, exc: Exception) -> JSONResponse:
    """:func:`error_response` as a FastAPI exception handler."""
    return error_response(exc)


def http_exception_response(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's HTTP errors (unknown route, wrong method) in the same JSON shape."""
    body = {
        "status": exc.status_code,
        "error": "http_error",
        "type": "HTTPException",
        "detail": str(exc.detail),
    }
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))
