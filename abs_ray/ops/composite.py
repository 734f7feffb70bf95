"""Background swapping: paste each sample's foreground, randomly transformed, on another background.

This is stage 3 of AutoBackSwap. Randomness is kept apart from application:

1. :func:`sample_swap_params` draws a :class:`SwapParams` (which background, scale, angle,
   shift) from an explicit ``torch.Generator``;
2. :func:`warp_foreground` and :func:`swap_backgrounds` apply them deterministically to the
   image and its alpha together.

:meth:`SwapParams.to_records` turns the draw into plain numbers that can be stored with the
sample and turned back with :meth:`SwapParams.from_records` to replay it exactly.

Geometry: the transform is ``p' = R(angle) * scale * (p - c) + c + t`` in pixel coordinates
(pixel centres at integer positions, origin top-left), where ``c`` is the centre of the
foreground's bounding box (pixels with ``alpha > 0``) and ``t = (dx, dy)``. ``angle`` follows
``kornia.geometry.transform.get_affine_matrix2d`` (degrees, positive = clockwise as displayed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from kornia.geometry.transform import get_affine_matrix2d
from torch import nn
from torch.nn import functional as F

from abs_ray.errors import ConfigError
from abs_ray.ops.masks import feather_mask

__all__ = [
    "BackgroundSwap",
    "SwapConfig",
    "SwapParams",
    "paste_foregrounds",
    "sample_swap_params",
    "swap_backgrounds",
    "warp_foreground",
]

logger = logging.getLogger(__name__)

RECORD_KEYS = ("bg_index", "scale", "angle", "dx", "dy")


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)} dtype {value.dtype} device {value.device}"
    return type(value).__name__


@dataclass(frozen=True)
class SwapConfig:
    """Ranges of the random swap transform (defaults: the paper's Waterbirds setting).

    Attributes:
        scale: ``(low, high)`` range of the uniform scale factor, ``0 < low <= high``.
        degrees: rotation angle is uniform in ``[-degrees, degrees]``, ``0 <= degrees <= 180``.
        translate: shift in pixels (at the resolution of the alpha), uniform in
            ``[-translate, translate]`` per axis, ``>= 0``. The paper uses 32 on Waterbirds and
            64 elsewhere (at 224 px).
        class_uniform: pick the background's class uniformly among the classes in the bank,
            then a uniform background of that class; ``False``: uniform over the bank.
        keep_in_frame: clip the shift (and reduce the scale when the object cannot fit
            otherwise) so that the transformed foreground stays inside the image.

    Raises:
        ConfigError: if a field is out of range or of the wrong type.

    Example:
        >>> SwapConfig(translate=64).translate
        64.0
    """

    scale: tuple[float, float] = (0.5, 1.5)
    degrees: float = 30.0
    translate: float = 32.0
    class_uniform: bool = True
    keep_in_frame: bool = True

    def __post_init__(self) -> None:
        scale = self.scale
        if not (
            isinstance(scale, tuple | list) and len(scale) == 2 and all(map(_is_number, scale))
        ):
            raise ConfigError(f"scale must be a (low, high) pair of numbers, got {scale!r}")
        low, high = float(scale[0]), float(scale[1])
        if not 0.0 < low <= high:
            raise ConfigError(f"scale range must satisfy 0 < low <= high, got ({low}, {high})")
        if not _is_number(self.degrees) or not 0.0 <= self.degrees <= 180.0:
            raise ConfigError(f"degrees must be in [0, 180], got {self.degrees!r}")
        if not _is_number(self.translate) or self.translate < 0:
            raise ConfigError(f"translate must be a number of pixels >= 0, got {self.translate!r}")
        for name in ("class_uniform", "keep_in_frame"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a bool, got {getattr(self, name)!r}")
        object.__setattr__(self, "scale", (low, high))
        object.__setattr__(self, "degrees", float(self.degrees))
        object.__setattr__(self, "translate", float(self.translate))


@dataclass(frozen=True, eq=False)
class SwapParams:
    """One draw of swap parameters for a batch of ``B`` samples (all tensors on one device).

    Attributes:
        bg_index: ``(B,)`` long, index into the background bank.
        scale: ``(B,)`` float32 scale factor.
        angle: ``(B,)`` float32 rotation in degrees (kornia's ``get_affine_matrix2d``
            convention: positive = clockwise as displayed).
        translate: ``(B, 2)`` float32 shift ``(dx, dy)`` in pixels.

    Raises:
        ConfigError: if the tensors have wrong shapes, dtypes, or differ in batch size or device.

    Example:
        >>> params = SwapParams.identity(torch.tensor([3]))
        >>> params.to_records()
        [{'bg_index': 3, 'scale': 1.0, 'angle': 0.0, 'dx': 0.0, 'dy': 0.0}]
    """

    bg_index: torch.Tensor
    scale: torch.Tensor
    angle: torch.Tensor
    translate: torch.Tensor

    def __post_init__(self) -> None:
        fields = {
            "bg_index": self.bg_index,
            "scale": self.scale,
            "angle": self.angle,
            "translate": self.translate,
        }
        for name, value in fields.items():
            if not isinstance(value, torch.Tensor):
                raise ConfigError(f"SwapParams.{name} must be a tensor, got {_describe(value)}")
        batch = self.bg_index.shape[0] if self.bg_index.ndim == 1 else -1
        if self.bg_index.ndim != 1 or self.bg_index.dtype != torch.long:
            raise ConfigError(
                f"SwapParams.bg_index must be a (B,) long tensor, got {_describe(self.bg_index)}"
            )
        expected = {"scale": (batch,), "angle": (batch,), "translate": (batch, 2)}
        for name, shape in expected.items():
            value = fields[name]
            if tuple(value.shape) != shape or not value.is_floating_point():
                raise ConfigError(
                    f"SwapParams.{name} must be a floating tensor of shape {shape}, "
                    f"got {_describe(value)}"
                )
        devices = {str(v.device) for v in fields.values()}
        if len(devices) != 1:
            raise ConfigError(f"SwapParams tensors must share one device, got {sorted(devices)}")

    def __len__(self) -> int:
        return int(self.bg_index.shape[0])

    @property
    def device(self) -> torch.device:
        """The device every tensor is on."""
        return self.bg_index.device

    def to(self, device: torch.device | str) -> SwapParams:
        """Return a copy with every tensor on ``device``."""
        return SwapParams(
            bg_index=self.bg_index.to(device),
            scale=self.scale.to(device),
            angle=self.angle.to(device),
            translate=self.translate.to(device),
        )

    @classmethod
    def identity(cls, bg_index: torch.Tensor) -> SwapParams:
        """Params that keep every foreground in place (scale 1, angle 0, no shift).

        Args:
            bg_index: ``(B,)`` long background indices; the result lives on its device.
        """
        if not isinstance(bg_index, torch.Tensor) or bg_index.ndim != 1:
            raise ConfigError(f"bg_index must be a (B,) long tensor, got {_describe(bg_index)}")
        n, device = bg_index.shape[0], bg_index.device
        return cls(
            bg_index=bg_index.long(),
            scale=torch.ones(n, device=device),
            angle=torch.zeros(n, device=device),
            translate=torch.zeros(n, 2, device=device),
        )

    def to_dict(self, i: int) -> dict[str, int | float]:
        """Sample ``i``'s parameters as plain Python numbers (keys: :data:`RECORD_KEYS`)."""
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self):
            raise ConfigError(f"sample index must be an int in [0, {len(self)}), got {i!r}")
        dx, dy = self.translate[i].tolist()
        return {
            "bg_index": int(self.bg_index[i]),
            "scale": float(self.scale[i]),
            "angle": float(self.angle[i]),
            "dx": float(dx),
            "dy": float(dy),
        }

    def to_records(self) -> list[dict[str, int | float]]:
        """Every sample's parameters as plain Python numbers, one dict per sample."""
        bg, scale, angle, shift = (
            t.tolist() for t in (self.bg_index, self.scale, self.angle, self.translate)
        )
        return [
            {"bg_index": b, "scale": s, "angle": a, "dx": d[0], "dy": d[1]}
            for b, s, a, d in zip(bg, scale, angle, shift, strict=True)
        ]

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, int | float]],
        device: torch.device | str | None = None,
    ) -> SwapParams:
        """Rebuild params from :meth:`to_records` output (exact: float32 survives a float64).

        Args:
            records: one mapping per sample with the keys :data:`RECORD_KEYS`.
            device: where to put the tensors (default CPU).

        Raises:
            ConfigError: if a record lacks a key or holds a non-number.
        """
        columns: dict[str, list[float]] = {key: [] for key in RECORD_KEYS}
        for row, record in enumerate(records):
            for key in RECORD_KEYS:
                if key not in record:
                    raise ConfigError(f"swap record {row} lacks key {key!r}, has {sorted(record)}")
                value = record[key]
                if not _is_number(value):
                    raise ConfigError(f"swap record {row}: {key} must be a number, got {value!r}")
                columns[key].append(value)
        bg = columns["bg_index"]
        if any(float(b) != int(b) for b in bg):
            raise ConfigError(f"bg_index values must be integers, got {bg!r}")
        return cls(
            bg_index=torch.tensor([int(b) for b in bg], dtype=torch.long, device=device),
            scale=torch.tensor(columns["scale"], dtype=torch.float32, device=device),
            angle=torch.tensor(columns["angle"], dtype=torch.float32, device=device),
            translate=torch.tensor(
                list(zip(columns["dx"], columns["dy"], strict=True)),
                dtype=torch.float32,
                device=device,
            ).reshape(-1, 2),
        )


