"""The backgrounds-challenge variants of an image (Xiao et al. 2020, ImageNet-9), batched.

Each image of a disentangled data set comes with its tight foreground alpha and its
inpainted background, so every variant of the challenge can be built from it:

==================  =====================================================================
variant             pixels
==================  =====================================================================
``original``        the image
``only_fg_black``   the foreground on black
``only_fg_mean``    the foreground on a canvas of the image's mean colour
``only_bg``         the image's own inpainted background (the object removed)
``mixed_same``      the foreground on the background of another image ``j != i`` of the
                    same class
``mixed_rand``      the foreground on the background of a random other image ``j != i``
``mixed_next``      the foreground on the background of an image of class ``(y + 1) mod K``
==================  =====================================================================

Randomness is kept apart from application, as :mod:`abs_ray.ops.swap_params` does:
:func:`sample_partners` draws which image lends its background to each row
(:class:`PartnerParams`, indices into a *bank*: the labelled backgrounds of the whole split
being audited, not only the batch) from a seeded ``torch.Generator``;
:func:`apply_variants` (bank in memory) and :func:`composite_variants` (partners' backgrounds
already gathered per row, as the Ray stage receives them) build the variants
deterministically. Compositing is :func:`abs_ray.ops.paste_foregrounds` with identity params:
``fg * alpha + bg * (1 - alpha)``, exact where the alpha is 0 or 1.

A row without a partner (the only image of its class for ``mixed_same``, a one-class data
set for ``mixed_next``, a one-image bank for ``mixed_rand``) has index ``-1`` and is marked
invalid: its pixels are the zero image and the metrics leave it out (and say how many).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import SwapParams, paste_foregrounds
from abs_ray.ops._checks import check_alpha, check_int_vector, describe

__all__ = [
    "MIXED_VARIANTS",
    "VARIANTS",
    "PartnerParams",
    "apply_variants",
    "composite_variants",
    "sample_partners",
]

#: Every variant, in report order.
VARIANTS: tuple[str, ...] = (
    "original",
    "only_fg_black",
    "only_fg_mean",
    "only_bg",
    "mixed_same",
    "mixed_rand",
    "mixed_next",
)
#: The variants that take another image's background (and may have no partner).
MIXED_VARIANTS: tuple[str, ...] = ("mixed_same", "mixed_rand", "mixed_next")


@dataclass(frozen=True, eq=False)
class PartnerParams:
    """Which bank entry lends its background to each of ``B`` rows, per mixed variant.

    Attributes:
        same: ``(B,)`` long index into the bank (same class, not the row itself), ``-1``: none.
        rand: ``(B,)`` long index into the bank (any entry but the row itself), ``-1``: none.
        next: ``(B,)`` long index into the bank (class ``(y + 1) mod K``), ``-1``: none.

    Raises:
        ConfigError: tensors that are not ``(B,)`` long on one device.

    Example:
        >>> p = PartnerParams(torch.tensor([1, -1]), torch.tensor([1, 0]), torch.tensor([0, 1]))
        >>> p.valid("mixed_same").tolist(), len(p)
        ([True, False], 2)
    """

    same: torch.Tensor
    rand: torch.Tensor
    next: torch.Tensor

    def __post_init__(self) -> None:
        tensors = (self.same, self.rand, self.next)
        for name, value in zip(("same", "rand", "next"), tensors, strict=True):
            if not isinstance(value, torch.Tensor) or value.ndim != 1 or value.dtype != torch.long:
                raise ConfigError(
                    f"PartnerParams.{name} must be a (B,) long tensor, got {describe(value)}"
                )
        if len({t.shape[0] for t in tensors}) != 1 or len({str(t.device) for t in tensors}) != 1:
            raise ConfigError(
                "PartnerParams tensors must share one length and device, got "
                f"{[describe(t) for t in tensors]}"
            )

    def __len__(self) -> int:
        return int(self.same.shape[0])

    def index(self, variant: str) -> torch.Tensor:
        """The ``(B,)`` partner indices of a mixed variant (``-1``: no partner).

        Raises:
            ConfigError: not one of :data:`MIXED_VARIANTS`.
        """
        if variant not in MIXED_VARIANTS:
            raise ConfigError(
                f"variant must be one of {', '.join(MIXED_VARIANTS)}, got {variant!r}"
            )
        return getattr(self, variant.removeprefix("mixed_"))

    def valid(self, variant: str) -> torch.Tensor:
        """``(B,)`` bool: the rows of ``variant`` that can be built (every row for the others).

        Raises:
            ConfigError: an unknown variant.
        """
        if variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if variant not in MIXED_VARIANTS:
            return torch.ones(len(self), dtype=torch.bool, device=self.same.device)
        return self.index(variant) >= 0

    def to(self, device: torch.device | str) -> PartnerParams:
        """The same params on ``device``."""
        return PartnerParams(self.same.to(device), self.rand.to(device), self.next.to(device))


def _pick(
    candidates: torch.Tensor,
    start: torch.Tensor,
    count: torch.Tensor,
    u: torch.Tensor,
    skip: torch.Tensor,
) -> torch.Tensor:
    """Per row, ``candidates[start + k]`` for ``k`` uniform (from ``u`` in ``[0, 1)``) among
    ``count`` slots, stepping over slot ``skip`` (``-1``: none); ``-1`` where ``count == 0``."""
    k = torch.minimum((u * count).long(), (count - 1).clamp(min=0))
    k = k + ((skip >= 0) & (k >= skip)).long()
    if candidates.shape[0] == 0:
        return torch.full_like(count, -1)
    picked = candidates[(start + k).clamp(0, candidates.shape[0] - 1)]
    return torch.where(count > 0, picked, torch.full_like(picked, -1))


def _check_sampling(labels: object, bank_labels: object, self_index: object) -> None:
    check_int_vector("labels", labels)
    check_int_vector("bank_labels", bank_labels)
    if self_index is not None:
        check_int_vector("self_index", self_index, labels.shape[0])
    if bank_labels.numel() and int(bank_labels.min()) < 0:
        raise ConfigError(f"bank_labels must be >= 0, got minimum {int(bank_labels.min())}")
    if labels.numel() and int(labels.min()) < 0:
        raise ConfigError(f"labels must be >= 0, got minimum {int(labels.min())}")


def sample_partners(
    labels: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    generator: torch.Generator | None = None,
    self_index: torch.Tensor | None = None,
) -> PartnerParams:
    """Draw, for each row, the bank entry whose background each mixed variant uses.

    ``mixed_same``: uniform over the bank entries of the row's class except the row itself;
    ``mixed_rand``: uniform over the bank except the row itself; ``mixed_next``: uniform over
    the entries of class ``(y + 1) mod K`` (none when ``K == 1``). Uniform draws come from
    ``generator`` (CPU): the same seed and inputs give the same partners on any device.

    Args:
        labels: ``(B,)`` integer classes of the rows, in ``[0, num_classes)``.
        bank_labels: ``(N,)`` integer classes of the bank's backgrounds (usually the whole
            split, with ``labels = bank_labels`` and ``self_index = arange(N)``).
        num_classes: ``K``, the number of classes of the data set, ``>= 1``.
        generator: a CPU ``torch.Generator`` (default: torch's global one).
        self_index: ``(B,)`` each row's own index in the bank, ``-1`` where it has none
            (default: every ``-1``: no entry is excluded).

    Returns:
        :class:`PartnerParams` on ``labels``' device; ``-1`` where no partner exists.

    Raises:
        ConfigError: non-integer or negative labels, labels ``>= num_classes``, a
            ``self_index`` of the wrong length or outside ``[-1, N)``.

    Example:
        >>> labels = torch.tensor([0, 0, 1])
        >>> p = sample_partners(labels, labels, 2, torch.Generator().manual_seed(0),
        ...                     self_index=torch.arange(3))
        >>> p.same.tolist(), labels[p.next].tolist()  # class 1 has one image: no same partner
        ([1, 0, -1], [1, 1, 0])
    """
    _check_sampling(labels, bank_labels, self_index)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an int >= 1, got {num_classes!r}")
    top = max([int(t.max()) for t in (labels, bank_labels) if t.numel()], default=-1)
    if top >= num_classes:
        raise ConfigError(f"labels must be < num_classes {num_classes}, got {top}")
    y, bank = labels.cpu().long(), bank_labels.cpu().long()
    n, b = bank.shape[0], y.shape[0]
    own = torch.full((b,), -1, dtype=torch.long) if self_index is None else self_index.cpu().long()
    if own.numel() and (int(own.min()) < -1 or int(own.max()) >= n):
        raise ConfigError(
            f"self_index must be in [-1, {n}), got [{int(own.min())}, {int(own.max())}]"
        )
    u = torch.rand(3, b, generator=generator, dtype=torch.float64)
    order = torch.argsort(bank, stable=True)  # bank indices grouped by class
    counts = torch.bincount(bank, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n)
    inside = own >= 0
    # mixed_same: the class's entries without the row itself: draw among count - 1 slots and
    # step over the row's own slot in its class.
    has_self = inside & (bank[own.clamp(min=0)] == y) if n else inside
    count = counts[y] - has_self.long()
    slot = rank[own.clamp(min=0)] - starts[y] if n else own
    same = _pick(order, starts[y], count, u[0], torch.where(has_self, slot, -1))
    # mixed_rand: any entry but the row itself (bank order, step over its own index).
    count = torch.full((b,), n, dtype=torch.long) - inside.long()
    rand = _pick(torch.arange(n), torch.zeros(b, dtype=torch.long), count, u[1], own)
    # mixed_next: an entry of the next class (none with one class: it would be the same).
    nxt = (y + 1) % num_classes
    count = counts[nxt] if num_classes > 1 else torch.zeros(b, dtype=torch.long)
    nxt_index = _pick(order, starts[nxt], count, u[2], torch.full((b,), -1))
    device = labels.device
    return PartnerParams(same.to(device), rand.to(device), nxt_index.to(device))


def _check_images(images: object, alpha: object, backgrounds: object) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"images must be a (B, 3, H, W) float tensor, got {describe(images)}")
    if not images.is_floating_point():
        raise ConfigError(f"images must be floating in [0, 1], got {describe(images)}")
    check_alpha(alpha)
    for name, value, channels in (("alpha", alpha, 1), ("backgrounds", backgrounds, 3)):
        if (
            not isinstance(value, torch.Tensor)
            or tuple(value.shape) != (images.shape[0], channels, *images.shape[2:])
            or value.dtype != images.dtype
            or value.device != images.device
        ):
            raise ConfigError(
                f"{name} must be ({images.shape[0]}, {channels}, {images.shape[2]}, "
                f"{images.shape[3]}) {images.dtype} on {images.device} like images, "
                f"got {describe(value)}"
            )


def composite_variants(
    images: torch.Tensor,
    alpha: torch.Tensor,
    backgrounds: torch.Tensor,
    partner_backgrounds: dict[str, torch.Tensor],
    valid: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Every variant of a batch, the mixed variants' backgrounds already gathered per row.

    Args:
        images: ``(B, 3, H, W)`` float images in ``[0, 1]``.
        alpha: ``(B, 1, H, W)`` float tight foreground alpha in ``[0, 1]``, like ``images``.
        backgrounds: ``(B, 3, H, W)`` each image's own inpainted background in ``[0, 1]``.
        partner_backgrounds: for each of :data:`MIXED_VARIANTS`, ``(B, 3, H, W)``: row
            ``i``'s partner background (anything where the row is invalid).
        valid: for each mixed variant, ``(B,)`` bool rows that have a partner; their others
            are set to zeros (default: every row valid).

    Returns:
        ``{variant: (B, 3, H, W)}`` for every name in :data:`VARIANTS`, dtype and device of
        ``images``.

    Raises:
        ConfigError: shapes, dtypes or devices that do not match, or a missing mixed variant.

    Example:
        >>> img, bg = torch.ones(1, 3, 4, 4), torch.zeros(1, 3, 4, 4)
        >>> a = torch.zeros(1, 1, 4, 4)
        >>> a[..., :2, :] = 1.0
        >>> out = composite_variants(img, a, bg, {v: bg + 0.5 for v in MIXED_VARIANTS})
        >>> out["mixed_rand"][0, 0, :, 0].tolist(), out["only_bg"].sum().item()
        ([1.0, 1.0, 0.5, 0.5], 0.0)
    """
    _check_images(images, alpha, backgrounds)
    missing = [v for v in MIXED_VARIANTS if v not in (partner_backgrounds or {})]
    if missing:
        raise ConfigError(f"partner_backgrounds lacks {', '.join(missing)}")
    for v in MIXED_VARIANTS:
        _check_images(images, alpha, partner_backgrounds[v])
    identity = SwapParams.identity(torch.zeros(images.shape[0], dtype=torch.long).to(images.device))
    mean = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    canvases = {
        "only_fg_black": torch.zeros_like(images),
        "only_fg_mean": mean.clone(),
        **{v: partner_backgrounds[v].clone() for v in MIXED_VARIANTS},
    }
    out = {"original": images, "only_bg": backgrounds}
    for name, canvas in canvases.items():
        out[name], _ = paste_foregrounds(images, alpha, canvas, identity, inplace=True)
        if valid is not None and name in valid:
            keep = valid[name].to(device=images.device, dtype=torch.bool).view(-1, 1, 1, 1)
            out[name] = torch.where(keep, out[name], torch.zeros_like(out[name]))
    return {v: out[v] for v in VARIANTS}


def apply_variants(
    images: torch.Tensor,
    alpha: torch.Tensor,
    backgrounds: torch.Tensor,
    bank: torch.Tensor,
    params: PartnerParams,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Every variant of a batch, the partners' backgrounds taken from ``bank`` by ``params``.

    Args:
        images, alpha, backgrounds: as :func:`composite_variants`.
        bank: ``(N, 3, H, W)`` the split's backgrounds (what ``params`` index), like ``images``.
        params: from :func:`sample_partners` for these ``B`` rows.

    Returns:
        ``(variants, valid)``: ``{variant: (B, 3, H, W)}`` and ``{variant: (B,) bool}`` (rows
        without a partner are invalid, their pixels zero).

    Raises:
        ConfigError: mismatched shapes, dtypes or devices, or indices outside ``[-1, N)``.

    Example:
        >>> labels = torch.tensor([0, 0])
        >>> p = sample_partners(labels, labels, 1, torch.Generator().manual_seed(0),
        ...                     self_index=torch.arange(2))
        >>> bank = torch.rand(2, 3, 4, 4)
        >>> v, ok = apply_variants(torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 4, 4), bank, bank, p)
        >>> torch.equal(v["mixed_same"], bank.flip(0)), ok["mixed_next"].tolist()
        (True, [False, False])
    """
    _check_images(images, alpha, backgrounds)
    if not isinstance(params, PartnerParams) or len(params) != images.shape[0]:
        raise ConfigError(
            f"params must be PartnerParams for {images.shape[0]} rows, got {params!r:.80}"
        )
    if (
        not isinstance(bank, torch.Tensor)
        or bank.ndim != 4
        or bank.shape[1:] != images.shape[1:]
        or bank.dtype != images.dtype
        or bank.device != images.device
    ):
        raise ConfigError(
            f"bank must be (N, {', '.join(map(str, images.shape[1:]))}) {images.dtype} on "
            f"{images.device}, got {describe(bank)}"
        )
    params = params.to(images.device)
    valid, gathered = {}, {}
    for v in MIXED_VARIANTS:
        index = params.index(v)
        if index.numel() and (int(index.min()) < -1 or int(index.max()) >= bank.shape[0]):
            raise ConfigError(f"{v} partner indices must be in [-1, {bank.shape[0]})")
        valid[v] = index >= 0
        if bank.shape[0]:
            gathered[v] = bank.index_select(0, index.clamp(min=0))
        else:  # an empty bank: no row has a partner
            gathered[v] = torch.zeros_like(images)
    variants = composite_variants(images, alpha, backgrounds, gathered, valid)
    return variants, {v: params.valid(v) for v in VARIANTS}
