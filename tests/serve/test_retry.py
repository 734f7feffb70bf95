"""Retries of model calls: only for a lost replica, bounded, then a 503 (no Ray cluster)."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

from abs_ray.serve.retry import call_with_retries, replica_gone
from abs_ray.web.errors import InvalidRequestError, ServiceUnavailableError, http_status


class _Calls:
    """A call that raises the given errors in turn, then answers."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.count = 0

    async def __call__(self) -> str:
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "answer"


def _run(call, retries=2):
    return asyncio.run(call_with_retries(call, retries=retries, backoff_s=0.001))


def test_lost_replicas_are_retried_until_an_answer():
    call = _Calls(ActorDiedError(), ActorUnavailableError("unreachable", None))
    assert _run(call) == "answer" and call.count == 3


def test_retries_are_bounded_and_end_in_a_503_with_the_cause():
    call = _Calls(*[ActorDiedError() for _ in range(5)])
    with pytest.raises(ServiceUnavailableError, match="lost 3 time") as info:
        _run(call, retries=2)
    assert call.count == 3
    assert isinstance(info.value.__cause__, ActorDiedError)
    assert http_status(info.value) == 503


@pytest.mark.parametrize(
    "error",
    [
        InvalidRequestError("n must be <= 16"),  # the request's fault
        RayTaskError("process", "traceback", ValueError("bug")),  # raised by the model's code
        RuntimeError("anything else"),
    ],
)
def test_other_errors_are_raised_at_once(error):
    call = _Calls(error)
    with pytest.raises(type(error)):
        _run(call)
    assert call.count == 1
    assert not replica_gone(error)


def test_a_model_error_that_also_derives_from_an_actor_error_is_not_retried():
    """Ray makes a task error an instance of its cause's class too: still the model's error."""
    wrapped = RayTaskError("process", "traceback", ActorDiedError()).as_instanceof_cause()
    assert isinstance(wrapped, ActorDiedError)
    assert not replica_gone(wrapped)