def _check_alpha(alpha: object) -> torch.Tensor:
    if (
        not isinstance(alpha, torch.Tensor)
        or alpha.ndim != 4
        or alpha.shape[1] != 1
        or not alpha.is_floating_point()
    ):
        raise ConfigError(f"alpha must be a (B, 1, H, W) floating tensor, got {_describe(alpha)}")
    return alpha


def _check_int_vector(name: str, value: object, length: int | None = None) -> torch.Tensor:
    ok = (
        isinstance(value, torch.Tensor)
        and value.ndim == 1
        and not value.is_floating_point()
        and not value.is_complex()
        and value.dtype != torch.bool
    )
    if not ok:
        raise ConfigError(f"{name} must be a 1-D integer tensor, got {_describe(value)}")
    if length is not None and value.shape[0] != length:
        raise ConfigError(f"{name} must have {length} entries (batch size), got {value.shape[0]}")
    return value


def _foreground_boxes(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of ``alpha > 0`` as ``(B, 4)`` long ``(x0, y0, x1, y1)`` (inclusive).

    Empty samples get the box ``(0, 0, W - 1, H - 1)`` and ``False`` in the second output.
    """
    _, _, height, width = alpha.shape
    fg = alpha[:, 0] > 0
    rows = fg.any(dim=2)  # (B, H)
    cols = fg.any(dim=1)  # (B, W)
    nonempty = rows.any(dim=1)
    ys = torch.arange(height, device=alpha.device)
    xs = torch.arange(width, device=alpha.device)
    y0 = torch.where(rows, ys, height).amin(dim=1)
    y1 = torch.where(rows, ys, -1).amax(dim=1)
    x0 = torch.where(cols, xs, width).amin(dim=1)
    x1 = torch.where(cols, xs, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    full = torch.tensor([0, 0, width - 1, height - 1], device=alpha.device)
    return torch.where(nonempty[:, None], boxes, full), nonempty


def sample_swap_params(
    alpha: torch.Tensor,
    labels: torch.Tensor,
    bank_labels: torch.Tensor,
    cfg: SwapConfig | None = None,
    generator: torch.Generator | None = None,
) -> SwapParams:
    """Draw which background and which transform each sample gets.

    All random numbers come from one ``torch.rand`` call on ``generator``'s device (CPU when
    ``generator`` is ``None``, which then uses torch's global RNG) and are moved to ``alpha``'s
    device afterwards, so a CPU generator gives identical params for CPU and CUDA inputs.

    Background choice: with ``cfg.class_uniform`` a class is picked uniformly among the
    classes present in ``bank_labels`` and then a uniform background of that class (the
    paper's rule); otherwise a uniform background of the bank. The drawn class does not depend
    on ``labels``: that independence is what breaks the label-background correlation.

    With ``cfg.keep_in_frame`` the box of ``alpha > 0`` (extended by half a pixel), after the
    transform, stays inside the image: the shift is clipped into the feasible range, and the
    scale is first reduced (possibly below ``cfg.scale[0]``) when the rotated box cannot fit
    at all. Samples whose alpha is empty get the identity transform.

    Args:
        alpha: ``(B, 1, H, W)`` float alpha in ``[0, 1]``, foreground where ``> 0``.
        labels: ``(B,)`` integer class of each sample (validated; not used by the
            class-uniform rule, see above).
        bank_labels: ``(N,)`` integer class of each background in the bank, ``N >= 1``.
        cfg: transform ranges; default :class:`SwapConfig` ``()``.
        generator: source of randomness.

    Returns:
        :class:`SwapParams` on ``alpha``'s device.

    Raises:
        ConfigError: if an input has the wrong type, shape or dtype, or the bank is empty.

    Example:
        >>> alpha = torch.zeros(2, 1, 32, 32)
        >>> alpha[:, :, 8:16, 8:16] = 1.0
        >>> gen = torch.Generator().manual_seed(0)
        >>> params = sample_swap_params(alpha, torch.tensor([0, 1]), torch.tensor([0, 1, 1]),
        ...                             SwapConfig(), gen)
        >>> len(params), params.translate.shape
        (2, torch.Size([2, 2]))
    """
    alpha = _check_alpha(alpha)
    batch, _, height, width = alpha.shape
    _check_int_vector("labels", labels, batch)
    _check_int_vector("bank_labels", bank_labels)
    if bank_labels.shape[0] == 0:
        raise ConfigError("bank_labels is empty: the background bank needs at least 1 entry")
    cfg = SwapConfig() if cfg is None else cfg
    if not isinstance(cfg, SwapConfig):
        raise ConfigError(f"cfg must be a SwapConfig, got {type(cfg).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"generator must be a torch.Generator, got {type(generator).__name__}")

    gen_device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand(
        (batch, 6), generator=generator, device=gen_device, dtype=torch.float64
    ).cpu()

    bank = bank_labels.detach().cpu()
    if cfg.class_uniform:
        _, inverse, counts = torch.unique(bank, return_inverse=True, return_counts=True)
        order = torch.argsort(inverse, stable=True)  # bank indices grouped by class
        starts = torch.cumsum(counts, dim=0) - counts
        cls = (draws[:, 0] * counts.numel()).long().clamp(max=counts.numel() - 1)
        member = (draws[:, 1] * counts[cls]).long().minimum(counts[cls] - 1)
        bg_index = order[starts[cls] + member]
    else:
        bg_index = (draws[:, 0] * bank.numel()).long().clamp(max=bank.numel() - 1)

    low, high = cfg.scale
    scale = low + (high - low) * draws[:, 2]
    angle = cfg.degrees * (2.0 * draws[:, 3] - 1.0)
    shift = cfg.translate * (2.0 * draws[:, 4:6] - 1.0)

    boxes, nonempty = _foreground_boxes(alpha)
    boxes = boxes.cpu().double()
    nonempty = nonempty.cpu()
    if cfg.keep_in_frame:
        scale, shift = _keep_in_frame(boxes, scale, angle, shift, height, width)
    scale = torch.where(nonempty, scale, 1.0)
    angle = torch.where(nonempty, angle, 0.0)
    shift = torch.where(nonempty[:, None], shift, 0.0)

    device = alpha.device
    return SwapParams(
        bg_index=bg_index.to(device),
        scale=scale.float().to(device),
        angle=angle.float().to(device),
        translate=shift.float().to(device),
    )


def _keep_in_frame(
    boxes: torch.Tensor,
    scale: torch.Tensor,
    angle: torch.Tensor,
    shift: torch.Tensor,
    height: int,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reduce scale and clip shift so the transformed boxes stay in ``[-0.5, size - 0.5]``.

    ``boxes`` is ``(B, 4)`` float64 inclusive pixel boxes; returns new ``(scale, shift)``.
    """
    x0, y0, x1, y1 = boxes.unbind(dim=1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w, half_h = (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
    rad = torch.deg2rad(angle)
    cos, sin = rad.cos().abs(), rad.sin().abs()
    unit_x = cos * half_w + sin * half_h  # half extent of the rotated box at scale 1
    unit_y = sin * half_w + cos * half_h
    max_scale = torch.minimum(width / (2 * unit_x), height / (2 * unit_y))
    reduced = scale > max_scale
    if bool(reduced.any()):
        logger.debug("keep_in_frame reduced the scale of %d sample(s)", int(reduced.sum()))
    scale = torch.minimum(scale, max_scale)
    ext_x, ext_y = scale * unit_x, scale * unit_y
    dx = torch.clamp(shift[:, 0], min=ext_x - 0.5 - cx, max=width - 0.5 - ext_x - cx)
    dy = torch.clamp(shift[:, 1], min=ext_y - 0.5 - cy, max=height - 0.5 - ext_y - cy)
    return scale, torch.stack([dx, dy], dim=1)


def _check_batch(fg: object, alpha: object, params: object) -> None:
    if not isinstance(fg, torch.Tensor) or fg.ndim != 4 or not fg.is_floating_point():
        raise ConfigError(f"fg must be a (B, 3, H, W) floating tensor, got {_describe(fg)}")
    alpha = _check_alpha(alpha)
    if alpha.shape[0] != fg.shape[0] or alpha.shape[-2:] != fg.shape[-2:]:
        raise ConfigError(
            f"alpha shape {tuple(alpha.shape)} must be (B, 1, H, W) matching fg {tuple(fg.shape)}"
        )
    if alpha.dtype != fg.dtype or alpha.device != fg.device:
        raise ConfigError(
            f"alpha ({alpha.dtype}, {alpha.device}) must match fg ({fg.dtype}, {fg.device})"
        )
    if not isinstance(params, SwapParams):
        raise ConfigError(f"params must be SwapParams, got {type(params).__name__}")
    if len(params) != fg.shape[0]:
        raise ConfigError(f"params hold {len(params)} samples, fg has batch size {fg.shape[0]}")
    if params.device != fg.device:
        raise ConfigError(f"params are on {params.device}, fg on {fg.device}")


def _sampling_grid(alpha: torch.Tensor, params: SwapParams, dtype: torch.dtype) -> torch.Tensor:
    """``grid_sample``'s ``(B, H, W, 2)`` grid (``align_corners=True``) for each sample's
    transform about its box centre: where each output pixel takes its value from.

    The same grid kornia's ``warp_affine`` builds, written straight from the inverse matrix
    (two multiply-adds per coordinate, no ``affine_grid`` batch matmul), once for the image
    and the alpha together.
    """
    batch, _, height, width = alpha.shape
    device = alpha.device
    # float32 at least (kornia's precision), float64 only for float64 images (no float64 on
    # some accelerators): everything stays on the images' device.
    work = torch.promote_types(dtype, torch.float32)
    boxes, _ = _foreground_boxes(alpha)
    center = torch.stack(
        [(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1
    ).to(work)
    scale = params.scale.to(work)
    forward = get_affine_matrix2d(
        translations=params.translate.to(work),
        center=center,
        scale=torch.stack([scale, scale], dim=1),
        angle=params.angle.to(work),
    )
    # Output pixel -> source pixel: invert [A | t] as [A^-1 | -A^-1 t] (A is 2x2).
    a, b, c, d = forward[:, 0, 0], forward[:, 0, 1], forward[:, 1, 0], forward[:, 1, 1]
    det = a * d - b * c
    linear = torch.stack([torch.stack([d, -b], 1), torch.stack([-c, a], 1)], 1) / det[:, None, None]
    shift = -(linear @ forward[:, :2, 2:])
    inverse = torch.cat([linear, shift], dim=2)  # (B, 2, 3)
    # Fold grid_sample's normalisation (pixel 0 -> -1, pixel size - 1 -> +1) into the matrix.
    norm = torch.tensor(
        [2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=work, device=device
    )
    coef = inverse * norm[None, :, None]
    coef[:, :, 2] -= 1.0
    coef = coef.to(dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    ys = torch.arange(height, device=device, dtype=dtype)
    grid = torch.empty(batch, height, width, 2, device=device, dtype=dtype)
    for k in range(2):  # grid[..., k] = coef[k, 0] * x + (coef[k, 1] * y + coef[k, 2])
        rows = torch.addcmul(coef[:, k, 2, None], coef[:, k, 1, None], ys)  # (B, H)
        torch.add(coef[:, k, 0, None, None] * xs, rows[:, :, None], out=grid[..., k])
    return grid


def _identity_rows(params: SwapParams) -> torch.Tensor:
    return (params.scale == 1) & (params.angle == 0) & (params.translate == 0).all(dim=1)


def warp_foreground(
    fg: torch.Tensor, alpha: torch.Tensor, params: SwapParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply each sample's scale/rotation/shift to its image and alpha together.

    The transform is about the centre of the box of ``alpha > 0`` (see the module docstring).
    The image is resampled bilinearly (border values outside), the alpha nearest-neighbour
    (zeros outside) so a hard 0/1 alpha stays hard; both read one sampling grid. Samples with
    identity params (scale 1, angle 0, no shift) are returned exactly unchanged.

    Args:
        fg: ``(B, C, H, W)`` float image in ``[0, 1]``: the full source image, not
            premultiplied; ``alpha`` selects the object in it.
        alpha: ``(B, 1, H, W)`` float alpha in ``[0, 1]``, same dtype and device as ``fg``.
        params: :class:`SwapParams` for ``B`` samples on ``fg``'s device.

    Returns:
        ``(warped_fg, warped_alpha)`` with the shapes, dtype and device of ``fg`` and ``alpha``.

    Raises:
        ConfigError: on shape, dtype, device or batch-size mismatches (message has the values).

    Example:
        >>> fg, alpha = torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)
        >>> _, warped = warp_foreground(fg, alpha, SwapParams.identity(torch.tensor([0])))
        >>> torch.equal(warped, alpha)
        True
    """
    _check_batch(fg, alpha, params)
    return _warp(fg, alpha, params)


def _warp(
    fg: torch.Tensor, alpha: torch.Tensor, params: SwapParams
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`warp_foreground` on checked inputs."""
    grid = _sampling_grid(alpha, params, fg.dtype)
    warped_fg = F.grid_sample(fg, grid, mode="bilinear", padding_mode="border", align_corners=True)
    warped_alpha = F.grid_sample(
        alpha, grid, mode="nearest", padding_mode="zeros", align_corners=True
    )
    # Resampling at unmoved pixel centres is off by ~1e-6; make the identity an exact no-op
    # (only where there is one: p = 1 training draws none, and the copy costs a full frame).
    identity = _identity_rows(params)
    if bool(identity.any()):
        keep = identity.view(-1, 1, 1, 1)
        warped_fg = torch.where(keep, fg, warped_fg)
        warped_alpha = torch.where(keep, alpha, warped_alpha)
    return warped_fg, warped_alpha


def _check_backgrounds(fg: torch.Tensor, backgrounds: object) -> None:
    if not isinstance(backgrounds, torch.Tensor) or backgrounds.ndim != 4:
        raise ConfigError(
            f"backgrounds must be an (N, 3, H, W) tensor, got {_describe(backgrounds)}"
        )
    if backgrounds.shape[1:] != fg.shape[1:]:
        raise ConfigError(
            f"backgrounds shape {tuple(backgrounds.shape)} must be (N, C, H, W) matching fg "
            f"{tuple(fg.shape)}"
        )
    if backgrounds.dtype != fg.dtype or backgrounds.device != fg.device:
        raise ConfigError(
            f"backgrounds ({backgrounds.dtype}, {backgrounds.device}) must match fg "
            f"({fg.dtype}, {fg.device})"
        )


def _paste(
    fg: torch.Tensor,
    alpha: torch.Tensor,
    out: torch.Tensor,
    params: SwapParams,
    feather_sigma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp and blend onto ``out`` (one background per sample), in place; checked inputs."""
    if not _is_number(feather_sigma) or feather_sigma < 0:
        raise ConfigError(f"feather_sigma must be a number >= 0, got {feather_sigma!r}")
    warped_fg, warped_alpha = _warp(fg, alpha, params)
    used_alpha = warped_alpha
    if feather_sigma != 0:
        used_alpha = feather_mask(warped_alpha, feather_sigma) * warped_alpha
    # lerp is exact at 0 and 1: a hard alpha copies foreground or background bit for bit.
    return out.lerp_(warped_fg, used_alpha), used_alpha


def paste_foregrounds(
    fg: torch.Tensor,
    alpha: torch.Tensor,
    backgrounds: torch.Tensor,
    params: SwapParams,
    feather_sigma: float = 0.0,
    *,
    inplace: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`swap_backgrounds` with the backgrounds already chosen: sample ``i`` goes on
    ``backgrounds[i]`` (``params.bg_index`` is not used).

    With ``inplace=True`` the composites are written into ``backgrounds`` (which must then be
    a tensor the caller owns, e.g. fresh from a gather) and no full-frame copy is made.

    Args:
        fg: ``(B, 3, H, W)`` float image in ``[0, 1]``.
        alpha: ``(B, 1, H, W)`` float alpha in ``[0, 1]``.
        backgrounds: ``(B, 3, H, W)`` float backgrounds in ``[0, 1]``, same dtype and device.
        params: :class:`SwapParams` for ``B`` samples.
        feather_sigma: inward feathering sigma in pixels, ``>= 0``.
        inplace: write into ``backgrounds``.

    Returns:
        ``(images, used_alpha)`` as :func:`swap_backgrounds`.

    Raises:
        ConfigError: on shape, dtype, device or batch-size mismatches, or a negative
            ``feather_sigma``.

    Example:
        >>> fg, bg = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
        >>> alpha = torch.zeros(1, 1, 4, 4)
        >>> alpha[..., 1:3, 1:3] = 1.0
        >>> images, _ = paste_foregrounds(fg, alpha, bg, SwapParams.identity(torch.tensor([0])))
        >>> int(images.sum()), int(bg.sum())
        (12, 0)
    """
    _check_batch(fg, alpha, params)
    _check_backgrounds(fg, backgrounds)
    if backgrounds.shape[0] != fg.shape[0]:
        raise ConfigError(
            f"backgrounds must hold one background per sample ({fg.shape[0]}), "
            f"got {backgrounds.shape[0]}"
        )
    out = backgrounds if inplace else backgrounds.clone()
    return _paste(fg, alpha, out, params, feather_sigma)


def swap_backgrounds(
    fg: torch.Tensor,
    alpha: torch.Tensor,
    backgrounds: torch.Tensor,
    params: SwapParams,
    feather_sigma: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste each warped foreground on its chosen background.

    ``out = a * warped_fg + (1 - a) * backgrounds[params.bg_index]``. With the default
    ``feather_sigma=0`` the warped alpha is used as is: a hard 0/1 alpha (the paper's setting)
    stays hard. With ``feather_sigma > 0`` the alpha is feathered **inward**
    (``blur(a) * a``) so that no pixel outside the object's mask takes colour from the source
    image, which would leak the original (spurious) background.

    Args:
        fg: ``(B, 3, H, W)`` float image in ``[0, 1]`` (the full source image).
        alpha: ``(B, 1, H, W)`` float alpha in ``[0, 1]`` (e.g. the tight mask).
        backgrounds: ``(N, 3, H, W)`` float bank of backgrounds in ``[0, 1]``, same dtype and
            device as ``fg``.
        params: :class:`SwapParams` for ``B`` samples, ``0 <= bg_index < N``.
        feather_sigma: Gaussian sigma in pixels for the inward feathering, ``>= 0``.

    Returns:
        ``(images, used_alpha)``: ``(B, 3, H, W)`` composites in ``[0, 1]`` and the
        ``(B, 1, H, W)`` alpha they were blended with (warped, and feathered if asked).

    Raises:
        ConfigError: on shape, dtype, device or batch-size mismatches, a ``bg_index`` outside
            ``[0, N)``, or a negative ``feather_sigma``.

    Example:
        >>> fg, bg = torch.ones(1, 3, 4, 4), torch.zeros(2, 3, 4, 4)
        >>> alpha = torch.zeros(1, 1, 4, 4)
        >>> alpha[..., 1:3, 1:3] = 1.0
        >>> images, _ = swap_backgrounds(fg, alpha, bg, SwapParams.identity(torch.tensor([1])))
        >>> images[0, 0]
        tensor([[0., 0., 0., 0.],
                [0., 1., 1., 0.],
                [0., 1., 1., 0.],
                [0., 0., 0., 0.]])
    """
    _check_batch(fg, alpha, params)
    _check_backgrounds(fg, backgrounds)
    n_bank = backgrounds.shape[0]
    if len(params):
        low, high = int(params.bg_index.min()), int(params.bg_index.max())
        if low < 0 or high >= n_bank:
            raise ConfigError(
                f"params.bg_index must be in [0, {n_bank}), got range [{low}, {high}]"
            )
    chosen = backgrounds.index_select(0, params.bg_index)  # a fresh tensor: blend into it
    return _paste(fg, alpha, chosen, params, feather_sigma)


class BackgroundSwap(nn.Module):
    """Module form of :func:`sample_swap_params` followed by :func:`swap_backgrounds`.

    Args:
        cfg: transform ranges; default :class:`SwapConfig` ``()``.
        feather_sigma: inward feathering sigma in pixels (0 = hard alpha, the paper's).

    Raises:
        ConfigError: if ``cfg`` is not a :class:`SwapConfig` or ``feather_sigma`` is negative.

    Example:
        >>> swap = BackgroundSwap(SwapConfig())
        >>> fg, alpha = torch.rand(2, 3, 16, 16), torch.zeros(2, 1, 16, 16)
        >>> alpha[..., 4:8, 4:8] = 1.0
        >>> images, params = swap(fg, alpha, torch.tensor([0, 1]), torch.rand(3, 3, 16, 16),
        ...                       torch.tensor([0, 0, 1]), torch.Generator().manual_seed(0))
        >>> images.shape, len(params)
        (torch.Size([2, 3, 16, 16]), 2)
    """

    def __init__(self, cfg: SwapConfig | None = None, feather_sigma: float = 0.0) -> None:
        super().__init__()
        cfg = SwapConfig() if cfg is None else cfg
        if not isinstance(cfg, SwapConfig):
            raise ConfigError(f"cfg must be a SwapConfig, got {type(cfg).__name__}")
        if not _is_number(feather_sigma) or feather_sigma < 0:
            raise ConfigError(f"feather_sigma must be a number >= 0, got {feather_sigma!r}")
        self.cfg = cfg
        self.feather_sigma = float(feather_sigma)

    def forward(
        self,
        fg: torch.Tensor,
        alpha: torch.Tensor,
        labels: torch.Tensor,
        backgrounds: torch.Tensor,
        bank_labels: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, SwapParams]:
        """Sample params and composite; returns ``(images (B, 3, H, W), params)``.

        Raises:
            ConfigError: as the two functions, or if ``bank_labels`` and ``backgrounds``
                differ in length.
        """
        if (
            isinstance(bank_labels, torch.Tensor)
            and isinstance(backgrounds, torch.Tensor)
            and bank_labels.shape[:1] != backgrounds.shape[:1]
        ):
            raise ConfigError(
                f"bank_labels has {bank_labels.shape[0]} entries, backgrounds "
                f"{backgrounds.shape[0]}"
            )
        params = sample_swap_params(alpha, labels, bank_labels, self.cfg, generator)
        images, _ = swap_backgrounds(fg, alpha, backgrounds, params, self.feather_sigma)
        return images, params

    def extra_repr(self) -> str:
        return f"cfg={self.cfg}, feather_sigma={self.feather_sigma}"
