"""Train the patch detector from a few hundred patch-labelled images (the paper's recipe).

Patch labels (``(G, G)`` grids, 1 = foreground) come from one of two sources, both keyed to
the images of a data set manifest (columns ``id, image_uri, split, mask_uri``, see
:mod:`abs_ray.data.manifest`):

- the published ``info,mask`` CSV (:func:`csv_labels_for_manifest`), ``info`` matching a
  manifest ``id`` or an image file name;
- segmentation masks (``mask_uri``), turned into patch labels by thresholding each patch's
  foreground coverage (:func:`~abs_ray.ops.patches.mask_to_patch_labels`).

Recipe (:class:`DetectorTrainConfig` defaults): the labelled images are split 80/20 into
train/val; BCE on ``1 - label`` (target 1 = background) with label smoothing 0.1; SGD with
momentum 0.9 and weight decay 1e-5, lr 0.3 for the head; ReduceLROnPlateau and early
stopping on validation balanced patch accuracy; augmentation applied to image and label grid
together (horizontal/vertical flips, 90-degree rotations, shifts by whole patches up to +-4,
wrapped or zero-filled), then colour jitter (0.2, 0.2, 0.2, 0.02) and grayscale (p = 0.2) on
the image only.

Frozen backbone (``freeze_backbone=True``, for CPU runs): the frozen part never changes, so
its output for an augmented image is a pure function of the image and the augmentation draw.
With ``feature_cache_views = V > 0`` every training image is augmented ``V`` times up front,
the frozen part runs once per view, and each epoch then trains on one random cached view per
image: ``N * V`` backbone passes in all instead of ``N`` per epoch, at the price of drawing
augmentations from a fixed pool of ``V`` per image. Validation images are never augmented, so
their frozen outputs are computed once. ``feature_cache_views = 0`` runs the frozen part
(without autograd) on fresh augmentations every step. ``trainable_blocks = k`` leaves the
backbone's last ``k`` blocks trainable: the cache then holds the (small, e.g. 192 x 7 x 7 for
Lite0 with k = 1) activation map before those blocks, and training runs the blocks and head.

Outputs of :func:`train_detector` under ``cfg.out`` (local or ``s3://``): ``detector.pt``
(:func:`~abs_ray.models.detector.save_detector`, with config and label source),
``metrics.json`` (balanced patch accuracy on val and held-out images, tight-mask IoU where
true masks exist, timings, per-epoch history), ``config.json`` and ``mask_sheet.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kornia
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from abs_ray.errors import ConfigError, DatasetError, ImageDecodeError, StorageError
from abs_ray.io import (
    S3Options,
    decode_image,
    encode_png,
    join,
    read_bytes,
    read_text,
    write_bytes,
    write_text,
)
from abs_ray.models.detector import Detector, DetectorConfig, create_detector, save_detector
from abs_ray.ops.label_csv import parse_patch_label_csv
from abs_ray.ops.metrics import balanced_accuracy, mask_iou
from abs_ray.ops.patches import mask_to_patch_labels, upsample_patch_grid

logger = logging.getLogger(__name__)

__all__ = [
    "IOU_REPORT_THRESHOLDS",
    "AugmentConfig",
    "AugmentParams",
    "DetectorTrainConfig",
    "FitResult",
    "LabelledImages",
    "apply_augment",
    "csv_labels_for_manifest",
    "evaluate_detector",
    "fit_detector",
    "load_labelled_images",
    "mask_sheet",
    "sample_augment_params",
    "split_train_val",
    "train_detector",
]

_SHIFT_FILLS = ("wrap", "zeros")
#: Tight thresholds at which :func:`evaluate_detector` also reports mask IoU.
IOU_REPORT_THRESHOLDS: tuple[float, ...] = (0.33, 0.5)


def _number(name: str, value: object, low: float, high: float, *, low_open: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    inside = ok and (low < value if low_open else low <= value) and value <= high
    if not inside:
        bracket = "(" if low_open else "["
        raise ConfigError(f"{name} must be a number in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


# --- augmentation -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of the detector's training images (the paper's list).

    Attributes:
        hflip: probability of a horizontal flip.
        vflip: probability of a vertical flip.
        rot90: rotate by a uniformly drawn multiple of 90 degrees.
        max_shift_patches: shift by a whole number of patches drawn uniformly from
            ``[-m, m]`` along each axis (image and grid together).
        shift_fill: ``"wrap"`` (what leaves one side comes back on the other; every pixel
            stays a photo pixel and the grid stays exact) or ``"zeros"`` (black pixels,
            labelled background).
        brightness: brightness factor drawn from ``[1 - b, 1 + b]``.
        contrast: contrast factor drawn from ``[1 - c, 1 + c]``.
        saturation: saturation factor drawn from ``[1 - s, 1 + s]``.
        hue: hue shift drawn from ``[-h, h]`` turns (0.5 = half the colour wheel).
        grayscale: probability of converting to grayscale (after the jitter).

    Raises:
        ConfigError: a value out of range.
    """

    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    max_shift_patches: int = 4
    shift_fill: str = "wrap"
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02
    grayscale: float = 0.2

    def __post_init__(self) -> None:
        for name in ("hflip", "vflip", "grayscale"):
            _number(name, getattr(self, name), 0.0, 1.0)
        for name in ("brightness", "contrast", "saturation"):
            _number(name, getattr(self, name), 0.0, 1.0)
        _number("hue", self.hue, 0.0, 0.5)
        _integer("max_shift_patches", self.max_shift_patches, 0)
        if self.shift_fill not in _SHIFT_FILLS:
            raise ConfigError(f"shift_fill must be one of {_SHIFT_FILLS}, got {self.shift_fill!r}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (every draw is the identity)."""
        return cls(0.0, 0.0, False, 0, "wrap", 0.0, 0.0, 0.0, 0.0, 0.0)


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """One augmentation draw for a batch of ``B`` images (all tensors on CPU).

    Attributes:
        hflip: ``(B,)`` bool.
        vflip: ``(B,)`` bool.
        rot90: ``(B,)`` int64 in ``0..3``, counter-clockwise quarter turns.
        shift: ``(B, 2)`` int64 ``(dy, dx)`` in patches.
        brightness: ``(B,)`` float multiplicative factor.
        contrast: ``(B,)`` float factor.
        saturation: ``(B,)`` float factor.
        hue: ``(B,)`` float shift in turns.
        grayscale: ``(B,)`` bool.
    """

    hflip: torch.Tensor
    vflip: torch.Tensor
    rot90: torch.Tensor
    shift: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    grayscale: torch.Tensor

    def __len__(self) -> int:
        return int(self.hflip.shape[0])


def sample_augment_params(
    batch_size: int, cfg: AugmentConfig, generator: torch.Generator | None = None
) -> AugmentParams:
    """Draw augmentation parameters for ``batch_size`` images.

    Args:
        batch_size: number of images ``B >= 1``.
        cfg: the :class:`AugmentConfig`.
        generator: CPU random generator (for reproducible draws).

    Returns:
        An :class:`AugmentParams` with CPU tensors.

    Raises:
        ConfigError: ``batch_size < 1``.

    Example:
        >>> p = sample_augment_params(3, AugmentConfig(), torch.Generator().manual_seed(0))
        >>> len(p), p.shift.shape, bool((p.shift.abs() <= 4).all())
        (3, torch.Size([3, 2]), True)
    """
    b = _integer("batch_size", batch_size, 1)

    def uniform(half: float, centre: float) -> torch.Tensor:
        return centre + (torch.rand(b, generator=generator) * 2.0 - 1.0) * half

    m = cfg.max_shift_patches
    return AugmentParams(
        hflip=torch.rand(b, generator=generator) < cfg.hflip,
        vflip=torch.rand(b, generator=generator) < cfg.vflip,
        rot90=(
            torch.randint(0, 4, (b,), generator=generator)
            if cfg.rot90
            else torch.zeros(b, dtype=torch.long)
        ),
        shift=torch.randint(-m, m + 1, (b, 2), generator=generator),
        brightness=uniform(cfg.brightness, 1.0),
        contrast=uniform(cfg.contrast, 1.0),
        saturation=uniform(cfg.saturation, 1.0),
        hue=uniform(cfg.hue, 0.0),
        grayscale=torch.rand(b, generator=generator) < cfg.grayscale,
    )


def _shift(x: torch.Tensor, dy: int, dx: int, fill: str) -> torch.Tensor:
    """Shift a ``(..., H, W)`` tensor by ``(dy, dx)`` pixels, wrapping or zero-filling."""
    out = torch.roll(x, shifts=(dy, dx), dims=(-2, -1))
    if fill == "zeros":
        if dy > 0:
            out[..., :dy, :] = 0
        elif dy < 0:
            out[..., dy:, :] = 0
        if dx > 0:
            out[..., :dx] = 0
        elif dx < 0:
            out[..., dx:] = 0
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(x)


def apply_augment(
    images: torch.Tensor,
    labels: torch.Tensor,
    params: AugmentParams,
    shift_fill: str = "wrap",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply an augmentation draw to images and their patch-label grids together.

    Geometry (flips, then quarter turns, then patch shifts) moves image and grid alike, so
    every grid cell keeps describing the pixels of its patch; colour jitter (brightness,
    contrast, saturation, hue, in that order, clamped to ``[0, 1]`` after each) and grayscale
    change the image only.

    Args:
        images: ``(B, 3, S, S)`` float RGB in ``[0, 1]`` (square; ``G`` divides ``S``).
        labels: ``(B, G, G)`` float patch labels in ``[0, 1]`` (1 = foreground).
        params: a draw from :func:`sample_augment_params` with ``B`` entries.
        shift_fill: ``"wrap"`` or ``"zeros"`` (zero pixels, zero = background labels).

    Returns:
        ``(images, labels)`` of the input shapes, dtypes and devices, images in ``[0, 1]``.

    Raises:
        ConfigError: shapes that do not fit together, or an unknown ``shift_fill``.

    Example:
        >>> img = torch.zeros(1, 3, 8, 8); img[..., :4, :4] = 1.0
        >>> lab = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])
        >>> p = sample_augment_params(1, AugmentConfig.none())
        >>> p = dataclasses.replace(p, hflip=torch.tensor([True]))
        >>> out_img, out_lab = apply_augment(img, lab, p)
        >>> out_lab[0].tolist(), float(out_img[0, 0, 0, 7])
        ([[0.0, 1.0], [0.0, 0.0]], 1.0)
    """
    if shift_fill not in _SHIFT_FILLS:
        raise ConfigError(f"shift_fill must be one of {_SHIFT_FILLS}, got {shift_fill!r}")
    if (
        images.ndim != 4
        or images.shape[1] != 3
        or images.shape[-1] != images.shape[-2]
        or labels.ndim != 3
        or labels.shape[0] != images.shape[0]
        or labels.shape[-1] != labels.shape[-2]
        or images.shape[-1] % labels.shape[-1]
        or len(params) != images.shape[0]
    ):
        raise ConfigError(
            f"apply_augment needs images (B, 3, S, S), labels (B, G, G) with G dividing S and B "
            f"params; got images {tuple(images.shape)}, labels {tuple(labels.shape)}, "
            f"{len(params)} params"
        )
    dev = images.device
    patch = images.shape[-1] // labels.shape[-1]
    hflip, vflip = params.hflip.to(dev), params.vflip.to(dev)
    x = torch.where(hflip[:, None, None, None], images.flip(-1), images)
    y = torch.where(hflip[:, None, None], labels.flip(-1), labels)
    x = torch.where(vflip[:, None, None, None], x.flip(-2), x)
    y = torch.where(vflip[:, None, None], y.flip(-2), y)
    x, y = x.clone(), y.clone()
    for k in (1, 2, 3):
        idx = (params.rot90 == k).nonzero().flatten().tolist()
        if idx:
            x[idx] = torch.rot90(x[idx], k, dims=(-2, -1))
            y[idx] = torch.rot90(y[idx], k, dims=(-2, -1))
    for i, (dy, dx) in enumerate(params.shift.tolist()):
        if dy or dx:
            x[i] = _shift(x[i], dy * patch, dx * patch, shift_fill)
            y[i] = _shift(y[i], dy, dx, shift_fill)

    def per(v: torch.Tensor) -> torch.Tensor:
        return v.to(device=dev, dtype=x.dtype)[:, None, None, None]

    x = (x * per(params.brightness)).clamp(0.0, 1.0)
    mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    x = (mean + (x - mean) * per(params.contrast)).clamp(0.0, 1.0)
    gray = _gray(x)
    x = (gray + (x - gray) * per(params.saturation)).clamp(0.0, 1.0)
    if bool((params.hue != 0).any()):
        x = kornia.enhance.adjust_hue(x, params.hue.to(dev, x.dtype) * 2.0 * math.pi).clamp(0, 1)
    x = torch.where(per(params.grayscale.float()) > 0, _gray(x).expand_as(x), x)
    return x, y


# --- labelled images --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    """Patch-labelled images in memory, resized to the detector's square input.

    Attributes:
        ids: ``N`` manifest ids.
        images: ``(N, 3, S, S)`` uint8 RGB.
        labels: ``(N, G, G)`` float32 patch labels in ``{0, 1}``, 1 = foreground.
        masks: ``(N, 1, S, S)`` bool true foreground masks, or None when some image has none.
    """

    ids: tuple[str, ...]
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, index: Sequence[int] | torch.Tensor) -> LabelledImages:
        """The images at positions ``index``, in that order."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return LabelledImages(
            ids=tuple(self.ids[i] for i in idx.tolist()),
            images=self.images[idx],
            labels=self.labels[idx],
            masks=None if self.masks is None else self.masks[idx],
        )


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(C, H, W)`` float -> ``(C, size, size)`` bilinear with antialiasing."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(
        x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0]


