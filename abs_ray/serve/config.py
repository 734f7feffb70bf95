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

:func:`capacity_errors` checks that a config's replicas, at their autoscaling maxima, can all
be placed on the nodes of the cluster it is deployed on (:data:`LOCAL_CLUSTER` for the
shipped ``deployments/serve_config.yaml``; the RayService's worker groups for Kubernetes). A
maximum the cluster cannot place leaves a replica pending and the application UNHEALTHY.

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
    "LOCAL_CLUSTER",
    "MASK_SOURCES",
    "ServiceConfig",
    "USER_CONFIG_KEYS",
    "capacity_errors",
    "check_serve_config",
    "parse_user_config",
    "replica_resources",
    "unknown_keys",
]

MASK_SOURCES = ("auto", "detector", "saliency")
#: Names of the two deployments of the application (``deployments[].name`` in the config).
DEPLOYMENT_NAMES = ("SwapIngress", "SwapModel")
#: The cluster ``deployments/serve_config.yaml`` is sized for: one machine with 2 CPUs and no
#: GPU (the smallest the project supports; ``serve run`` on it starts a 2-CPU Ray).
LOCAL_CLUSTER: tuple[dict[str, float], ...] = ({"CPU": 2.0, "GPU": 0.0},)
_MIB = 1024 * 1024
#: Keys of ``SwapModel``'s ``user_config`` (what can change without restarting a replica).
USER_CONFIG_KEYS = ("output",)


