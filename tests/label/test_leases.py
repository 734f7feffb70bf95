"""Leases and skips: who may be handed which image, without HTTP."""

from __future__ import annotations

import threading
import time

import pytest

from abs_ray.label.leases import LeaseBook, check_client
from abs_ray.web.errors import InvalidRequestError


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_lease_keeps_an_image_from_others_until_it_runs_out():
    clock = Clock()
    book = LeaseBook(lease_seconds=10.0, clock=clock)
    assert book.claim("alice", ["a", "b"]) == "a" and book.holder("a") == "alice"
    clock.now = 9.9
    assert book.claim("bob", ["a"]) is None  # alice still holds it
    assert book.holder("a") == "alice"
    clock.now = 10.0
    assert book.holder("a") is None
    assert book.claim("bob", ["a"]) == "a" and book.holder("a") == "bob"


def test_asking_again_ends_your_own_lease_and_skips_are_per_client():
    book = LeaseBook(lease_seconds=600.0)
    assert book.claim("alice", ["a", "b", "c"]) == "a"
    # alice moves on: her lease on "a" ends, and she skips it, so she gets "b"
    assert book.claim("alice", ["a", "b", "c"], skip="a") == "b"
    assert book.holder("a") is None and book.holder("b") == "alice"
    assert book.claim("bob", ["a", "b", "c"]) == "a"  # skipped by alice only
    assert book.claim("alice", ["a", "c"]) == "c"  # "a" held by bob; "b" released by asking
    assert book.claim("alice", ["a"]) is None  # skipped for good, and held


def test_release_frees_a_saved_image_and_choose_sees_only_free_ones():
    book = LeaseBook(lease_seconds=600.0)
    book.claim("alice", ["a", "b", "c"])
    seen = []

    def last(free):
        seen.append(list(free))
        return free[-1] if free else None

    assert book.claim("bob", ["a", "b", "c"], choose=last) == "c"
    book.release("a")
    book.release("a")  # twice: nothing to do
    assert book.claim("carol", ["a", "b", "c"], choose=last) == "b"
    assert seen == [["b", "c"], ["a", "b"]]


def test_concurrent_claims_never_share_an_image():
    book = LeaseBook(lease_seconds=600.0)
    candidates = [f"img{i:02d}" for i in range(16)]
    start = threading.Barrier(16)
    got: dict[str, str | None] = {}

    def slow_first(free):  # widens the window a missing lock would leave open
        time.sleep(0.002)
        return free[0] if free else None

    def ask(client: str) -> None:
        start.wait()
        got[client] = book.claim(client, candidates, slow_first)

    threads = [threading.Thread(target=ask, args=(f"c{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got.values()) == candidates  # every image handed out exactly once
    assert book.claim("late", candidates) is None


@pytest.mark.parametrize("client", ["", "a b", "x" * 65, None, "é"])
def test_bad_client_ids_are_refused(client):
    with pytest.raises(InvalidRequestError, match="client must be 1-64 characters"):
        check_client(client)