def _load_row(
    image_uri: str, mask_uri: str | None, size: int, s3: S3Options | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    rgb = decode_image(read_bytes(image_uri, s3))
    image = _resize(torch.from_numpy(rgb).permute(2, 0, 1).float(), size)
    image = image.round().clamp(0, 255).to(torch.uint8)
    if mask_uri is None:
        return image, None
    m = decode_image(read_bytes(mask_uri, s3))[..., 0]
    if m.shape != rgb.shape[:2]:
        raise DatasetError(
            f"mask {mask_uri} is {m.shape[1]}x{m.shape[0]}, image {image_uri} is "
            f"{rgb.shape[1]}x{rgb.shape[0]}: they must match"
        )
    mask = _resize(torch.from_numpy(m).float()[None] / 255.0, size)  # soft coverage
    return image, mask


def _mask_uri(row: Any) -> str | None:
    value = row.get("mask_uri") if hasattr(row, "get") else None
    return None if value is None or pd.isna(value) else str(value)


def load_labelled_images(
    manifest: pd.DataFrame,
    image_size: int,
    grid: int,
    labels: Mapping[str, torch.Tensor] | None = None,
    coverage_threshold: float = 0.25,
    s3: S3Options | None = None,
    num_workers: int = 8,
    skip_unreadable: bool = True,
) -> LabelledImages:
    """Read and resize the images of ``manifest`` and give each a patch-label grid.

    One unreadable image (corrupt, truncated, missing, mask of the wrong size) never stops a
    run: it is logged and left out (``skip_unreadable=False`` raises instead).

    Images (and masks) are resized to ``image_size x image_size`` (bilinear, antialiased),
    as the detector sees them. A mask is resized as a soft coverage map; the true mask is
    where it is ``>= 0.5``.

    Args:
        manifest: rows with ``id``, ``image_uri`` and (optional column) ``mask_uri``.
        image_size: side ``S`` of the detector input.
        grid: patches per side ``G``.
        labels: ``id -> (G, G)`` foreground grid (e.g. from :func:`csv_labels_for_manifest`);
            when None, labels are made from each row's mask by coverage threshold.
        coverage_threshold: foreground coverage from which a patch is foreground, in
            ``(0, 1]`` (used when ``labels`` is None).
        s3: S3 settings; default from the environment.
        num_workers: parallel reads.
        skip_unreadable: leave out (and log) images that cannot be read instead of raising.

    Returns:
        :class:`LabelledImages` in manifest order; ``masks`` set when every row has one.

    Raises:
        DatasetError: no rows, a row without a mask when labels come from masks, a row whose
            id is missing from ``labels``, a mask whose size differs from its image.
        ConfigError: ``grid`` does not divide ``image_size``, a label grid of the wrong size,
            a bad threshold.
        StorageError, ImageDecodeError: an image or mask cannot be read.
    """
    if image_size % grid:
        raise ConfigError(f"patch grid {grid} must divide image size {image_size}")
    if len(manifest) == 0:
        raise DatasetError("no labelled images: the manifest selection is empty")
    rows = [(str(r["id"]), str(r["image_uri"]), _mask_uri(r)) for r in manifest.to_dict("records")]
    if labels is None:
        missing = [i for i, _, m in rows if m is None]
        if missing:
            raise DatasetError(
                f"{len(missing)} images have no mask_uri, so no patch labels can be made from "
                f"masks (first: {missing[:3]}); give an info,mask CSV instead"
            )
    else:
        missing = [i for i, _, _ in rows if i not in labels]
        if missing:
            raise DatasetError(f"{len(missing)} images have no patch label (first: {missing[:3]})")

    def load(row: tuple[str, str, str | None]):
        try:
            return _load_row(row[1], row[2], image_size, s3)
        except (ImageDecodeError, StorageError, DatasetError) as exc:
            if not skip_unreadable:
                raise
            logger.warning("skipping labelled image %s: %s: %s", row[0], type(exc).__name__, exc)
            return None

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = list(pool.map(load, rows))
    rows = [r for r, res in zip(rows, results, strict=True) if res is not None]
    loaded = [res for res in results if res is not None]
    if not loaded:
        raise DatasetError(f"none of the {len(results)} labelled images could be read")
    images = torch.stack([img for img, _ in loaded])
    have_masks = all(m is not None for _, m in loaded)
    soft = torch.stack([m for _, m in loaded]) if have_masks else None
    if labels is None:
        grids = mask_to_patch_labels(soft, grid, coverage_threshold)
    else:
        grids = torch.stack([labels[i].float() for i, _, _ in rows])
        if tuple(grids.shape[-2:]) != (grid, grid):
            raise ConfigError(
                f"patch labels are {grids.shape[-1]}x{grids.shape[-1]}, the detector grid is "
                f"{grid}x{grid}"
            )
    return LabelledImages(
        ids=tuple(i for i, _, _ in rows),
        images=images,
        labels=grids.float(),
        masks=None if soft is None else soft >= 0.5,
    )


def csv_labels_for_manifest(
    csv_text: str, manifest: pd.DataFrame, grid: int | None = None
) -> dict[str, torch.Tensor]:
    """Key the records of an ``info,mask`` CSV to manifest ids.

    A record matches the row whose ``id`` equals ``info``; otherwise the row whose image file
    name (last path part of ``image_uri``) equals the last path part of ``info``, when exactly
    one row has it. Unmatched records are logged and skipped.

    Args:
        csv_text: the CSV text (see :mod:`abs_ray.ops.label_csv`).
        manifest: rows with ``id`` and ``image_uri``.
        grid: expected ``G``, or None to infer it from the file.

    Returns:
        ``manifest id -> (G, G)`` float32 foreground grid.

    Raises:
        LabelFormatError: the CSV is malformed.
        DatasetError: no record matches any manifest image, or two records match one image.

    Example:
        >>> df = pd.DataFrame({"id": ["a/1.jpg", "b/2.jpg"],
        ...                    "image_uri": ["/d/a/1.jpg", "/d/b/2.jpg"]})
        >>> labels = csv_labels_for_manifest("info,mask\\n1.jpg,1000\\nb/2.jpg,0001\\n", df)
        >>> sorted(labels), labels["a/1.jpg"].tolist()
        (['a/1.jpg', 'b/2.jpg'], [[1.0, 0.0], [0.0, 0.0]])
    """
    records = parse_patch_label_csv(csv_text, grid=grid)
    ids = [str(i) for i in manifest["id"]]
    id_set = set(ids)
    by_name: dict[str, list[str]] = {}
    for i, uri in zip(ids, manifest["image_uri"], strict=True):
        by_name.setdefault(os.path.basename(str(uri).replace("\\", "/")), []).append(i)
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for rec in records:
        key = rec.info if rec.info in id_set else None
        if key is None:
            hits = by_name.get(rec.info.replace("\\", "/").rsplit("/", 1)[-1], [])
            key = hits[0] if len(hits) == 1 else None
        if key is None:
            unmatched.append(rec.info)
            continue
        if key in out:
            raise DatasetError(f"two patch-label records match manifest image {key!r}")
        out[key] = rec.grid
    if unmatched:
        logger.warning(
            "%d of %d patch-label records match no manifest image (first: %s)",
            len(unmatched),
            len(records),
            unmatched[:3],
        )
    if not out:
        raise DatasetError(
            f"none of the {len(records)} patch-label records matches a manifest id or image "
            f"file name (first info: {records[0].info if records else None!r})"
        )
    return out


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded random split of ``range(n)`` into train and val positions.

    Returns:
        ``(train, val)`` sorted position lists; val has ``round(n * val_fraction)`` items,
        at least one, and train at least one.

    Raises:
        ConfigError: ``n < 2`` or ``val_fraction`` outside ``(0, 1)``.

    Example:
        >>> train, val = split_train_val(10, 0.2, seed=0)
        >>> len(train), len(val), sorted(train + val) == list(range(10))
        (8, 2, True)
    """
    if n < 2:
        raise ConfigError(f"need at least 2 labelled images for a train/val split, got {n}")
    _number("val_fraction", val_fraction, 0.0, 1.0, low_open=True)
    if val_fraction >= 1.0:
        raise ConfigError(f"val_fraction must be < 1, got {val_fraction}")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


# --- configuration ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DetectorTrainConfig:
    """Everything a detector training run needs; saved as ``config.json`` beside its outputs.

    Attributes:
        out: output folder URI (local or ``s3://``).
        data: data set URI the manifest was read from (recorded as the label source).
        detector: backbone name (see :func:`~abs_ray.models.detector.create_detector`).
        weights: backbone weights (``"default"``, ``"imagenet"``, None or a state-dict URI).
        grid: patches per side ``G``.
        image_size: detector input side ``S``.
        dropout: head dropout.
        freeze_backbone: freeze the backbone and train the head (fast on CPU).
        trainable_blocks: with ``freeze_backbone``, leave the backbone's last ``k`` blocks
            trainable too (0 = head only). Pooled features of a frozen backbone localise
            poorly; training the last block or two recovers much of that on CPU.
        feature_cache_views: with a frozen backbone, augmented views per training image whose
            frozen-prefix outputs are computed once (0 = run the frozen prefix on fresh
            augmentations every step).
        labels_csv: URI of an ``info,mask`` CSV; None makes labels from masks.
        coverage_threshold: foreground coverage from which a patch is foreground (masks).
        label_split: manifest split the labelled images are drawn from.
        num_labelled: labelled images used (paper: 200 Waterbirds, 400 others); None = all.
        val_fraction: share of the labelled images held out for validation (paper: 0.2).
        eval_split: split of extra held-out images (with masks) to report on; None = none.
        eval_max: cap on held-out images (seeded sample); None = all.
        epochs: maximum epochs (paper: 200-300).
        batch_size: training batch size.
        lr: SGD learning rate of the head (paper: 0.3-1.0).
        backbone_lr: learning rate of an unfrozen backbone (our choice: pretrained features
            do not survive lr 0.3).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        label_smoothing: BCE label smoothing ``eps``: targets become ``t (1 - eps) + eps / 2``.
        balance_classes: weight the BCE so background and foreground patches count equally
            (``pos_weight = fg / bg``). Not in the paper: with few foreground patches (about
            13 % on the birds benchmark) plain BCE first fits the prior "all background", and
            with a frozen backbone it stays there for many epochs.
        plateau_factor: ReduceLROnPlateau factor (on val balanced patch accuracy).
        plateau_patience: ReduceLROnPlateau patience, in epochs.
        early_stop_patience: stop after this many epochs without a better val balanced patch
            accuracy; the best epoch's weights are kept.
        max_train_seconds: stop after the epoch during which training (feature caching
            included) passed this many seconds, keeping the best epoch; None = no limit. For
            CPU runs on shared machines.
        augment: the :class:`AugmentConfig`.
        tight: tight-mask threshold (IoU is measured on ``p < tight``; paper 0.33 Waterbirds).
        loose: loose-mask threshold stored with the detector.
        device: torch device string.
        seed: seed of the selection, split, initialisation and augmentation.
        eval_batch_size: batch size for feature extraction and evaluation.
        num_workers: parallel image reads.
        sheet_samples: held-out images drawn on ``mask_sheet.png`` (0 = no sheet).
        log_every: log a progress line every this many epochs.

    Raises:
        ConfigError: a value out of range or inconsistent (e.g. grid vs image size).
    """

    out: str = "runs/detector"
    data: str | None = None
    detector: str = "efficientnet_lite0"
    weights: str | None = "default"
    grid: int = 16
    image_size: int = 224
    dropout: float = 0.2
    freeze_backbone: bool = False
    trainable_blocks: int = 0
    feature_cache_views: int = 16
    labels_csv: str | None = None
    coverage_threshold: float = 0.25
    label_split: str = "train"
    num_labelled: int | None = 200
    val_fraction: float = 0.2
    eval_split: str | None = "test"
    eval_max: int | None = 200
    epochs: int = 200
    batch_size: int = 32
    lr: float = 0.3
    backbone_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5
    label_smoothing: float = 0.1
    balance_classes: bool = False
    plateau_factor: float = 0.3
    plateau_patience: int = 20
    early_stop_patience: int = 60
    max_train_seconds: float | None = None
    augment: AugmentConfig = dataclasses.field(default_factory=AugmentConfig)
    tight: float = 0.5
    loose: float = 0.9
    device: str = "cpu"
    seed: int = 0
    eval_batch_size: int = 64
    num_workers: int = 8
    sheet_samples: int = 24
    log_every: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.out, str) or not self.out:
            raise ConfigError(f"out must be a non-empty URI, got {self.out!r}")
        DetectorConfig(  # name, grid vs image size, dropout, thresholds
            name=self.detector,
            grid=self.grid,
            image_size=self.image_size,
            dropout=self.dropout,
            tight=self.tight,
            loose=self.loose,
        )
        _number("coverage_threshold", self.coverage_threshold, 0.0, 1.0, low_open=True)
        _number("val_fraction", self.val_fraction, 0.0, 0.99, low_open=True)
        _number("label_smoothing", self.label_smoothing, 0.0, 0.99)
        _number("lr", self.lr, 0.0, 100.0, low_open=True)
        _number("backbone_lr", self.backbone_lr, 0.0, 100.0)
        _number("momentum", self.momentum, 0.0, 0.999)
        _number("weight_decay", self.weight_decay, 0.0, 1.0)
        _number("plateau_factor", self.plateau_factor, 0.0, 0.999, low_open=True)
        for name, minimum in (
            ("epochs", 1),
            ("batch_size", 1),
            ("eval_batch_size", 1),
            ("plateau_patience", 0),
            ("early_stop_patience", 1),
            ("feature_cache_views", 0),
            ("trainable_blocks", 0),
            ("num_workers", 1),
            ("sheet_samples", 0),
            ("log_every", 1),
            ("seed", 0),
        ):
            _integer(name, getattr(self, name), minimum)
        for name in ("num_labelled", "eval_max"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 2 if name == "num_labelled" else 1)
        if self.max_train_seconds is not None:
            _number("max_train_seconds", self.max_train_seconds, 0.0, 1e9, low_open=True)
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError(
                f"augment must be an AugmentConfig, got {type(self.augment).__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (nested ``augment`` included)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorTrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown detector training settings: {', '.join(unknown)}")
        values = dict(values)
        if isinstance(values.get("augment"), Mapping):
            values["augment"] = AugmentConfig(**values["augment"])
        return cls(**values)


# --- training ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What :func:`fit_detector` did.

    Attributes:
        best_epoch: 1-based epoch whose weights were kept.
        best_val_balanced_accuracy: its val balanced patch accuracy in ``[0, 1]``.
        epochs_run: epochs trained before stopping.
        history: one dict per epoch: ``epoch``, ``loss``, ``val_loss``,
            ``val_balanced_accuracy``, ``lr``, ``seconds``.
        feature_seconds: time spent precomputing cached features (0 without a cache).
        stopped_by: ``"epochs"``, ``"early_stop"`` or ``"time_budget"``.
    """

    best_epoch: int
    best_val_balanced_accuracy: float
    epochs_run: int
    history: list[dict[str, float]]
    feature_seconds: float = 0.0
    stopped_by: str = "epochs"


def _as_float(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    return images_u8.to(device).float().div_(255.0)


def _smooth(target: torch.Tensor, eps: float) -> torch.Tensor:
    return target * (1.0 - eps) + 0.5 * eps


@torch.no_grad()
def _frozen_features(
    model: Detector,
    data: LabelledImages,
    device: torch.device,
    batch_size: int,
    augment: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-prefix outputs of every image (optionally augmented) and the matching labels."""
    feats, labels = [], []
    for start in range(0, len(data), batch_size):
        x = _as_float(data.images[start : start + batch_size], device)
        y = data.labels[start : start + batch_size].to(device)
        if augment is not None:
            params = sample_augment_params(x.shape[0], augment, generator)
            x, y = apply_augment(x, y, params, augment.shift_fill)
        feats.append(model.frozen_features(x))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def _loss(logits: torch.Tensor, fg: torch.Tensor, eps: float, pos_weight: torch.Tensor | None):
    """BCE on target ``1 - fg`` (1 = background) with label smoothing ``eps``."""
    target = _smooth(1.0 - fg, eps)
    return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


@torch.no_grad()
def _val_pass(
    model: Detector,
    val: LabelledImages,
    val_feats: torch.Tensor | None,
    device: torch.device,
    batch_size: int,
    eps: float,
    pos_weight: torch.Tensor | None,
) -> tuple[float, float]:
    """``(val loss, val balanced patch accuracy)`` of the model in eval mode."""
    model.eval()
    logits = []
    for start in range(0, len(val), batch_size):
        if val_feats is not None:
            logits.append(model.logits_from_frozen(val_feats[start : start + batch_size]))
        else:
            logits.append(model(_as_float(val.images[start : start + batch_size], device)))
    logit = torch.cat(logits)
    fg = val.labels.to(device)
    loss = float(_loss(logit, fg, eps, pos_weight))
    return loss, balanced_accuracy(logit >= 0, fg < 0.5)


def fit_detector(
    model: Detector,
    train: LabelledImages,
    val: LabelledImages,
    cfg: DetectorTrainConfig,
) -> FitResult:
    """Train ``model`` in place on patch labels; keep the weights of the best val epoch.

    Args:
        model: a :class:`Detector` with ``G`` and ``S`` matching the data, on ``cfg.device``;
            it is frozen as ``cfg.freeze_backbone`` / ``cfg.trainable_blocks`` say.
        train: training images and labels.
        val: validation images and labels, never augmented.
        cfg: the recipe.

    Returns:
        A :class:`FitResult`; ``model`` holds the best epoch's weights, in eval mode.

    Raises:
        ConfigError: the data's grid or image size does not match the model, a set is empty,
            or the backbone cannot be partly frozen.
    """
    g, s = model.config.grid, model.config.image_size
    for name, part in (("train", train), ("val", val)):
        if len(part) == 0:
            raise ConfigError(f"{name} set is empty")
        if tuple(part.labels.shape[-2:]) != (g, g) or tuple(part.images.shape[-2:]) != (s, s):
            raise ConfigError(
                f"{name} data is {tuple(part.images.shape[-2:])} px with "
                f"{tuple(part.labels.shape[-2:])} grids, the detector takes {s} px and G={g}"
            )
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    eps = cfg.label_smoothing
    model.freeze_backbone(cfg.freeze_backbone, cfg.trainable_blocks)
    groups = [{"params": list(model.head.parameters()), "lr": cfg.lr}]
    tail = [p for p in model.backbone.parameters() if p.requires_grad]
    if tail:
        groups.append({"params": tail, "lr": cfg.backbone_lr})
    opt = torch.optim.SGD(groups, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    pos_weight = None
    if cfg.balance_classes:
        bg = float((train.labels < 0.5).float().mean())
        pos_weight = torch.tensor(max(1.0 - bg, 1e-3) / max(bg, 1e-3), device=device)
        logger.info("balanced loss: background fraction %.3f, pos_weight %.3f", bg, pos_weight)

    t_begin = time.perf_counter()
    cached = cfg.freeze_backbone and cfg.feature_cache_views > 0
    train_feats = train_labels = val_feats = None
    feature_seconds = 0.0
    if cfg.freeze_backbone:
        t0 = time.perf_counter()
        model.eval()
        val_feats, _ = _frozen_features(model, val, device, cfg.eval_batch_size)
        if cached:
            views = [
                _frozen_features(model, train, device, cfg.eval_batch_size, cfg.augment, gen)
                for _ in range(cfg.feature_cache_views)
            ]
            train_feats = torch.stack([f for f, _ in views], dim=1)  # (N, V, ...)
            train_labels = torch.stack([y for _, y in views], dim=1)  # (N, V, G, G)
            del views
        feature_seconds = time.perf_counter() - t0
        logger.info(
            "frozen backbone (%d trainable blocks): cached %d val%s in %.1f s (%.0f MB)",
            cfg.trainable_blocks,
            len(val),
            f" and {len(train)} x {cfg.feature_cache_views} augmented train" if cached else "",
            feature_seconds,
            sum(t.numel() * t.element_size() for t in (val_feats, train_feats) if t is not None)
            / 2**20,
        )

    best_score, best_epoch, best_state = -1.0, 0, None
    stopped_by = "epochs"
    history: list[dict[str, float]] = []
    n = len(train)
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in range(0, n, cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            if cached:
                view = torch.randint(0, cfg.feature_cache_views, (idx.shape[0],), generator=gen)
                logits = model.logits_from_frozen(train_feats[idx, view])
                fg = train_labels[idx, view]
            else:
                x = _as_float(train.images[idx], device)
                fg = train.labels[idx].to(device)
                params = sample_augment_params(x.shape[0], cfg.augment, gen)
                x, fg = apply_augment(x, fg, params, cfg.augment.shift_fill)
                logits = model(x)
            loss = _loss(logits, fg, eps, pos_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.shape[0]
            count += idx.shape[0]
        val_loss, val_bacc = _val_pass(
            model, val, val_feats, device, cfg.eval_batch_size, eps, pos_weight
        )
        sched.step(val_bacc)
        history.append(
            {
                "epoch": epoch,
                "loss": total / count,
                "val_loss": val_loss,
                "val_balanced_accuracy": val_bacc,
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t0,
            }
        )
        if val_bacc > best_score + 1e-9:
            best_score, best_epoch = val_bacc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if epoch % cfg.log_every == 0 or epoch == 1:
            logger.info(
                "epoch %d: loss %.4f val_loss %.4f val_bacc %.4f (best %.4f @ %d) lr %.3g",
                epoch,
                total / count,
                val_loss,
                val_bacc,
                best_score,
                best_epoch,
                opt.param_groups[0]["lr"],
            )
        if epoch - best_epoch >= cfg.early_stop_patience:
            logger.info("early stop at epoch %d (best %d)", epoch, best_epoch)
            stopped_by = "early_stop"
            break
        if (
            cfg.max_train_seconds is not None
            and time.perf_counter() - t_begin > cfg.max_train_seconds
        ):
            logger.info(
                "time budget of %.0f s reached at epoch %d (best %d)",
                cfg.max_train_seconds,
                epoch,
                best_epoch,
            )
            stopped_by = "time_budget"
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        best_val_balanced_accuracy=best_score,
        epochs_run=len(history),
        history=history,
        feature_seconds=feature_seconds,
        stopped_by=stopped_by,
    )


@torch.no_grad()
def predict_background_prob(
    model: Detector, images_u8: torch.Tensor, device: torch.device | str, batch_size: int = 64
) -> torch.Tensor:
    """``P(background)`` of uint8 images, batched, in eval mode.

    Args:
        model: the detector.
        images_u8: ``(N, 3, S, S)`` uint8 RGB.
        device: where to run.
        batch_size: images per forward pass.

    Returns:
        ``(N, G, G)`` float32 in ``[0, 1]`` on CPU.
    """
    model.eval()
    device = torch.device(device)
    out = [
        model.background_prob(_as_float(images_u8[i : i + batch_size], device)).cpu()
        for i in range(0, images_u8.shape[0], batch_size)
    ]
    return torch.cat(out)


def evaluate_detector(
    model: Detector,
    data: LabelledImages,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    tight: float | None = None,
) -> dict[str, float]:
    """Balanced patch accuracy and, where true masks exist, tight-mask IoU.

    Args:
        model: the detector.
        data: images with patch labels (and optionally true masks) at the detector's size.
        device: where to run.
        batch_size: images per forward pass.
        tight: tight threshold (foreground where ``p < tight``); default ``model.config.tight``.

    Returns:
        ``{"n": N, "balanced_patch_accuracy": ..., "patch_accuracy": ...}`` plus
        ``"mask_iou"`` (mean over images), ``"mask_iou_median"`` and ``"mask_iou_at_<t>"``
        for each ``t`` in :data:`IOU_REPORT_THRESHOLDS` when ``data.masks`` exists. Balanced
        accuracy pools all patches (positives = background patches, predicted at
        ``p >= 0.5``).

    Raises:
        ConfigError: empty data.
    """
    if len(data) == 0:
        raise ConfigError("evaluate_detector needs at least one image, got 0")
    tight = model.config.tight if tight is None else tight
    prob = predict_background_prob(model, data.images, device, batch_size)
    target_bg = data.labels < 0.5
    pred_bg = prob >= 0.5
    out = {
        "n": float(len(data)),
        "balanced_patch_accuracy": balanced_accuracy(pred_bg, target_bg),
        "patch_accuracy": float((pred_bg == target_bg).float().mean()),
    }
    if data.masks is not None:
        s = data.images.shape[-1]
        pred_fg = upsample_patch_grid((prob < tight).float(), (s, s)) > 0.5
        iou = mask_iou(pred_fg, data.masks)
        out["mask_iou"] = float(iou.mean())
        out["mask_iou_median"] = float(iou.median())
        for t in IOU_REPORT_THRESHOLDS:  # the paper's Waterbirds and default tight thresholds
            fg = upsample_patch_grid((prob < t).float(), (s, s)) > 0.5
            out[f"mask_iou_at_{t:g}"] = float(mask_iou(fg, data.masks).mean())
    return out


# --- the mask sheet ---------------------------------------------------------------------------


def mask_sheet(
    images: torch.Tensor,
    prob: torch.Tensor,
    masks: torch.Tensor | None = None,
    tight: float = 0.5,
    columns: int = 4,
) -> np.ndarray:
    """A contact sheet of predictions: per image, an overlay tile and a ``P(background)`` tile.

    Overlay: pixels outside the predicted tight foreground (``p >= tight``) are darkened and
    tinted red; the true mask's outline (when given) is drawn in green. Heat tile: ``P(bg)``
    per patch, white = background, black = foreground.

    Args:
        images: ``(N, 3, S, S)`` uint8 RGB.
        prob: ``(N, G, G)`` float ``P(background)`` in ``[0, 1]``.
        masks: ``(N, 1, S, S)`` bool true masks, or None.
        tight: tight threshold.
        columns: images per sheet row.

    Returns:
        ``(rows * S, columns * 2 * S, 3)`` uint8 RGB.

    Raises:
        ConfigError: empty input or mismatched shapes.

    Example:
        >>> sheet = mask_sheet(torch.zeros(3, 3, 8, 8, dtype=torch.uint8), torch.rand(3, 2, 2),
        ...                    columns=2)
        >>> sheet.shape, sheet.dtype
        ((16, 32, 3), dtype('uint8'))
    """
    if images.ndim != 4 or images.shape[0] == 0 or prob.shape[0] != images.shape[0]:
        raise ConfigError(
            f"mask_sheet needs (N, 3, S, S) images and (N, G, G) prob with N >= 1, got "
            f"{tuple(images.shape)} and {tuple(prob.shape)}"
        )
    n, _, s, _ = images.shape
    x = images.float() / 255.0
    fg = upsample_patch_grid((prob < tight).float(), (s, s))
    tint = torch.tensor([0.6, 0.0, 0.0]).view(1, 3, 1, 1)
    overlay = fg * x + (1.0 - fg) * (0.35 * x + tint * 0.4)
    if masks is not None:
        m = masks.float()
        edge = (F.max_pool2d(m, 3, 1, 1) - (-F.max_pool2d(-m, 3, 1, 1))) > 0
        green = torch.tensor([0.0, 1.0, 0.0]).view(1, 3, 1, 1).expand_as(overlay)
        overlay = torch.where(edge, green, overlay)
    heat = upsample_patch_grid(prob.float(), (s, s)).expand(-1, 3, -1, -1)
    tiles = torch.cat([overlay, heat], dim=-1)  # (N, 3, S, 2S)
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    pad = rows * columns - n
    if pad:
        tiles = torch.cat([tiles, torch.zeros(pad, *tiles.shape[1:])])
    grid = tiles.view(rows, columns, 3, s, 2 * s).permute(0, 3, 1, 4, 2)
    grid = grid.reshape(rows * s, columns * 2 * s, 3)
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# --- the whole run ----------------------------------------------------------------------------


def _select(manifest: pd.DataFrame, split: str | None, ids: set[str] | None) -> pd.DataFrame:
    df = manifest
    if split is not None:
        df = df[df["split"].astype(str) == split]
    if ids is not None:
        df = df[df["id"].astype(str).isin(ids)]
    else:
        has_mask = df["mask_uri"].notna() if "mask_uri" in df else pd.Series(False, df.index)
        df = df[has_mask]
    return df


def _sample(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    df = df.sort_values("id", kind="stable")
    if n is not None and len(df) > n:
        df = df.sample(n=n, random_state=seed).sort_values("id", kind="stable")
    return df.reset_index(drop=True)


def train_detector(
    cfg: DetectorTrainConfig, manifest: pd.DataFrame, s3: S3Options | None = None
) -> dict[str, Any]:
    """Train a detector from patch labels and write its checkpoint, metrics and mask sheet.

    Steps: draw ``num_labelled`` images of ``label_split`` that have labels (a CSV record or a
    mask), split them 80/20 (``val_fraction``), build the detector, :func:`fit_detector`,
    evaluate on val and on up to ``eval_max`` masked images of ``eval_split``, write
    ``detector.pt``, ``metrics.json``, ``config.json`` and ``mask_sheet.png`` under
    ``cfg.out``.

    Args:
        cfg: the run's :class:`DetectorTrainConfig`.
        manifest: the data set manifest (``abs_ray.data.load_dataset``).
        s3: S3 settings; default from the environment.

    Returns:
        The metrics dict written to ``metrics.json``.

    Raises:
        DatasetError: too few labelled images, labels that match no image, unreadable rows.
        ConfigError: inconsistent settings.
        WeightsUnavailableError: pretrained weights cannot be obtained.
        StorageError: reading or writing fails.
    """
    t_start = time.perf_counter()
    if not isinstance(cfg, DetectorTrainConfig):
        raise ConfigError(f"cfg must be a DetectorTrainConfig, got {type(cfg).__name__}")
    for col in ("id", "image_uri", "split"):
        if col not in manifest.columns:
            raise DatasetError(
                f"manifest has no {col!r} column (columns: {list(manifest.columns)})"
            )
    csv_labels = None
    if cfg.labels_csv is not None:
        csv_labels = csv_labels_for_manifest(read_text(cfg.labels_csv, s3), manifest, grid=cfg.grid)
        label_source: dict[str, Any] = {"kind": "csv", "uri": cfg.labels_csv}
    else:
        label_source = {"kind": "masks", "coverage_threshold": cfg.coverage_threshold}
    label_source.update(dataset=cfg.data, split=cfg.label_split, grid=cfg.grid)
    pool = _select(manifest, cfg.label_split, None if csv_labels is None else set(csv_labels))
    labelled = _sample(pool, cfg.num_labelled, cfg.seed)
    if len(labelled) < 2:
        raise DatasetError(
            f"need at least 2 labelled images in split {cfg.label_split!r}, found {len(labelled)}"
        )
    if cfg.num_labelled is not None and len(labelled) < cfg.num_labelled:
        logger.warning(
            "only %d labelled images available (asked %d)", len(labelled), cfg.num_labelled
        )
    load = dict(
        image_size=cfg.image_size,
        grid=cfg.grid,
        coverage_threshold=cfg.coverage_threshold,
        s3=s3,
        num_workers=cfg.num_workers,
    )
    data = load_labelled_images(labelled, labels=csv_labels, **load)
    train_idx, val_idx = split_train_val(len(data), cfg.val_fraction, cfg.seed)
    train, val = data.subset(train_idx), data.subset(val_idx)
    held = None
    if cfg.eval_split is not None:
        eval_df = _sample(_select(manifest, cfg.eval_split, None), cfg.eval_max, cfg.seed)
        if len(eval_df):
            held = load_labelled_images(eval_df, **load)
        else:
            logger.warning("no masked images in split %r to evaluate on", cfg.eval_split)
    label_source.update(num_images=len(data), num_train=len(train), num_val=len(val))
    t_loaded = time.perf_counter()
    logger.info(
        "labelled images: %d train, %d val; held-out: %d (%s); loaded in %.1f s",
        len(train),
        len(val),
        0 if held is None else len(held),
        cfg.eval_split,
        t_loaded - t_start,
    )

    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = create_detector(
        cfg.detector,
        grid=cfg.grid,
        image_size=cfg.image_size,
        weights=cfg.weights,
        freeze_backbone=cfg.freeze_backbone,
        trainable_blocks=cfg.trainable_blocks,
        dropout=cfg.dropout,
        tight=cfg.tight,
        loose=cfg.loose,
        device=device,
        s3=s3,
    )
    fit = fit_detector(model, train, val, cfg)
    t_fit = time.perf_counter()
    metrics: dict[str, Any] = {
        "val": evaluate_detector(model, val, device, cfg.eval_batch_size),
        "best_epoch": fit.best_epoch,
        "epochs_run": fit.epochs_run,
        "stopped_by": fit.stopped_by,
    }
    if held is not None:
        metrics["held_out"] = evaluate_detector(model, held, device, cfg.eval_batch_size)
        metrics["held_out"]["split"] = cfg.eval_split
    t_eval = time.perf_counter()
    metrics["seconds"] = {
        "load": t_loaded - t_start,
        "features": fit.feature_seconds,
        "fit": t_fit - t_loaded,
        "evaluate": t_eval - t_fit,
        "total": t_eval - t_start,
    }
    metrics.update(
        device=str(device),
        torch_threads=torch.get_num_threads(),
        label_source=label_source,
        detector={"name": cfg.detector, "grid": cfg.grid, "image_size": cfg.image_size},
        history=fit.history,
    )

    meta = {"label_source": label_source, "train_config": cfg.to_dict()}
    meta["metrics"] = {k: v for k, v in metrics.items() if k in ("val", "held_out")}
    save_detector(model, join(cfg.out, "detector.pt"), meta=meta, s3=s3)
    write_text(join(cfg.out, "config.json"), json.dumps(cfg.to_dict(), indent=2), s3)
    if cfg.sheet_samples and (held is not None or len(val)):
        shown = held if held is not None else val
        k = min(cfg.sheet_samples, len(shown))
        shown = shown.subset(list(range(k)))
        prob = predict_background_prob(model, shown.images, device, cfg.eval_batch_size)
        sheet = mask_sheet(shown.images, prob, shown.masks, cfg.tight)
        write_bytes(join(cfg.out, "mask_sheet.png"), encode_png(sheet), s3)
        metrics["mask_sheet_ids"] = list(shown.ids)
    write_text(join(cfg.out, "metrics.json"), json.dumps(metrics, indent=2), s3)
    summary = {k: metrics[k] for k in ("val", "held_out") if k in metrics}
    logger.info("detector trained in %.1f s: %s", metrics["seconds"]["total"], summary)
    return metrics
