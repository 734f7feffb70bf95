"""Typed settings of the swap service, and a strict check of Serve config files.

:class:`ServiceConfig` is the single source of truth for the application: the Serve config's
``applications[].args`` (or ``build_app(args)``) fill it, unknown keys are refused, and the
resolved values are returned by ``GET /v1/info``. Serve's own per-deployment settings
(autoscaling, ``max_ongoing_requests``) stay in the Serve config's ``deployments`` list.

:func:`check_serve_config` validates a whole Serve config: Ray's
:class:`ray.serve.schema.ServeDeploySchema` (types and ranges), plus what that schema lets
through silently: unknown keys at any level (a misspelt ``max_ongoing_request`` would
otherwise be ignored), unknown application ``args``, deployment names that do not exist, and a
``max_ongoing_requests`` too small for batches to fill.

Example:
    >>> cfg = ServiceConfig.from_dict({"max_batch_size": 4})
    >>> cfg.max_batch_size, cfg.bank is None
    (4, True)
    >>> ServiceConfig.from_dict({"max_batchsize": 4})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: unknown service setting(s) ['max_batchsize']; known: bank, ...
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

from abs_ray.errors import ConfigError

__all__ = [
    "DEPLOYMENT_NAMES",
    "MASK_SOURCES",
    "ServiceConfig",
    "check_serve_config",
    "unknown_keys",
]

MASK_SOURCES = ("auto", "detector", "saliency")
#: Names of the two deployments of the application (``deployments[].name`` in the config).
DEPLOYMENT_NAMES = ("SwapIngress", "SwapModel")
_MIB = 1024 * 1024


def _number(name: str, value: object, low: float, high: float = math.inf) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ConfigError(f"{name} must be a number in [{low}, {high}], got {value!r}")
    return float(value)


def _integer(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name} must be an int >= {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{name} must be an int <= {high}, got {value!r}")
    return value


def _optional_uri(name: str, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be a local path, an s3:// URI or null, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class ServiceConfig:
    """Everything the swap service is configured with.

    Attributes:
        bank: pipeline output (local folder or ``s3://`` prefix) whose ``data/*.parquet``
            rows (``background_png``, ``label``, ``group``, ``id``) are the background bank;
            None = a built-in demo bank generated at start-up.
        bank_limit: most backgrounds loaded (decoded and kept in memory per model replica).
        demo_bank_size: backgrounds of the demo bank (half "land", half "water").
        detector_checkpoint: a detector checkpoint (``abs_ray.models.save_detector``) to
            compute masks with; None = no trained detector.
        mask_source: ``detector`` (needs ``detector_checkpoint``), ``saliency`` (zero-shot,
            see :mod:`abs_ray.serve.saliency`) or ``auto`` (detector when a checkpoint is
            given, else saliency).
        tight: tight-mask threshold on ``P(background)``; None = the detector's own.
        loose: loose (inpainted) mask threshold; None = the detector's own.
        inpainter: registered inpainter for ``/v1/inpaint`` (``telea``, ``patchmatch``, ...).
        inpainter_kwargs: its arguments.
        inpaint_max_side: inpaint at most at this long side; larger images are filled at this
            size and only their hole pixels replaced (bounds the cost of a request).
        device: ``auto`` (a GPU when the replica has one), ``cpu``, ``cuda``, ``cuda:1``, ...
        num_gpus: GPUs per model replica; ``auto`` = 1 when the cluster has GPUs, else 0.
        model_num_cpus: CPUs per model replica (also its torch threads).
        ingress_num_cpus: CPUs per ingress replica.
        max_batch_size: images per batched model call (``@serve.batch``); 1 = no batching.
        batch_wait_timeout_s: longest wait for a batch to fill.
        max_body_bytes: largest request body (413 above).
        max_pixels: largest image, checked from the header before decoding (422 above).
        max_variants: largest ``n`` of ``/v1/swap`` (422 above).
        max_work_pixels: largest ``n * width * height`` of one swap request (422 above):
            bounds a request's memory.
        scale: default ``[low, high]`` scale range of the pasted foreground.
        degrees: default rotation range ``+-degrees``.
        translate: default shift range as a fraction of the shorter image side
            (the paper's 32 px at 224 px = 0.143).
        feather: default inward feathering sigma in pixels (0 = hard alpha, the paper's).
    """

    bank: str | None = None
    bank_limit: int = 1000
    demo_bank_size: int = 32
    detector_checkpoint: str | None = None
    mask_source: str = "auto"
    tight: float | None = None
    loose: float | None = None
    inpainter: str = "telea"
    inpainter_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    inpaint_max_side: int = 512
    device: str = "auto"
    num_gpus: float | str = "auto"
    model_num_cpus: float = 1.0
    ingress_num_cpus: float = 0.5
    max_batch_size: int = 8
    batch_wait_timeout_s: float = 0.01
    max_body_bytes: int = 10 * _MIB
    max_pixels: int = 4 * _MIB
    max_variants: int = 16
    max_work_pixels: int = 16 * _MIB
    scale: tuple[float, float] = (0.5, 1.5)
    degrees: float = 30.0
    translate: float = 32 / 224
    feather: float = 0.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "bank", _optional_uri("bank", self.bank))
        set_(
            self,
            "detector_checkpoint",
            _optional_uri("detector_checkpoint", self.detector_checkpoint),
        )
        _integer("bank_limit", self.bank_limit, 1)
        _integer("demo_bank_size", self.demo_bank_size, 2, 1024)
        if self.mask_source not in MASK_SOURCES:
            raise ConfigError(
                f"mask_source must be one of {MASK_SOURCES}, got {self.mask_source!r}"
            )
        if self.mask_source == "detector" and self.detector_checkpoint is None:
            raise ConfigError("mask_source 'detector' needs detector_checkpoint")
        for name in ("tight", "loose"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, _number(name, value, 1e-6, 1 - 1e-6))
        if self.tight is not None and self.loose is not None and self.tight > self.loose:
            raise ConfigError(f"tight threshold {self.tight} must be <= loose {self.loose}")
        if not isinstance(self.inpainter, str) or not self.inpainter:
            raise ConfigError(f"inpainter must be a registered name, got {self.inpainter!r}")
        if not isinstance(self.inpainter_kwargs, Mapping):
            raise ConfigError(f"inpainter_kwargs must be a mapping, got {self.inpainter_kwargs!r}")
        set_(self, "inpainter_kwargs", dict(self.inpainter_kwargs))
        _integer("inpaint_max_side", self.inpaint_max_side, 32)
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"device must be 'auto', 'cpu', 'cuda', ..., got {self.device!r}")
        if self.num_gpus != "auto":
            set_(self, "num_gpus", _number("num_gpus", self.num_gpus, 0.0, 64.0))
        set_(self, "model_num_cpus", _number("model_num_cpus", self.model_num_cpus, 0.0, 1024.0))
        set_(
            self,
            "ingress_num_cpus",
            _number("ingress_num_cpus", self.ingress_num_cpus, 0.0, 1024.0),
        )
        _integer("max_batch_size", self.max_batch_size, 1, 1024)
        set_(
            self,
            "batch_wait_timeout_s",
            _number("batch_wait_timeout_s", self.batch_wait_timeout_s, 0.0, 10.0),
        )
        _integer("max_body_bytes", self.max_body_bytes, 1024)
        _integer("max_pixels", self.max_pixels, 64)
        _integer("max_variants", self.max_variants, 1, 1024)
        _integer("max_work_pixels", self.max_work_pixels, self.max_pixels)
        scale = self.scale
        if not (isinstance(scale, list | tuple) and len(scale) == 2):
            raise ConfigError(f"scale must be a [low, high] pair, got {scale!r}")
        low, high = (_number("scale", v, 1e-3, 100.0) for v in scale)
        if low > high:
            raise ConfigError(f"scale must satisfy low <= high, got {list(scale)}")
        set_(self, "scale", (low, high))
        set_(self, "degrees", _number("degrees", self.degrees, 0.0, 180.0))
        set_(self, "translate", _number("translate", self.translate, 0.0, 1.0))
        set_(self, "feather", _number("feather", self.feather, 0.0, 64.0))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ServiceConfig:
        """Build from a mapping (the Serve config's ``args``); unknown keys are an error.

        Raises:
            ConfigError: an unknown key (the message lists the known ones) or a bad value.
        """
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown service setting(s) {unknown}; known: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (tuples as lists)."""
        out = dataclasses.asdict(self)
        out["scale"] = list(self.scale)
        return out

    @property
    def bank_source(self) -> str:
        """``demo`` or the bank URI."""
        return "demo" if self.bank is None else self.bank


# --- strict check of a Serve config ---------------------------------------------------------


def _model_classes(annotation: Any) -> list[type]:
    """Pydantic model classes inside an annotation (through Optional/Union/List/Annotated)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_classes(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            found.extend(_model_classes(arg))
    return found


def unknown_keys(model: type, data: object, path: str = "") -> list[str]:
    """Keys of ``data`` (recursively) that the pydantic ``model`` has no field for.

    Follows nested models, lists of models and ``dict | Model`` unions (e.g. Serve's
    ``autoscaling_config``); free-form dict fields (``runtime_env``, ``user_config``,
    ``args``) are not entered.

    Args:
        model: a pydantic (v2) model class, e.g. ``ServeDeploySchema``.
        data: the parsed YAML/JSON for it.
        path: prefix for the reported paths.

    Returns:
        Dotted paths of unknown keys, e.g. ``["applications[0].deployments[1].max_replica"]``.
    """
    if not isinstance(data, Mapping):
        return []
    fields = model.model_fields
    names = {name: name for name in fields} | {
        f.alias: name for name, f in fields.items() if f.alias
    }
    problems: list[str] = []
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            problems.append(where)
            continue
        sub_models = _model_classes(fields[names[key]].annotation)
        if not sub_models:
            continue
        sub = sub_models[0]
        if isinstance(value, list):
            for i, item in enumerate(value):
                problems.extend(unknown_keys(sub, item, f"{where}[{i}]"))
        else:
            problems.extend(unknown_keys(sub, value, where))
    return problems


def check_serve_config(config: Mapping[str, Any], app_import_paths: tuple[str, ...] = ()) -> None:
    """Validate a Serve config as ``serve deploy`` would, and strictly.

    Checks, in order: Ray's ``ServeDeploySchema``; unknown keys anywhere in the Serve part;
    for applications whose ``import_path`` is in ``app_import_paths``: their ``args`` as a
    :class:`ServiceConfig`, deployment names in :data:`DEPLOYMENT_NAMES`, and
    ``SwapModel.max_ongoing_requests >= max_batch_size`` (otherwise batches never fill).

    Args:
        config: the parsed YAML.
        app_import_paths: import paths of this project's application builder.

    Raises:
        ConfigError: listing every problem found.
    """
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    if not isinstance(config, Mapping):
        raise ConfigError(f"a Serve config must be a mapping, got {type(config).__name__}")
    try:
        ServeDeploySchema.model_validate(dict(config))
    except ValidationError as exc:
        raise ConfigError(f"Serve config rejected by ServeDeploySchema: {exc}") from exc
    problems = [f"unknown key {p!r}" for p in unknown_keys(ServeDeploySchema, config)]
    for i, app in enumerate(config.get("applications") or []):
        if app.get("import_path") not in app_import_paths:
            continue
        try:
            service = ServiceConfig.from_dict(app.get("args"))
        except ConfigError as exc:
            problems.append(f"applications[{i}].args: {exc}")
            continue
        for j, dep in enumerate(app.get("deployments") or []):
            name = dep.get("name")
            if name not in DEPLOYMENT_NAMES:
                problems.append(
                    f"applications[{i}].deployments[{j}].name {name!r} is not one of "
                    f"{DEPLOYMENT_NAMES}"
                )
            limit = dep.get("max_ongoing_requests")
            if name == "SwapModel" and limit is not None and limit < service.max_batch_size:
                problems.append(
                    f"applications[{i}].deployments[{j}]: SwapModel max_ongoing_requests "
                    f"{limit} < max_batch_size {service.max_batch_size}: batches never fill"
                )
    if problems:
        raise ConfigError("Serve config problems: " + "; ".join(problems))
