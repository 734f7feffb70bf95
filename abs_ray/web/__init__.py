"""What every HTTP app of abs-ray shares: typed request errors and their JSON answers.

- :mod:`~abs_ray.web.errors`: the request errors, their status codes and JSON bodies (no
  web framework imported);
- :mod:`~abs_ray.web.handlers`: FastAPI/Starlette responses and exception handlers built on
  them.

The swap service (:mod:`abs_ray.serve`) and the labelling app (:mod:`abs_ray.label`) both sit
above this layer, so a client sees one error format ``{status, error, type, detail}`` from
either.
"""

from abs_ray.web.errors import (
    BankSelectionError,
    InvalidParameterError,
    InvalidRequestError,
    MalformedRequestError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    error_body,
    http_status,
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