def parse_user_config(user_config: object) -> dict[str, Any]:
    """``SwapModel``'s ``user_config``, checked: ``{"output": <pipeline output URI or None>}``.

    ``output`` is a pipeline's ``--out`` (local folder or ``s3://`` prefix) whose bank and
    detector the model serves; None serves ``bank``/``detector_checkpoint`` of ``args``.

    >>> parse_user_config({"output": "s3://bucket/run"})
    {'output': 's3://bucket/run'}
    >>> parse_user_config({"outptu": "s3://bucket/run"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: unknown SwapModel user_config key(s) ['outptu']; known: output

    Raises:
        ConfigError: not a mapping, an unknown key, or an output that is not a URI.
    """
    if user_config is None:
        user_config = {}
    if not isinstance(user_config, Mapping):
        raise ConfigError(f"SwapModel user_config must be a mapping, got {user_config!r}")
    unknown = sorted(set(user_config) - set(USER_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown SwapModel user_config key(s) {unknown}; known: {', '.join(USER_CONFIG_KEYS)}"
        )
    return {"output": _optional_uri("output", user_config.get("output"))}


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

    The pipeline output to serve is not here but in ``SwapModel``'s ``user_config``
    (:func:`parse_user_config`): it can change without restarting a replica. ``bank`` and
    ``detector_checkpoint`` are for a bank or a detector that is not a pipeline output's.

    Attributes:
        bank: pipeline output (local folder or ``s3://`` prefix) whose ``data/*.parquet``
            rows (``background_png``, ``label``, ``group``, ``id``) are the background bank;
            None = a built-in demo bank generated at start-up.
        bank_limit: most backgrounds loaded (decoded and kept in memory per model replica).
        demo_bank_size: backgrounds of the demo bank (half "land", half "water").
        detector_checkpoint: a detector checkpoint (``abs_ray.models.save_detector``) to
            compute masks with; None = no trained detector.
        mask_source: ``detector`` (needs ``detector_checkpoint``), ``saliency`` (zero-shot,
            see :mod:`abs_ray.models.saliency`) or ``auto`` (detector when a checkpoint is
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
        body_timeout_s: the whole request body must arrive within this many seconds of the
            ingress starting to read it (408 after): a slow or stalled client holds an
            ingress slot for at most this long. Each request's deadline is drawn in
            ``[0.8, 1] * body_timeout_s`` so that slow clients are not all cut at once.
        model_retries: times a request is sent again when the model replica answering it
            died or became unreachable (requests are pure functions of their inputs, so a
            retry gives the same answer); request errors are never retried.
        retry_backoff_s: wait before the first retry, doubled for each next one (with
            jitter).
        ready_timeout_s: ``GET /v1/ready`` answers 503 when the model has not answered its
            tiny readiness job within this many seconds.
        docs: serve the OpenAPI page ``/docs`` (Swagger UI from the installed
            ``swagger-ui-bundle-v2``, no CDN) and ``/openapi.json``; False answers 404.
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
    body_timeout_s: float = 10.0
    model_retries: int = 2
    retry_backoff_s: float = 0.5
    ready_timeout_s: float = 5.0
    docs: bool = True
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
        set_(self, "body_timeout_s", _number("body_timeout_s", self.body_timeout_s, 0.1, 3600.0))
        _integer("model_retries", self.model_retries, 0, 10)
        set_(self, "retry_backoff_s", _number("retry_backoff_s", self.retry_backoff_s, 0.0, 60.0))
        set_(self, "ready_timeout_s", _number("ready_timeout_s", self.ready_timeout_s, 0.1, 300.0))
        if not isinstance(self.docs, bool):
            raise ConfigError(f"docs must be true or false, got {self.docs!r}")
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
    :class:`ServiceConfig`, deployment names in :data:`DEPLOYMENT_NAMES`,
    ``SwapModel.max_ongoing_requests >= max_batch_size`` (otherwise batches never fill), and
    ``SwapModel``'s ``user_config`` (:func:`parse_user_config`; an ``output`` excludes
    ``args.bank`` and ``args.detector_checkpoint``).

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
            if name == "SwapModel" and "user_config" in dep:
                try:
                    wanted = parse_user_config(dep["user_config"])
                except ConfigError as exc:
                    problems.append(f"applications[{i}].deployments[{j}].user_config: {exc}")
                else:
                    if wanted["output"] and (service.bank or service.detector_checkpoint):
                        problems.append(
                            f"applications[{i}]: SwapModel's user_config.output gives the bank "
                            "and the detector; leave args.bank and args.detector_checkpoint null"
                        )
            limit = dep.get("max_ongoing_requests")
            if name == "SwapModel" and limit is not None and limit < service.max_batch_size:
                problems.append(
                    f"applications[{i}].deployments[{j}]: SwapModel max_ongoing_requests "
                    f"{limit} < max_batch_size {service.max_batch_size}: batches never fill"
                )
    if problems:
        raise ConfigError("Serve config problems: " + "; ".join(problems))


# --- does a config fit its cluster? ---------------------------------------------------------


def _replica_count(dep: Mapping[str, Any]) -> int | None:
    """Most replicas a deployment entry can have: autoscaling maximum, else ``num_replicas``."""
    auto = dep.get("autoscaling_config")
    if isinstance(auto, Mapping):
        return int(auto.get("max_replicas", 1))
    count = dep.get("num_replicas", 1)
    return count if isinstance(count, int) else None  # "auto": Serve picks (up to 100)


def replica_resources(
    config: Mapping[str, Any], app_import_paths: tuple[str, ...], gpus: bool
) -> list[tuple[str, dict[str, float]]]:
    """Every replica a Serve config can start at its autoscaling maxima, with its resources.

    Resources come from the application's :class:`ServiceConfig` (``model_num_cpus``,
    ``num_gpus``, ``ingress_num_cpus``), overridden by a deployment's ``ray_actor_options``
    as Serve does. Deployments the config does not list run one replica.

    Args:
        config: a parsed Serve config.
        app_import_paths: import paths of this project's application builder.
        gpus: whether the cluster has GPUs (``num_gpus: auto`` is 1 then, else 0).

    Returns:
        ``[(deployment name, {"CPU": c, "GPU": g}), ...]``, one entry per replica.

    Raises:
        ConfigError: bad ``args``, or ``num_replicas: auto`` (no maximum to check).

    >>> cfg = {"applications": [{"import_path": "a:b", "args": {"model_num_cpus": 2},
    ...        "deployments": [{"name": "SwapModel", "autoscaling_config": {"max_replicas": 2}}]}]}
    >>> replica_resources(cfg, ("a:b",), gpus=False)  # doctest: +NORMALIZE_WHITESPACE
    [('SwapIngress', {'CPU': 0.5, 'GPU': 0.0}), ('SwapModel', {'CPU': 2.0, 'GPU': 0.0}),
     ('SwapModel', {'CPU': 2.0, 'GPU': 0.0})]
    """
    replicas: list[tuple[str, dict[str, float]]] = []
    for app in config.get("applications") or []:
        if app.get("import_path") not in app_import_paths:
            continue
        service = ServiceConfig.from_dict(app.get("args"))
        gpu = float(service.num_gpus) if service.num_gpus != "auto" else float(gpus)
        own = {
            "SwapIngress": {"CPU": service.ingress_num_cpus, "GPU": 0.0},
            "SwapModel": {"CPU": service.model_num_cpus, "GPU": gpu},
        }
        listed = {d.get("name"): d for d in app.get("deployments") or []}
        for name in DEPLOYMENT_NAMES:
            dep = listed.get(name, {})
            count = _replica_count(dep)
            if count is None:
                raise ConfigError(
                    f"{name}: num_replicas {dep.get('num_replicas')!r} has no maximum to check; "
                    "give autoscaling_config.max_replicas or an int"
                )
            options = dep.get("ray_actor_options") or {}
            need = {
                "CPU": float(options.get("num_cpus", own[name]["CPU"])),
                "GPU": float(options.get("num_gpus", own[name]["GPU"])),
            }
            replicas += [(name, dict(need)) for _ in range(count)]
    return replicas


def capacity_errors(
    replicas: list[tuple[str, dict[str, float]]], nodes: list[Mapping[str, float]]
) -> list[str]:
    """Why ``replicas`` cannot all be placed on ``nodes`` (empty when they can).

    Places the largest first (GPU, then CPU), each on the first node with room, as Ray's
    scheduler can at best; so a non-empty answer means some replica would stay pending. Sums
    alone are not enough: two 1-GPU replicas do not fit on two nodes of half a GPU each.

    Args:
        replicas: from :func:`replica_resources`.
        nodes: one ``{"CPU": c, "GPU": g}`` per node at the cluster's largest size.

    >>> capacity_errors([("SwapModel", {"CPU": 1, "GPU": 0})] * 2, [{"CPU": 1.5, "GPU": 0}])
    ['SwapModel needs CPU 1, GPU 0 but the nodes have CPU 0.5, GPU 0 left: 2 replicas need CPU 2, GPU 0; the cluster has CPU 1.5, GPU 0']
    """
    free = [{"CPU": float(n.get("CPU", 0)), "GPU": float(n.get("GPU", 0))} for n in nodes]
    order = sorted(replicas, key=lambda r: (r[1]["GPU"], r[1]["CPU"]), reverse=True)
    errors = []
    eps = 1e-9
    for name, need in order:
        node = next((n for n in free if all(n[k] + eps >= need[k] for k in ("CPU", "GPU"))), None)
        if node is None:
            errors.append(
                f"{name} needs CPU {need['CPU']:g}, GPU {need['GPU']:g} but the nodes have "
                + "; ".join(f"CPU {n['CPU']:g}, GPU {n['GPU']:g}" for n in free)
                + " left"
            )
            continue
        for k in ("CPU", "GPU"):
            node[k] -= need[k]
    if errors:
        total = {k: sum(r[1][k] for r in replicas) for k in ("CPU", "GPU")}
        have = {k: sum(float(n.get(k, 0)) for n in nodes) for k in ("CPU", "GPU")}
        errors[-1] += (
            f": {len(replicas)} replicas need CPU {total['CPU']:g}, GPU {total['GPU']:g}; "
            f"the cluster has CPU {have['CPU']:g}, GPU {have['GPU']:g}"
        )
    return errors
