"""The swap service behind ``deployments/augment.py``: AutoBackSwap augmentation over HTTP.

- :mod:`~abs_ray.serve.config`: :class:`ServiceConfig` and the strict Serve-config check
- :mod:`~abs_ray.serve.bank`: the background bank (pipeline output or built-in demo)
- :mod:`~abs_ray.serve.saliency`: the zero-shot mask source used without a detector
- :mod:`~abs_ray.serve.service`: :class:`SwapService`, the batched core (no Ray)
- :mod:`~abs_ray.serve.http`: body limits, upload parsing, encoding, JSON errors (FastAPI)
- :mod:`~abs_ray.serve.errors`: typed request errors and their status codes

Only the config and errors are imported here; the rest pulls in torch or FastAPI.
"""

from abs_ray.serve.config import ServiceConfig, check_serve_config
from abs_ray.serve.errors import (
    BankSelectionError,
    InvalidRequestError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
    http_status,
)

__all__ = [
    "BankSelectionError",
    "InvalidRequestError",
    "PayloadTooLargeError",
    "RequestError",
    "ServiceConfig",
    "UnsupportedMediaTypeError",
    "check_serve_config",
    "http_status",
]
