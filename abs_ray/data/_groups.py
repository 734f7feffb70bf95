"""How many samples of each Waterbirds group (``y * 2 + place``) a split gets."""

from __future__ import annotations

import math

import numpy as np

from abs_ray.errors import ConfigError

__all__ = ["check_fraction", "group_counts", "group_sequence"]


def check_fraction(name: str, value: float) -> None:
    """Raise :class:`ConfigError` unless ``0 <= value <= 1``."""
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")


def group_counts(n: int, correlation: float) -> dict[int, int]:
    """Exact counts per group for ``n`` samples with balanced classes.

    Each class gets half the samples (class 0 gets the odd one); within class ``y`` a
    fraction ``correlation`` (rounded half up) has ``place == y`` — the majority groups 0
    and 3 — and the rest the other place. ``correlation = 0.5`` with ``n`` a multiple of 4
    balances all four groups.

    Args:
        n: number of samples, ``>= 0``.
        correlation: P(place == y) in ``[0, 1]``.

    Returns:
        ``{group: count}`` for groups 0-3, summing to ``n``.

    Raises:
        ConfigError: negative ``n`` or ``correlation`` outside ``[0, 1]``.

    >>> group_counts(10, 1.0)
    {0: 5, 1: 0, 2: 0, 3: 5}
    >>> group_counts(8, 0.5)
    {0: 2, 1: 2, 2: 2, 3: 2}
    """
    if not isinstance(n, int) or n < 0:
        raise ConfigError(f"sample count must be a non-negative int, got {n!r}")
    check_fraction("correlation", correlation)
    counts = {}
    for y, m in enumerate((n - n // 2, n // 2)):
        major = min(m, math.floor(correlation * m + 0.5))
        counts[y * 2 + y] = major
        counts[y * 2 + (1 - y)] = m - major
    return dict(sorted(counts.items()))


def group_sequence(counts: dict[int, int], rng: np.random.Generator) -> list[tuple[int, int]]:
    """``(y, place)`` for every sample, in a random order drawn from ``rng``.

    >>> group_sequence({0: 1, 1: 0, 2: 0, 3: 1}, np.random.default_rng(0))
    [(0, 0), (1, 1)]
    """
    pairs = [(g // 2, g % 2) for g, c in sorted(counts.items()) for _ in range(c)]
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]
