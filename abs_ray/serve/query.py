"""Query parameters of the swap service's routes, as strict pydantic models.

Each route's query string is a model that forbids unknown keys (:class:`SwapQuery`,
:class:`MaskQuery`, :class:`InpaintQuery`): a misspelt parameter, or a URL where none is
taken, is a 422 instead of being ignored. :func:`single_valued` refuses a single-valued
parameter given twice (``n=1&n=2``) instead of keeping the last.
"""

from __future__ import annotations

import inspect
import typing
from typing import Annotated, Any, Literal

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from abs_ray.serve.config import ServiceConfig
from abs_ray.serve.jobs import SwapOptions
from abs_ray.web.errors import InvalidParameterError, InvalidRequestError

__all__ = ["InpaintQuery", "Int64", "MaskQuery", "SwapQuery", "single_valued"]


# Labels and groups are int64 in the bank: a larger value is refused here (422) instead of
# overflowing in numpy inside the model replica.
Int64 = Annotated[int, Field(ge=-(2**63), lt=2**63)]


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _is_list(annotation: Any) -> bool:
    """Whether a field annotation takes several values (``list[...]``, maybe optional)."""
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(a) for a in typing.get_args(annotation) if a is not type(None))


def single_valued(model: type[_Query]):
    """A FastAPI dependency refusing a repeated single-valued query parameter of ``model``.

    FastAPI keeps the last of ``n=1&n=2`` silently; the caller meant one of them, so the
    request is refused (422, naming the parameter). List parameters (``label``, ``group``)
    may repeat. Unknown parameters are left to the model (which forbids them).

    Raises:
        InvalidParameterError: from the dependency, for the first repeated parameter.
    """
    scalars = {name for name, field in model.model_fields.items() if not _is_list(field.annotation)}

    def check(request: Request) -> None:
        counts: dict[str, int] = {}
        for key, _ in request.query_params.multi_items():
            counts[key] = counts.get(key, 0) + 1
        for key, count in counts.items():
            if key in scalars and count > 1:
                raise InvalidParameterError(
                    f"query parameter {key!r} is given {count} times; it takes one value"
                )

    # A real (not string) annotation: Serve ships the app to its replica with cloudpickle,
    # which keeps only the globals a function's code uses, so FastAPI could not resolve the
    # string "Request" there and would take `request` for a required query parameter.
    check.__signature__ = inspect.Signature(
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request)]
    )
    return check


class SwapQuery(_Query):
    """Query parameters of ``POST /v1/swap``; unset ranges take the service defaults."""

    n: int = Field(1, ge=1, description="number of variants (at most the service's max_variants)")
    seed: int | None = Field(
        None,
        ge=0,
        lt=2**63,
        description="seed of the draw; the response reports the one used (random if unset)",
    )
    scale_min: float | None = Field(None, gt=0, le=100, description="lowest foreground scale")
    scale_max: float | None = Field(None, gt=0, le=100, description="highest foreground scale")
    degrees: float | None = Field(None, ge=0, le=180, description="rotation range +-degrees")
    translate: float | None = Field(
        None, ge=0, le=1, description="shift range per axis, fraction of the shorter side"
    )
    keep_in_frame: bool = Field(True, description="keep the moved foreground in the image")
    class_uniform: bool = Field(True, description="draw the background's class uniformly first")
    label: list[Int64] = Field(
        default_factory=list, description="only backgrounds of these classes (repeatable)"
    )
    group: list[Int64] = Field(
        default_factory=list, description="only backgrounds of these groups (repeatable)"
    )
    feather: float | None = Field(None, ge=0, le=64, description="inward feathering sigma (px)")
    format: Literal["auto", "png", "json"] = Field(
        "auto", description="auto: PNG for n = 1, else JSON with base64 PNGs"
    )

    @model_validator(mode="after")
    def _scale_order(self) -> SwapQuery:
        low, high = self.scale_min, self.scale_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"scale_min {low} must be <= scale_max {high}")
        if self.format == "png" and self.n > 1:
            raise ValueError(f"format=png returns one image; use format=json for n={self.n}")
        return self

    def options(self, cfg: ServiceConfig, seed: int) -> SwapOptions:
        """:class:`SwapOptions` with the service defaults filled in.

        Raises:
            InvalidRequestError: ``n`` over the limit, or ranges that do not fit together.
        """
        if self.n > cfg.max_variants:
            raise InvalidRequestError(f"n must be <= {cfg.max_variants}, got {self.n}")
        low = cfg.scale[0] if self.scale_min is None else self.scale_min
        high = cfg.scale[1] if self.scale_max is None else self.scale_max
        if low > high:
            raise InvalidRequestError(
                f"scale range [{low}, {high}] is empty (service default {list(cfg.scale)})"
            )
        try:
            return SwapOptions(
                n=self.n,
                seed=seed,
                scale=(low, high),
                degrees=cfg.degrees if self.degrees is None else self.degrees,
                translate=cfg.translate if self.translate is None else self.translate,
                keep_in_frame=self.keep_in_frame,
                class_uniform=self.class_uniform,
                labels=tuple(self.label),
                groups=tuple(self.group),
                feather=cfg.feather if self.feather is None else self.feather,
            )
        except ValueError as exc:
            raise InvalidRequestError(str(exc)) from exc


class MaskQuery(_Query):
    """Query parameters of ``POST /v1/mask``."""

    format: Literal["json", "png"] = Field(
        "json", description="json: masks as base64 PNGs + patch grid; png: the alpha mask only"
    )


class InpaintQuery(_Query):
    """Query parameters of ``POST /v1/inpaint`` (none yet; unknown ones are refused)."""
