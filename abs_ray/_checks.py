"""Range checks for config values, with the :class:`~abs_ray.errors.ConfigError` messages every
config in the package words alike ("lr must be a number in (0, 100], got -1").

Example:
    >>> check_int("grid", 16, minimum=1)
    16
    >>> check_number("dropout", 0.2, 0, 1, high_open=True)
    0.2
    >>> check_number("tight", 1.0, 0, 1, low_open=True, high_open=True)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: tight must be a number in (0, 1), got 1.0
"""

from __future__ import annotations

import math

from abs_ray.errors import ConfigError

__all__ = ["check_int", "check_number"]


def check_int(name: str, value: object, minimum: int = 0, maximum: int | None = None) -> int:
    """``value`` if it is an int (not a bool) ``>= minimum`` (and ``<= maximum`` if given).

    >>> check_int("port", 70000, 0, 65535)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: port must be an int >= 0 and <= 65535, got 70000

    Raises:
        ConfigError: anything else; the message names ``name``, the bounds and the value.
    """
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= minimum
    if not ok or (maximum is not None and value > maximum):
        upper = "" if maximum is None else f" and <= {maximum}"
        raise ConfigError(f"{name} must be an int >= {minimum}{upper}, got {value!r}")
    return value


def check_number(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``float(value)`` if it is a finite number (not a bool) in the interval from low to high.

    Args:
        name: what the value configures, for the message.
        value: the value to check.
        low: lower bound.
        high: upper bound.
        low_open: exclude ``low`` itself.
        high_open: exclude ``high`` itself.

    Raises:
        ConfigError: not a finite number, or outside the interval (the message writes the
            interval with its brackets, as given: ``[0, 1)``, ``(0.0, 100.0]``).
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    above = ok and (low < value if low_open else low <= value)
    below = ok and (value < high if high_open else value <= high)
    if not (above and below):
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)
