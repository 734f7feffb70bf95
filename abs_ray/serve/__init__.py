"""The swap service behind ``deployments/augment.py``: AutoBackSwap augmentation over HTTP.

- :mod:`~abs_ray.serve.config`: :class:`ServiceConfig` and the strict Serve-config check
- :mod:`~abs_ray.serve.bank`: the background bank (pipeline output or built-in demo)
- :mod:`~abs_ray.models.saliency` (a model): the zero-shot mask source used without a detector
- :mod:`~abs_ray.serve.jobs`: :class:`~abs_ray.serve.jobs.Job`, its options and results
- :mod:`~abs_ray.serve.mask_source`: the detector or zero-shot saliency behind the masks
- :mod:`~abs_ray.serve.service`: :class:`SwapService`, the batched core (no Ray)
- :mod:`~abs_ray.serve.http`: body limits, upload parsing, decoding, JSON errors (FastAPI)
- :mod:`~abs_ray.serve.query`: the routes' query parameters (strict pydantic models)
- :mod:`~abs_ray.serve.responses`: results as PNG or JSON
- :mod:`~abs_ray.serve.docs`: the API docs page, served offline
- :mod:`~abs_ray.web.errors`: typed request errors and their status codes (shared with
  :mod:`abs_ray.label`)

Only the config and errors are imported here; the rest pulls in torch or FastAPI.
"""

from abs_ray.serve.config import ServiceConfig, check_serve_config
from abs_ray.web.errors import (
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
