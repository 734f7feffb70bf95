"""The training-time augmentation, on the worker's device: background swap, then crop and flip.

For ``abs``/``oracle`` every sample, every time it is drawn (with probability ``swap_prob``),
gets its tight foreground pasted, randomly scaled/rotated/shifted, on a background drawn
class-uniformly from a :class:`RecentBackgrounds` (the current batch's inpainted backgrounds plus
recent batches'), via :func:`abs_ray.ops.sample_swap_params` and
:func:`abs_ray.ops.swap_backgrounds`. Then, for every method, RandomResizedCrop (area
``crop_scale``, aspect 3/4-4/3) back to the input size and a horizontal flip, as in the paper.

``erm_aug`` (the strong-augmentation baseline) instead gets :func:`heavy_augment`: colour
jitter and RandAugment before the crop, CutMix after it.

Randomness is kept apart from application: :func:`sample_crop_params` draws boxes and flips
from an explicit generator; :func:`apply_crop` applies them. (RandAugment and the colour
jitter draw from torch's global generator, which each worker seeds from the run's seed.)

kornia or hand code (``bench/augment.py``, 32 x 3 x 224² on the 2-core CPU, 1 and 2 threads,
``bench/results/augment.json``): the crop is kornia's ``crop_and_resize``, the colour jitter
and RandAugment are kornia's; the crop draw, the flip and CutMix stay hand-written because
kornia's counterparts were slower or lose the replayable draw (see each function).

Example:
    >>> images = torch.rand(2, 3, 16, 16)
    >>> gen = torch.Generator().manual_seed(0)
    >>> crop = sample_crop_params(2, 16, 16, (0.7, 1.0), True, gen)
    >>> apply_crop(images, crop, 16).shape
    torch.Size([2, 3, 16, 16])
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from kornia.geometry.transform import crop_and_resize

from abs_ray.errors import ConfigError
from abs_ray.ops import (
    SwapConfig,
    SwapParams,
    paste_foregrounds,
    sample_swap_params,
    to_float_chw,
    to_uint8_hwc,
)

__all__ = [
    "RecentBackgrounds",
    "CropParams",
    "CutMix",
    "apply_crop",
    "cutmix",
    "heavy_augment",
    "sample_crop_params",
    "sample_grid",
    "swap_batch",
    "to_float",
]

_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))


#: Kept for callers of the earlier name; the conversion is :func:`abs_ray.ops.to_float_chw`.
to_float = to_float_chw


class RecentBackgrounds:
    """A ring buffer of recent backgrounds (uint8, on one device) and their class labels: what
    a training worker swaps foregrounds onto. (Not :class:`abs_ray.serve.bank.BackgroundBank`,
    the service's store of a pipeline output.)

    Storing uint8 keeps 256 backgrounds at 224 px under 40 MB; only the drawn ones are
    converted to float.

    Args:
        capacity: backgrounds kept, ``>= 1``.

    Example:
        >>> bank = RecentBackgrounds(3)
        >>> bank.add(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1]))
        >>> bank.add(torch.ones(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([1, 1]))
        >>> len(bank), bank.labels.tolist()
        (3, [1, 1, 1])
    """

    def __init__(self, capacity: int) -> None:
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"bank capacity must be an int >= 1, got {capacity!r}")
        self.capacity = capacity
        self._images: torch.Tensor | None = None
        self._labels: torch.Tensor | None = None
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, backgrounds: torch.Tensor, labels: torch.Tensor) -> None:
        """Append a batch, overwriting the oldest entries when full.

        Args:
            backgrounds: ``(B, 3, H, W)`` uint8.
            labels: ``(B,)`` integer class of each background's source image.

        Raises:
            ConfigError: wrong dtype/shape, or a size/device different from the bank's.
        """
        if backgrounds.dtype != torch.uint8 or backgrounds.ndim != 4:
            raise ConfigError(
                f"backgrounds must be (B, 3, H, W) uint8, got {tuple(backgrounds.shape)} "
                f"{backgrounds.dtype}"
            )
        if labels.ndim != 1 or labels.shape[0] != backgrounds.shape[0]:
            raise ConfigError(
                f"labels must be (B,) with B = {backgrounds.shape[0]}, got {tuple(labels.shape)}"
            )
        if self._images is None:
            self._images = torch.empty(
                (self.capacity, *backgrounds.shape[1:]),
                dtype=torch.uint8,
                device=backgrounds.device,
            )
            self._labels = torch.empty(self.capacity, dtype=torch.long, device=labels.device)
        elif backgrounds.shape[1:] != self._images.shape[1:]:
            raise ConfigError(
                f"background size {tuple(backgrounds.shape[1:])} differs from the bank's "
                f"{tuple(self._images.shape[1:])}"
            )
        backgrounds, labels = backgrounds[-self.capacity :], labels[-self.capacity :]
        n = backgrounds.shape[0]
        slots = (self._next + torch.arange(n)) % self.capacity
        slots = slots.to(self._images.device)
        self._images[slots] = backgrounds
        self._labels[slots] = labels.long().to(self._labels.device)
        self._next = (self._next + n) % self.capacity
        self._size = min(self.capacity, self._size + n)

    @property
    def images(self) -> torch.Tensor:
        """``(N, 3, H, W)`` uint8, ``N = len(self)``."""
        if self._images is None:
            raise ConfigError("the background bank is empty")
        return self._images[: self._size]

    @property
    def labels(self) -> torch.Tensor:
        """``(N,)`` long class labels."""
        if self._labels is None:
            raise ConfigError("the background bank is empty")
        return self._labels[: self._size]


def swap_batch(
    images: torch.Tensor,
    alpha: torch.Tensor,
    labels: torch.Tensor,
    bank: RecentBackgrounds,
    cfg: SwapConfig,
    swap_prob: float = 1.0,
    generator: torch.Generator | None = None,
    feather_sigma: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, SwapParams]:
    """Composite each sample's foreground on a background drawn class-uniformly from ``bank``.

    Args:
        images: ``(B, 3, H, W)`` float RGB in ``[0, 1]`` (the original images).
        alpha: ``(B, 1, H, W)`` float tight foreground alpha in ``[0, 1]``.
        labels: ``(B,)`` integer classes.
        bank: backgrounds to draw from (on ``images``' device, same ``H, W``).
        cfg: the swap transform ranges.
        swap_prob: probability that a sample is swapped; the others are returned unchanged.
        generator: source of randomness (CPU or the images' device).
        feather_sigma: inward alpha feathering in pixels (0 = hard alpha).

    Returns:
        ``(out, swapped, params)``: ``(B, 3, H, W)`` float images, ``(B,)`` bool of the
        samples swapped, and the :class:`~abs_ray.ops.SwapParams` drawn (``bg_index`` into
        ``bank``).

    Raises:
        ConfigError: shape/dtype/device mismatches, an empty bank, ``swap_prob`` outside
            ``[0, 1]``.
    """
    if not 0.0 <= swap_prob <= 1.0:
        raise ConfigError(f"swap_prob must be in [0, 1], got {swap_prob!r}")
    params = sample_swap_params(alpha, labels, bank.labels, cfg, generator)
    device = images.device
    gen_device = generator.device if generator is not None else torch.device("cpu")
    coins = torch.rand(images.shape[0], generator=generator, device=gen_device)
    swapped = (coins < swap_prob).to(device)
    # Only the swapped samples are warped and blended (all of them at the paper's p = 1).
    rows = torch.nonzero(coins < swap_prob).flatten().to(device)
    if rows.numel() == 0:
        return images, swapped, params
    everything = rows.numel() == images.shape[0]
    pick = (lambda t: t) if everything else (lambda t: t.index_select(0, rows))  # noqa: E731
    chosen = bank.images.index_select(0, pick(params.bg_index)).to(images.dtype).div_(255.0)
    local = SwapParams(
        bg_index=torch.arange(rows.numel(), device=device),
        scale=pick(params.scale),
        angle=pick(params.angle),
        translate=pick(params.translate),
    )
    # ``chosen`` is this call's own tensor: composite into it rather than into a copy.
    composite, _ = paste_foregrounds(
        pick(images), pick(alpha), chosen, local, feather_sigma, inplace=True
    )
    if everything:
        return composite, swapped, params
    return images.index_copy(0, rows, composite), swapped, params


@dataclass(frozen=True, eq=False)
class CropParams:
    """RandomResizedCrop boxes and flips for a batch.

    Attributes:
        boxes: ``(B, 4)`` float ``(x0, y0, x1, y1)`` inclusive pixel corners.
        flip: ``(B,)`` bool, flip horizontally after cropping.
    """

    boxes: torch.Tensor
    flip: torch.Tensor

    @classmethod
    def full(cls, batch: int, height: int, width: int) -> CropParams:
        """The whole image, no flip: :func:`apply_crop` then only resizes."""
        box = torch.tensor([0.0, 0.0, width - 1.0, height - 1.0])
        return cls(boxes=box.repeat(batch, 1), flip=torch.zeros(batch, dtype=torch.bool))


def sample_crop_params(
    batch: int,
    height: int,
    width: int,
    scale: tuple[float, float] = (0.7, 1.0),
    hflip: bool = True,
    generator: torch.Generator | None = None,
) -> CropParams:
    """Draw RandomResizedCrop boxes (area fraction ``U(scale)``, log-uniform aspect 3/4-4/3,
    clipped to the image) and horizontal flips (p = 0.5 when ``hflip``).

    Returns:
        :class:`CropParams` on CPU (or the generator's device).

    Raises:
        ConfigError: ``scale`` outside ``0 < low <= high <= 1``.
    """
    # Hand-written rather than kornia's RandomResizedCrop generator: that one draws from torch's
    # global RNG (no explicit generator, so no replay per worker and epoch), and it is no
    # faster (bench/augment.py: kornia's module with its own draw took as long as or longer
    # than this draw followed by the same kornia crop).
    low, high = scale
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(f"crop scale must satisfy 0 < low <= high <= 1, got {scale!r}")
    device = generator.device if generator is not None else torch.device("cpu")
    draws = torch.rand((batch, 5), generator=generator, device=device, dtype=torch.float64)
    area = (low + (high - low) * draws[:, 0]) * height * width
    ratio = torch.exp(_LOG_RATIO[0] + (_LOG_RATIO[1] - _LOG_RATIO[0]) * draws[:, 1])
    w = torch.sqrt(area * ratio).clamp(1.0, float(width))
    h = torch.sqrt(area / ratio).clamp(1.0, float(height))
    x0 = (width - w) * draws[:, 2]
    y0 = (height - h) * draws[:, 3]
    boxes = torch.stack([x0, y0, x0 + w - 1, y0 + h - 1], dim=1).float()
    flip = (draws[:, 4] < 0.5) if hflip else torch.zeros(batch, dtype=torch.bool, device=device)
    return CropParams(boxes=boxes, flip=flip)


def apply_crop(images: torch.Tensor, params: CropParams, size: int) -> torch.Tensor:
    """Crop each image to its box, resize to ``(size, size)`` (bilinear), flip where asked.

    Args:
        images: ``(B, C, H, W)`` float.
        params: :class:`CropParams` for ``B`` samples (any device).
        size: output side.

    Returns:
        ``(B, C, size, size)`` float on ``images``' device.
    """
    device = images.device
    x0, y0, x1, y1 = params.boxes.to(device=device, dtype=images.dtype).unbind(dim=1)
    corners = torch.stack(
        [torch.stack(p, dim=1) for p in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))], dim=1
    )
    # kornia's batched crop (one grid_sample). No other kornia crop was at most as fast at both
    # 1 and 2 threads (bench/results/augment.json, time over this one's): slice mode
    # (``crop_by_indices``, a slice and an interpolate per sample) 0.4-0.8x at 1 thread but
    # 1.2-1.8x at 2; RandomResizedCrop's resample mode 1.15-1.45x at 1 thread, 0.93-1.0x at 2.
    out = crop_and_resize(images, corners, (size, size), mode="bilinear", align_corners=True)
    # A where over the flipped batch, not K.RandomHorizontalFlip: that, replaying the same
    # draw, took 1.08-1.31x the time (bench/results/augment.json) for the same one-line work.
    flip = params.flip.to(device).view(-1, 1, 1, 1)
    return torch.where(flip, out.flip(-1), out)


def sample_grid(rows: list[torch.Tensor], max_samples: int = 16) -> torch.Tensor:
    """Tile image batches as a sheet: one row per batch, ``max_samples`` columns.

    Args:
        rows: batches ``(B, 3, H, W)`` float in ``[0, 1]`` of equal ``H, W``.
        max_samples: columns.

    Returns:
        ``(rows * H, cols * W, 3)`` uint8 on CPU (ready for :func:`abs_ray.io.encode_png`).

    >>> sample_grid([torch.zeros(3, 3, 4, 4), torch.ones(3, 3, 4, 4)], 2).shape
    torch.Size([8, 8, 3])
    """
    strips = [torch.cat(list(r[:max_samples].detach().float().cpu()), dim=2) for r in rows]
    return to_uint8_hwc(torch.cat(strips, dim=1)[None])[0]


# --- erm_aug: the strong-augmentation baseline ------------------------------------------------

#: RandAugment's number of operations and magnitude (of 30), colour jitter strengths
#: (brightness, contrast, saturation, hue) and probability, and the probability that a batch
#: gets CutMix (box area ~ U(0, 1), i.e. Beta(1, 1), as in the CutMix paper).
RANDAUGMENT_N, RANDAUGMENT_M = 2, 9
COLOR_JITTER = (0.4, 0.4, 0.4, 0.1)
COLOR_JITTER_P = 0.8
CUTMIX_P = 0.5


@dataclass(frozen=True)
class CutMix:
    """A CutMix draw for one batch: sample ``i`` gets a box of sample ``perm[i]``.

    ``lam`` is the fraction of each image left from its own sample (1.0 = no CutMix); the loss
    is ``lam * CE(y) + (1 - lam) * CE(y[perm])``.
    """

    perm: torch.Tensor
    lam: float


def cutmix(
    images: torch.Tensor, generator: torch.Generator, p: float = CUTMIX_P
) -> tuple[torch.Tensor, CutMix]:
    """Paste a random box of a shuffled batch into every image, with probability ``p``.

    Args:
        images: ``(B, C, H, W)``.
        generator: CPU generator for the draw.
        p: probability that this batch is mixed.

    Returns:
        The mixed images (a new tensor) and the :class:`CutMix` draw.

    Example:
        >>> x = torch.stack([torch.zeros(1, 8, 8), torch.ones(1, 8, 8)])
        >>> out, draw = cutmix(x, torch.Generator().manual_seed(3), p=1.0)
        >>> out.shape, 0.0 < draw.lam < 1.0
        (torch.Size([2, 1, 8, 8]), True)
    """
    # Hand-written: kornia's RandomCutMixV2 (a box per sample) took ~24x the time of this
    # one box per batch at 1 and 2 threads (bench/augment.py).
    n, _, h, w = images.shape
    identity = CutMix(torch.arange(n), 1.0)
    if n < 2 or float(torch.rand((), generator=generator)) >= p:
        return images, identity
    perm = torch.randperm(n, generator=generator)
    cut = math.sqrt(1.0 - float(torch.rand((), generator=generator)))
    bh, bw = round(h * cut), round(w * cut)
    if bh == 0 or bw == 0:
        return images, identity
    top = int(torch.randint(0, h - bh + 1, (), generator=generator))
    left = int(torch.randint(0, w - bw + 1, (), generator=generator))
    out = images.clone()
    out[:, :, top : top + bh, left : left + bw] = images[perm.to(images.device)][
        :, :, top : top + bh, left : left + bw
    ]
    return out, CutMix(perm, 1.0 - bh * bw / (h * w))


@functools.cache
def _heavy_pipeline() -> torch.nn.Module:
    import kornia.augmentation as K
    from kornia.augmentation.auto import RandAugment

    return torch.nn.Sequential(
        K.ColorJiggle(*COLOR_JITTER, p=COLOR_JITTER_P),
        RandAugment(n=RANDAUGMENT_N, m=RANDAUGMENT_M),
    )


def heavy_augment(images: torch.Tensor) -> torch.Tensor:
    """Colour jitter then RandAugment (kornia, on the images' device), values kept in [0, 1].

    Args:
        images: ``(B, 3, H, W)`` float in ``[0, 1]``.
    """
    return _heavy_pipeline().to(images.device)(images).clamp_(0.0, 1.0)
