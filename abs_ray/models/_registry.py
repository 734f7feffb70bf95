"""A tiny name -> factory registry, and the weight-loading errors and helpers model factories
share (a state dict from any URI, loaded strictly).

One :class:`Registry` per kind of swappable part (detector backbones, inpainters). Factories
register under a name; :meth:`Registry.create` builds one by name, and an unknown name raises a
:class:`~abs_ray.errors.ConfigError` that lists the known names.

Example:
    >>> colours = Registry("colour")
    >>> @colours.register("red")
    ... def make_red(shade: int = 1) -> str:
    ...     return f"red{shade}"
    >>> colours.create("red", shade=2)
    'red2'
    >>> colours.create("blue")
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: unknown colour 'blue'; known: red
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from abs_ray.errors import AssetUnavailableError, ConfigError
from abs_ray.io import S3Options, read_bytes

__all__ = [
    "Registry",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "load_state_dict_file",
    "load_state_dict_strict",
]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class WeightsUnavailableError(AssetUnavailableError):
    """Pretrained weights cannot be obtained here (no network for a download, package missing).

    The message says what was tried and how to supply the weights instead (a state-dict file at
    any URI).
    """


class WeightsMismatchError(ConfigError):
    """A state dict does not fit the model: missing, unexpected or wrongly shaped tensors."""


class Registry(Generic[T]):
    """Named factories of one kind of object.

    Args:
        kind: what the registry holds, used in error messages (e.g. ``"detector"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers a factory under ``name``.

        Raises:
            ConfigError: if ``name`` is empty or already registered.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} name must be a non-empty str, got {name!r}")

        def decorator(factory: F) -> F:
            if name in self._factories:
                raise ConfigError(f"{self.kind} {name!r} is already registered")
            self._factories[name] = factory
            return factory

        return decorator

    def names(self) -> tuple[str, ...]:
        """The registered names, sorted."""
        return tuple(sorted(self._factories))

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., T]:
        """The factory registered as ``name``.

        Raises:
            ConfigError: ``name`` is unknown; the message lists the known names.
        """
        try:
            return self._factories[name]
        except (KeyError, TypeError):
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def check(self, name: str, kwargs: Mapping[str, Any] | None = None) -> None:
        """Check, without building anything, that ``name`` is registered and that ``kwargs``
        are arguments its factory declares (bound against the factory's signature).

        Values are checked by the factory itself when it builds; this catches a wrong name or
        a misspelt argument when a configuration is made, before any work.

        Raises:
            ConfigError: ``name`` is unknown (the message lists the known names), or an
                argument is not accepted (the message lists the accepted ones).

        >>> shapes = Registry("shape")
        >>> @shapes.register("square")
        ... def square(side: int = 1) -> str:
        ...     return "#" * side
        >>> shapes.check("square", {"sides": 2})
        Traceback (most recent call last):
            ...
        abs_ray.errors.ConfigError: shape 'square' does not accept ['sides']; accepted: side
        """
        factory = self.get(name)
        kwargs = dict(kwargs or {})
        signature = inspect.signature(factory)
        try:
            signature.bind(**kwargs)
        except TypeError:
            accepted = [p for p in signature.parameters if p != "self"]
            rejected = sorted(k for k in kwargs if k not in signature.parameters) or sorted(kwargs)
            raise ConfigError(
                f"{self.kind} {name!r} does not accept {rejected}; accepted: {', '.join(accepted)}"
            ) from None

    def create(self, name: str, **kwargs: Any) -> T:
        """Build the object registered as ``name`` with keyword arguments ``kwargs``.

        Raises:
            ConfigError: ``name`` is unknown (the message lists the known names), an argument
                is not accepted (see :meth:`check`), or the factory rejects a value.
        """
        self.check(name, kwargs)
        return self.get(name)(**kwargs)


def load_state_dict_strict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], what: str
) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a typed, readable error.

    Raises:
        WeightsMismatchError: missing, unexpected or wrongly shaped tensors.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [
        f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
        raise WeightsMismatchError(f"{what} state dict does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state_dict, strict=True)


def load_state_dict_file(uri: str, s3: S3Options | None = None) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``-d state dict from any URI (``weights_only`` unpickling).

    A dict holding the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.

    Args:
        uri: local path or ``s3://bucket/key``.
        s3: S3 settings; default from the environment.

    Returns:
        ``name -> tensor`` on CPU.

    Raises:
        StorageNotFoundError: nothing at ``uri``.
        StorageError: any other storage failure.
        WeightsMismatchError: the file is not a state dict of tensors.
    """
    data = read_bytes(uri, s3)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise WeightsMismatchError(f"{uri}: not a torch state-dict file ({exc})") from exc
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsMismatchError(f"{uri}: expected a mapping of name -> tensor (a state dict)")
    return dict(obj)
