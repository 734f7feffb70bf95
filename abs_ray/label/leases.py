"""Who is labelling which image: leases handed out by "next", and the images each person skipped.

An image handed out to one page is kept from the others for ``lease_seconds`` or until it is
saved (:meth:`LeaseBook.release`); asking for the next image ends the asker's own lease; an
image a person skips is not offered to that person again (for as long as the book lives).

Example:
    >>> clock = iter([0.0, 1.0, 20.0]).__next__  # seconds, one reading a claim
    >>> book = LeaseBook(lease_seconds=10.0, clock=clock)
    >>> book.claim("alice", ["a", "b"]), book.claim("bob", ["a", "b"])
    ('a', 'b')
    >>> book.claim("carol", ["a", "b"])  # both leases have run out at t = 20
    'a'
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from abs_ray.web.errors import InvalidRequestError

__all__ = ["LeaseBook", "check_client", "first"]

_CLIENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


def check_client(client: object) -> str:
    """Return ``client`` if it is a page id: 1-64 characters ``[A-Za-z0-9_-]``.

    Raises:
        InvalidRequestError: anything else.

    Example:
        >>> check_client("tab-7f3a")
        'tab-7f3a'
    """
    if (
        not isinstance(client, str)
        or not 1 <= len(client) <= 64
        or not set(client) <= _CLIENT_CHARS
    ):
        raise InvalidRequestError(
            f"client must be 1-64 characters from A-Z a-z 0-9 - _, got {client!r}"
        )
    return client


def first(free: Sequence[str]) -> str | None:
    """The default choice of :meth:`LeaseBook.claim`: the first free candidate, if any."""
    return free[0] if free else None


class LeaseBook:
    """Leases (image -> client, expiry) and skips (client -> images), under one lock.

    The lock is held for a whole :meth:`claim` (dropping run-out leases, filtering, choosing
    and leasing), so two pages asking at once never get the same image. It guards nothing
    else and no other lock is taken while it is held.

    Args:
        lease_seconds: how long a lease lasts, ``> 0``.
        clock: seconds, monotonic; read once a claim (tests pass their own).
    """

    def __init__(self, lease_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, tuple[str, float]] = {}
        self._skipped: dict[str, set[str]] = {}

    def claim(
        self,
        client: str,
        candidates: Sequence[str],
        choose: Callable[[Sequence[str]], str | None] = first,
        skip: str | None = None,
    ) -> str | None:
        """Lease one of ``candidates`` to ``client``: ``choose`` picks among the free ones.

        First ``skip`` (if given) is recorded for ``client``, and every lease that has run
        out or is held by ``client`` ends. A candidate is free when nobody holds it and
        ``client`` has not skipped it.

        Args:
            client: the page's id.
            candidates: images that may be handed out, in preference order.
            choose: picks one of the free candidates (in the given order), or None; called
                under the lock, so it must not block or take other locks.
            skip: an image ``client`` skips.

        Returns:
            The leased image, or None when ``choose`` picked none.
        """
        now = self._clock()
        with self._lock:
            if skip is not None:
                self._skipped.setdefault(client, set()).add(skip)
            for image_id, (holder, expiry) in list(self._leases.items()):
                if holder == client or expiry <= now:
                    del self._leases[image_id]
            skipped = self._skipped.get(client, set())
            free = [i for i in candidates if i not in self._leases and i not in skipped]
            pick = choose(free)
            if pick is not None:
                self._leases[pick] = (client, now + self.lease_seconds)
            return pick

    def release(self, image_id: str) -> None:
        """End the lease on ``image_id`` (it was saved); nothing when there is none."""
        with self._lock:
            self._leases.pop(image_id, None)

    def holder(self, image_id: str) -> str | None:
        """Who holds ``image_id`` now; None when nobody does or the lease has run out."""
        now = self._clock()
        with self._lock:
            holder, expiry = self._leases.get(image_id, (None, now))
            return holder if expiry > now else None
