"""The background bank: inpainted backgrounds the service pastes foregrounds onto.

A bank is either the pipeline's output (``<out>/data/*.parquet``, the rows
``abs_ray.pipeline`` writes: ``id``, ``label``, ``group``, ``background_png``; see its module
docstring) at a configured URI, or a small **demo bank** of synthetic "land" and "water"
backgrounds generated at start-up (:func:`abs_ray.data.synthetic.render_background`), so the
service runs on a fresh clone with nothing prepared.

Backgrounds are decoded once and kept as uint8 arrays at their own size; the service resizes
the chosen ones to each request's image. The bank is read only from its configured URI: a
caller can filter it (label, group) but never point it elsewhere.

Example:
    >>> bank = BackgroundBank.demo(size=4, image_size=16)
    >>> len(bank), sorted(set(bank.labels.tolist()))
    (4, [0, 1])
    >>> bank.select(labels=[1]).tolist()
    [2, 3]
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from abs_ray.errors import ConfigError, DatasetError, ImageDecodeError
from abs_ray.io import S3Options, decode_image, join, list_files, read_bytes
from abs_ray.web.errors import BankSelectionError

__all__ = ["BANK_COLUMNS", "BackgroundBank"]

logger = logging.getLogger(__name__)

#: Columns read from the pipeline's ``data/`` Parquet files.
BANK_COLUMNS = ("id", "label", "group", "background_png")


@dataclasses.dataclass(frozen=True, eq=False)
class BackgroundBank:
    """Decoded backgrounds with their class and group.

    Attributes:
        images: one ``(H, W, 3)`` uint8 array per background (sizes may differ).
        labels: ``(N,)`` int64 class of the image each background came from.
        groups: ``(N,)`` int64 group (Waterbirds: ``label * 2 + place``).
        ids: ``N`` string ids (the pipeline's row ids, or ``demo/<i>``).
        source: ``demo`` or the bank URI.

    Raises:
        ConfigError: empty, or lengths that disagree.
    """

    images: Sequence[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    ids: Sequence[str]
    source: str

    def __post_init__(self) -> None:
        n = len(self.images)
        if n == 0:
            raise ConfigError(f"background bank {self.source!r} is empty")
        if not (len(self.labels) == len(self.groups) == len(self.ids) == n):
            raise ConfigError(
                f"bank columns disagree: {n} images, {len(self.labels)} labels, "
                f"{len(self.groups)} groups, {len(self.ids)} ids"
            )

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def demo(cls, size: int = 32, image_size: int = 224, seed: int = 0) -> BackgroundBank:
        """Synthetic backgrounds: half "land" (label 0, group 0), half "water" (label 1, group 3).

        As in the demo data set's train split (100 % correlated): class 0 lives on land,
        class 1 on water, so a class-uniform draw gives either type with probability 1/2.

        Args:
            size: number of backgrounds, ``>= 2``.
            image_size: their side in pixels.
            seed: seed of the textures.
        """
        from abs_ray.data.synthetic import render_background

        if isinstance(size, bool) or not isinstance(size, int) or size < 2:
            raise ConfigError(f"demo bank size must be an int >= 2, got {size!r}")
        labels = np.array([i * 2 // size for i in range(size)], dtype=np.int64)
        images = [
            render_background(int(y), image_size, np.random.default_rng([seed, i]))
            for i, y in enumerate(labels)
        ]
        return cls(
            images=images,
            labels=labels,
            groups=labels * 3,
            ids=[f"demo/{i}" for i in range(size)],
            source="demo",
        )

    @classmethod
    def from_pipeline_output(
        cls,
        uri: str,
        limit: int = 1000,
        max_pixels: int = 4 * 1024 * 1024,
        s3: S3Options | None = None,
    ) -> BackgroundBank:
        """Read the backgrounds of a pipeline output (``<uri>/data/*.parquet``).

        Only :data:`BANK_COLUMNS` are read (not the foregrounds). Files are read in name
        order until ``limit`` rows; rows whose background does not decode are skipped with a
        warning.

        Args:
            uri: the pipeline's ``out`` (local folder or ``s3://`` prefix).
            limit: most backgrounds to load.
            max_pixels: pixel limit per background.
            s3: S3 settings; default from the environment.

        Raises:
            StorageNotFoundError: no such folder.
            DatasetError: no Parquet file, or files without the needed columns.
            ConfigError: no background could be loaded.
        """
        import pyarrow.parquet as pq

        files = list_files(join(uri, "data"), suffixes=[".parquet"], s3=s3)
        if not files:
            raise DatasetError(f"no Parquet files under {join(uri, 'data')}: not a pipeline output")
        images: list[np.ndarray] = []
        labels: list[int] = []
        groups: list[int] = []
        ids: list[str] = []
        skipped = 0
        for path in sorted(files):
            if len(images) >= limit:
                break
            table_file = pq.ParquetFile(io.BytesIO(read_bytes(path, s3)))
            missing = [c for c in BANK_COLUMNS if c not in table_file.schema_arrow.names]
            if missing:
                raise DatasetError(
                    f"{path} lacks column(s) {missing}; a bank needs {list(BANK_COLUMNS)}"
                )
            table = table_file.read(columns=list(BANK_COLUMNS))
            for row in table.to_pylist():
                if len(images) >= limit:
                    break
                try:
                    image = decode_image(row["background_png"], max_pixels=max_pixels)
                except ImageDecodeError as exc:
                    skipped += 1
                    logger.warning("bank row %s skipped: %s", row["id"], exc)
                    continue
                images.append(image)
                labels.append(int(row["label"]))
                groups.append(int(row["group"]) if row["group"] is not None else -1)
                ids.append(str(row["id"]))
        if not images:
            raise ConfigError(f"no usable background in {uri} ({skipped} skipped)")
        logger.info("bank %s: %d backgrounds (%d skipped)", uri, len(images), skipped)
        return cls(
            images=images,
            labels=np.asarray(labels, dtype=np.int64),
            groups=np.asarray(groups, dtype=np.int64),
            ids=ids,
            source=uri,
        )

    def select(
        self, labels: Sequence[int] | None = None, groups: Sequence[int] | None = None
    ) -> np.ndarray:
        """Indices of the backgrounds whose label is in ``labels`` and group in ``groups``.

        ``None`` (or empty) means no filter on that column.

        Raises:
            BankSelectionError: nothing matches (the message lists what the bank has).
        """
        keep = np.ones(len(self), dtype=bool)
        if labels:
            keep &= np.isin(self.labels, np.asarray(list(labels), dtype=np.int64))
        if groups:
            keep &= np.isin(self.groups, np.asarray(list(groups), dtype=np.int64))
        indices = np.flatnonzero(keep)
        if indices.size == 0:
            raise BankSelectionError(
                f"no background matches label={list(labels or [])} group={list(groups or [])}; "
                f"the bank has labels {sorted(set(self.labels.tolist()))} and groups "
                f"{sorted(set(self.groups.tolist()))}"
            )
        return indices

    def fingerprint(self) -> str:
        """Short hash of ids, labels, groups and sizes: replaying a seed needs the same bank."""
        digest = hashlib.sha256()
        for i, image in enumerate(self.images):
            digest.update(
                f"{self.ids[i]}|{self.labels[i]}|{self.groups[i]}|{image.shape}\n".encode()
            )
        return digest.hexdigest()[:16]

    def info(self) -> dict[str, Any]:
        """Size, source, fingerprint and counts per label and group (for ``/v1/info``)."""
        return {
            "source": self.source,
            "size": len(self),
            "fingerprint": self.fingerprint(),
            "labels": {str(k): v for k, v in sorted(Counter(self.labels.tolist()).items())},
            "groups": {str(k): v for k, v in sorted(Counter(self.groups.tolist()).items())},
        }
