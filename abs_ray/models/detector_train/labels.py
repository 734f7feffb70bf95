"""Patch-labelled images for detector training: where labels come from and how images load.

Patch labels (``(G, G)`` grids, 1 = foreground) come from one of two sources, both keyed to
the images of a data set manifest (columns ``id, image_uri, split, mask_uri``, see
:mod:`abs_ray.data.manifest`):

- the published ``info,mask`` CSV (:func:`csv_labels_for_manifest`), ``info`` matching a
  manifest ``id`` or an image file name;
- segmentation masks (``mask_uri``), turned into patch labels by thresholding each patch's
  foreground coverage (:func:`~abs_ray.ops.patches.mask_to_patch_labels`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from abs_ray._checks import check_number
from abs_ray.errors import ConfigError, DatasetError, ImageDecodeError, StorageError
from abs_ray.io import S3Options, decode_image, read_bytes
from abs_ray.ops.label_csv import parse_patch_label_csv
from abs_ray.ops.patches import mask_to_patch_labels

logger = logging.getLogger(__name__)

__all__ = [
    "LabelledImages",
    "csv_labels_for_manifest",
    "load_labelled_images",
    "split_train_val",
]


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
    image = _resize(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float(), size)  # writable
    image = image.round().clamp(0, 255).to(torch.uint8)
    if mask_uri is None:
        return image, None
    m = decode_image(read_bytes(mask_uri, s3))[..., 0]
    if m.shape != rgb.shape[:2]:
        raise DatasetError(
            f"mask {mask_uri} is {m.shape[1]}x{m.shape[0]}, image {image_uri} is "
            f"{rgb.shape[1]}x{rgb.shape[0]}: they must match"
        )
    mask = _resize(torch.from_numpy(m.copy()).float()[None] / 255.0, size)  # soft, writable
    return image, mask


def _mask_uri(row: Any) -> str | None:
    value = row.get("mask_uri") if hasattr(row, "get") else None
    return None if value is None or pd.isna(value) else str(value)


_Row = tuple[str, str, str | None]  # (id, image URI, mask URI or None)


def _labelled_rows(manifest: pd.DataFrame, labels: Mapping[str, torch.Tensor] | None) -> list[_Row]:
    """``(id, image_uri, mask_uri)`` per row; every row must have a label source.

    Raises:
        DatasetError: a row without a mask when labels come from masks, or without a label.
    """
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
    return rows


def _read_rows(
    rows: list[_Row], size: int, s3: S3Options | None, num_workers: int, skip_unreadable: bool
) -> tuple[list[_Row], list[tuple[torch.Tensor, torch.Tensor | None]]]:
    """Read the rows in parallel; ``(rows read, their (image, soft mask))``, unreadable ones
    logged and left out unless ``skip_unreadable`` is False.

    Raises:
        DatasetError: none could be read.
    """

    def load(row: _Row):
        try:
            return _load_row(row[1], row[2], size, s3)
        except (ImageDecodeError, StorageError, DatasetError) as exc:
            if not skip_unreadable:
                raise
            logger.warning("skipping labelled image %s: %s: %s", row[0], type(exc).__name__, exc)
            return None

    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        results = list(pool.map(load, rows))
    kept = [r for r, res in zip(rows, results, strict=True) if res is not None]
    loaded = [res for res in results if res is not None]
    if not loaded:
        raise DatasetError(f"none of the {len(results)} labelled images could be read")
    return kept, loaded


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
    rows = _labelled_rows(manifest, labels)
    rows, loaded = _read_rows(rows, image_size, s3, num_workers, skip_unreadable)
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
    check_number("val_fraction", val_fraction, 0.0, 1.0, low_open=True)
    if val_fraction >= 1.0:
        raise ConfigError(f"val_fraction must be < 1, got {val_fraction}")
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])
