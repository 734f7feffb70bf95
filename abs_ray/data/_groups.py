"""How many samples of each Waterbirds group (``y * 2 + place``) a split gets."""

from __future__ import annotations

import math

import numpy as np

from abs_ray.errors import ConfigError

__all__ = ["check_fraction", "check_split_sizes", "group_counts", "group_sequence", "split_counts"]


def check_fraction(name: str, value: float) -> None:
    """Raise :class:`ConfigError` unless ``0 <= value <= 1``."""
    if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")


def check_split_sizes(
    n_train: int, n_val: int, n_test: int, correlation: float, val_correlation: float | None
) -> None:
    """The checks every generator's config makes of its split sizes and correlations.

    Raises:
        ConfigError: a negative or non-int count, ``n_test`` not a multiple of 4 (the four
            test groups are equal), or a correlation outside ``[0, 1]``.

    >>> check_split_sizes(10, 4, 6, 1.0, None)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: n_test must be a multiple of 4 (four equal groups), got 6
    """
    for name, value in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a non-negative int, got {value!r}")
    if n_test % 4:
        raise ConfigError(f"n_test must be a multiple of 4 (four equal groups), got {n_test}")
    check_fraction("correlation", correlation)
    if val_correlation is not None:
        check_fraction("val_correlation", val_correlation)


def split_counts(
    n_train: int, n_val: int, n_test: int, correlation: float, val_correlation: float | None
) -> dict[str, dict[int, int]]:
    """``{split: {group: count}}``: train at ``correlation``, val at ``val_correlation``
    (None: the same as train), test balanced over the four groups.

    >>> split_counts(4, 2, 4, 1.0, None)
    {'train': {0: 2, 1: 0, 2: 0, 3: 2}, 'val': {0: 1, 1: 0, 2: 0, 3: 1}, 'test': {0: 1, 1: 1, 2: 1, 3: 1}}
    """
    val = correlation if val_correlation is None else val_correlation
    return {
        "train": group_counts(n_train, correlation),
        "val": group_counts(n_val, val),
        "test": group_counts(n_test, 0.5),
    }


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
