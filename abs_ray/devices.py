"""Which device a model runs on: one meaning of ``"auto"`` for every stage, service and job.

``"auto"`` means "a GPU when there is one": in a process, when torch sees one
(:func:`resolve_device`); for work the driver places on a Ray cluster, when the cluster has
one (:func:`cluster_gpus`, :func:`auto_device`). Importing this module imports neither torch
nor Ray (task workers that only decode or encode never pay for them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from abs_ray.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["auto_device", "cluster_cpus", "cluster_gpus", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → ``cuda`` when this process sees a GPU, else ``cpu``; other names as given.

    Raises:
        ConfigError: an invalid device name.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"invalid device {device!r}: {exc}") from exc


def cluster_gpus() -> float:
    """GPUs of the Ray cluster this driver is connected to (0 when it has none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0))


def cluster_cpus() -> float:
    """Logical CPUs of the Ray cluster this driver is connected to, now."""
    import ray

    return float(ray.cluster_resources().get("CPU", 0))


def auto_device(device: str, gpus: float) -> str:
    """The device of work placed where ``gpus`` GPUs are available: ``"auto"`` → ``cuda``
    when there is at least one, else ``cpu``; other names as given.

    >>> auto_device("auto", 0), auto_device("auto", 1), auto_device("cuda:1", 0)
    ('cpu', 'cuda', 'cuda:1')
    """
    if device == "auto":
        return "cuda" if gpus else "cpu"
    return device
