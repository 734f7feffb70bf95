"""Typed request errors of the labelling app; each carries its HTTP status.

They extend :class:`abs_ray.web.errors.RequestError` (the HTTP error layer shared with the
swap service), so :func:`abs_ray.web.errors.http_status` and
:func:`~abs_ray.web.errors.error_body` map them like the swap service's errors. A bad label
payload (wrong length, wrong characters) is an
:class:`~abs_ray.web.errors.InvalidRequestError` (422).

Example:
    >>> from abs_ray.web.errors import http_status
    >>> http_status(UnknownImageError("x")), http_status(TrainingBusyError("y"))
    (404, 409)
"""

from __future__ import annotations

from abs_ray.web.errors import RequestError

__all__ = ["NotEnoughLabelsError", "TrainingBusyError", "UnknownImageError"]


class UnknownImageError(RequestError):
    """The image id is not one of the images being labelled."""

    status = 404
    code = "unknown_image"


class TrainingBusyError(RequestError):
    """A retraining round is already running."""

    status = 409
    code = "training_busy"


class NotEnoughLabelsError(RequestError):
    """Too few labelled images to retrain the detector."""

    status = 409
    code = "not_enough_labels"
