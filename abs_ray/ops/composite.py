"""Background swapping: paste each sample's foreground, transformed, on another background.

This is stage 3 of AutoBackSwap, as kornia writes an augmentation: functions first
(:func:`warp_foreground`, :func:`paste_foregrounds`, :func:`swap_backgrounds`) that apply a
:class:`~abs_ray.ops.SwapParams` deterministically to the image and its alpha together, and a
thin module (:class:`BackgroundSwap`) that draws the params with
:func:`~abs_ray.ops.sample_swap_params` and calls them. The params, and the geometry of the
transform (about the centre of the foreground's box), are in :mod:`abs_ray.ops.swap_params`.
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import get_affine_matrix2d
from torch import nn
from torch.nn import functional as F

from abs_ray.errors import ConfigError
from abs_ray.ops._checks import check_alpha, describe, is_number
from abs_ray.ops.masks import feather_mask
from abs_ray.ops.swap_params import SwapConfig, SwapParams, foreground_boxes, sample_swap_params

__all__ = [
    "BackgroundSwap",
    "paste_foregrounds",
    "swap_backgrounds",
    "warp_foreground",
]


def _check_batch(fg: object, alpha: object, params: object) -> None:
    if not isinstance(fg, torch.Tensor) or fg.ndim != 4 or not fg.is_floating_point():
        raise ConfigError(f"fg must be a (B, 3, H, W) floating tensor, got {describe(fg)}")
    alpha = check_alpha(alpha)
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
    and the alpha together. Hand-written because it is faster: kornia's ``warp_affine``
    twice (image, alpha) took 1.7-2.6x the time at 1 thread and 2.0-2.1x at 2 threads on
    32 x 224² (``bench/results/augment.json``, part ``swap_warp``).
    """
    batch, _, height, width = alpha.shape
    device = alpha.device
    # float32 at least (kornia's precision), float64 only for float64 images (no float64 on
    # some accelerators): everything stays on the images' device.
    work = torch.promote_types(dtype, torch.float32)
    boxes, _ = foreground_boxes(alpha)
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

    The transform is about the centre of the box of ``alpha > 0`` (see :mod:`abs_ray.ops.swap_params`).
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
            f"backgrounds must be an (N, 3, H, W) tensor, got {describe(backgrounds)}"
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
    if not is_number(feather_sigma) or feather_sigma < 0:
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
        if not is_number(feather_sigma) or feather_sigma < 0:
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
