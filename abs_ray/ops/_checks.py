"""Input checks shared by the ops modules (internal): typed errors whose messages carry the
actual value, its shape, dtype and device."""

from __future__ import annotations

import math

import torch

from abs_ray.errors import ConfigError

__all__ = ["check_alpha", "check_int_vector", "describe", "is_number"]


def is_number(value: object) -> bool:
    """True for a finite int or float that is not a bool."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def describe(value: object) -> str:
    """A tensor's shape, dtype and device, or any other value's type name (for messages)."""
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} dtype {value.dtype} device {value.device}"
    return type(value).__name__


def check_alpha(alpha: object) -> torch.Tensor:
    """``alpha`` itself if it is a ``(B, 1, H, W)`` floating tensor.

    Raises:
        ConfigError: otherwise, with its shape, dtype and device.
    """
    if (
        not isinstance(alpha, torch.Tensor)
        or alpha.ndim != 4
        or alpha.shape[1] != 1
        or not alpha.is_floating_point()
    ):
        raise ConfigError(f"alpha must be a (B, 1, H, W) floating tensor, got {describe(alpha)}")
    return alpha


def check_int_vector(name: str, value: object, length: int | None = None) -> torch.Tensor:
    """``value`` itself if it is a 1-D integer (not bool) tensor, of ``length`` entries if given.

    Raises:
        ConfigError: otherwise, naming ``name``.
    """
    ok = (
        isinstance(value, torch.Tensor)
        and value.ndim == 1
        and not value.is_floating_point()
        and not value.is_complex()
        and value.dtype != torch.bool
    )
    if not ok:
        raise ConfigError(f"{name} must be a 1-D integer tensor, got {describe(value)}")
    if length is not None and value.shape[0] != length:
        raise ConfigError(f"{name} must have {length} entries (batch size), got {value.shape[0]}")
    return value
