"""Swap parameters: which background and which transform each sample gets, drawn apart from
their application.

Randomness is kept apart from application (as kornia's ``forward_parameters`` /
``apply_transform``):

1. :func:`sample_swap_params` draws a :class:`SwapParams` (which background, scale, angle,
   shift) from an explicit ``torch.Generator``, within the ranges of a :class:`SwapConfig`;
2. :func:`abs_ray.ops.warp_foreground` and :func:`abs_ray.ops.swap_backgrounds` apply them
   deterministically to the image and its alpha together (:mod:`abs_ray.ops.composite`).

:meth:`SwapParams.to_records` turns the draw into plain numbers that can be stored with the
sample and turned back with :meth:`SwapParams.from_records` to replay it exactly.

Geometry (what the numbers mean): the transform is ``p' = R(angle) * scale * (p - c) + c + t``
in pixel coordinates (pixel centres at integer positions, origin top-left), where ``c`` is the
centre of the foreground's bounding box (pixels with ``alpha > 0``, :func:`foreground_boxes`)
and ``t = (dx, dy)``. ``angle`` follows ``kornia.geometry.transform.get_affine_matrix2d``
(degrees, positive = clockwise as displayed).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from abs_ray.errors import ConfigError
from abs_ray.ops._checks import check_alpha, check_int_vector, describe, is_number

__all__ = [
    "RECORD_KEYS",
    "SwapConfig",
    "SwapParams",
    "foreground_boxes",
    "sample_swap_params",
]

logger = logging.getLogger(__name__)

#: The keys of one sample's record (:meth:`SwapParams.to_records`).
RECORD_KEYS = ("bg_index", "scale", "angle", "dx", "dy")


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
        if not (isinstance(scale, tuple | list) and len(scale) == 2 and all(map(is_number, scale))):
            raise ConfigError(f"scale must be a (low, high) pair of numbers, got {scale!r}")
        low, high = float(scale[0]), float(scale[1])
        if not 0.0 < low <= high:
            raise ConfigError(f"scale range must satisfy 0 < low <= high, got ({low}, {high})")
        if not is_number(self.degrees) or not 0.0 <= self.degrees <= 180.0:
            raise ConfigError(f"degrees must be in [0, 180], got {self.degrees!r}")
        if not is_number(self.translate) or self.translate < 0:
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
                raise ConfigError(f"SwapParams.{name} must be a tensor, got {describe(value)}")
        batch = self.bg_index.shape[0] if self.bg_index.ndim == 1 else -1
        if self.bg_index.ndim != 1 or self.bg_index.dtype != torch.long:
            raise ConfigError(
                f"SwapParams.bg_index must be a (B,) long tensor, got {describe(self.bg_index)}"
            )
        expected = {"scale": (batch,), "angle": (batch,), "translate": (batch, 2)}
        for name, shape in expected.items():
            value = fields[name]
            if tuple(value.shape) != shape or not value.is_floating_point():
                raise ConfigError(
                    f"SwapParams.{name} must be a floating tensor of shape {shape}, "
                    f"got {describe(value)}"
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
            raise ConfigError(f"bg_index must be a (B,) long tensor, got {describe(bg_index)}")
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
                if not is_number(value):
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


def foreground_boxes(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes of ``alpha > 0``: the boxes the swap transform is centred on.

    Args:
        alpha: ``(B, 1, H, W)`` float alpha, foreground where ``> 0``.

    Returns:
        ``(boxes, nonempty)``: ``(B, 4)`` long ``(x0, y0, x1, y1)`` inclusive pixel corners on
        ``alpha``'s device, and ``(B,)`` bool, False for an empty alpha (whose box is then the
        whole image, ``(0, 0, W - 1, H - 1)``).

    Example:
        >>> alpha = torch.zeros(2, 1, 8, 8)
        >>> alpha[0, :, 2:4, 5:8] = 1.0
        >>> boxes, nonempty = foreground_boxes(alpha)
        >>> boxes.tolist(), nonempty.tolist()
        ([[5, 2, 7, 3], [0, 0, 7, 7]], [True, False])
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
    alpha = check_alpha(alpha)
    batch, _, height, width = alpha.shape
    check_int_vector("labels", labels, batch)
    check_int_vector("bank_labels", bank_labels)
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

    bg_index = _pick_backgrounds(draws[:, :2], bank_labels.detach().cpu(), cfg.class_uniform)
    low, high = cfg.scale
    scale = low + (high - low) * draws[:, 2]
    angle = cfg.degrees * (2.0 * draws[:, 3] - 1.0)
    shift = cfg.translate * (2.0 * draws[:, 4:6] - 1.0)

    boxes, nonempty = foreground_boxes(alpha)
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


def _pick_backgrounds(
    uniform: torch.Tensor, bank_labels: torch.Tensor, class_uniform: bool
) -> torch.Tensor:
    """Bank indices from ``(B, 2)`` uniform draws in ``[0, 1)`` (CPU): a class uniformly among
    those in ``bank_labels`` (``(N,)`` CPU), then a uniform member of it (first column: the
    class, second: the member); without ``class_uniform``, a uniform entry of the bank."""
    if not class_uniform:
        return (uniform[:, 0] * bank_labels.numel()).long().clamp(max=bank_labels.numel() - 1)
    _, inverse, counts = torch.unique(bank_labels, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)  # bank indices grouped by class
    starts = torch.cumsum(counts, dim=0) - counts
    cls = (uniform[:, 0] * counts.numel()).long().clamp(max=counts.numel() - 1)
    member = (uniform[:, 1] * counts[cls]).long().minimum(counts[cls] - 1)
    return order[starts[cls] + member]


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
