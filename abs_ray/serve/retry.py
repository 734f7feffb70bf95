"""Retrying a model call when the replica answering it died: the ingress's side of a kill.

Every job the model answers is a pure function of its inputs (the seed is drawn in the
ingress, before the first attempt), so a request whose model replica died mid-way can be sent
again and gives the same bytes. :func:`call_with_retries` does that, a bounded number of
times with exponential backoff, and only for errors that mean "the replica is gone"
(:func:`replica_gone`): a request error, or any error raised *by* the model's code, is never
retried (it would fail again, and a request that crashes replicas must not take several down).
When the retries run out, the caller gets a :class:`~abs_ray.web.errors.ServiceUnavailableError`
(503, worth retrying later) instead of Ray's ``ActorDiedError`` as a 500.

A retried call goes back through Serve's router, which has dropped the dead replica: with a
second replica it is answered at once; with none left it waits there until the controller's
replacement is up (bounded by the proxy's ``request_timeout_s``).

Example:
    >>> import asyncio
    >>> from ray.exceptions import ActorDiedError
    >>> calls = []
    >>> async def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise ActorDiedError()
    ...     return "answer"
    >>> asyncio.run(call_with_retries(flaky, retries=2, backoff_s=0.0))
    'answer'
    >>> len(calls)
    3
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from abs_ray.web.errors import ServiceUnavailableError

__all__ = ["call_with_retries", "replica_gone"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def replica_gone(exc: BaseException) -> bool:
    """Whether ``exc`` means the replica answering a call died or cannot be reached.

    True for Ray's actor errors (``ActorDiedError``, ``ActorUnavailableError``: the process
    was killed, crashed, ran out of memory, or its node went away) and Serve's
    ``ReplicaUnavailableError``. False for anything the model's code raised (Ray wraps
    those in ``RayTaskError``, even when it also derives from the original type) and for
    every other error.

    >>> from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError
    >>> replica_gone(ActorDiedError()), replica_gone(ActorUnavailableError("gone", None))
    (True, True)
    >>> replica_gone(ValueError("bad request")), replica_gone(RayTaskError("f", "tb", None))
    (False, False)
    """
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import ReplicaUnavailableError

    if isinstance(exc, RayTaskError):
        return False
    return isinstance(exc, RayActorError | ReplicaUnavailableError)


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    retries: int,
    backoff_s: float,
    is_retryable: Callable[[BaseException], bool] = replica_gone,
) -> T:
    """Await ``call()``; on a retryable error, wait and call again, at most ``retries`` times.

    Args:
        call: makes a *new* call each time (e.g. ``lambda: handle.process.remote(job)``).
        retries: how many times to call again after the first failure (0 = no retry).
        backoff_s: wait before the first retry; doubled each time, times a random factor in
            ``[0.5, 1.5)`` so that the requests of a dead replica do not return together.
        is_retryable: which errors to retry (default :func:`replica_gone`).

    Returns:
        What ``call()`` returned.

    Raises:
        ServiceUnavailableError: the last attempt failed with a retryable error (its cause
            is chained).
        Exception: any non-retryable error, at once and unchanged.
    """
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            if attempt >= retries:
                raise ServiceUnavailableError(
                    f"the model replica was lost {attempt + 1} time(s) while answering "
                    f"({type(exc).__name__}); retry the request"
                ) from exc
            delay = backoff_s * (2**attempt) * random.uniform(0.5, 1.5)
            attempt += 1
            logger.warning(
                "model replica lost (%s); retry %d of %d in %.2f s",
                type(exc).__name__,
                attempt,
                retries,
                delay,
            )
            await asyncio.sleep(delay)
