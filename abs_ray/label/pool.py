"""The images being labelled: one split of a data set, in a seeded random order.

The paper draws its labelled images at random, so the pool order is a seeded permutation of
the split ("next" without a detector walks it). The pool reads images for the page and the
model, remembers the ones that cannot be read (they are never handed out), and matches the
records of a labels CSV to its images: by manifest id, else by a unique file name (as the
authors publish their CSVs).

Example:
    >>> import tempfile
    >>> from abs_ray.data import SyntheticConfig, write_synthetic
    >>> data = tempfile.mkdtemp()
    >>> _ = write_synthetic(data, SyntheticConfig(n_train=4, n_val=0, n_test=0, size=16))
    >>> pool = ImagePool(data, split="train", seed=0)
    >>> len(pool), pool.read_rgb(pool.ids[0]).shape
    (4, (16, 16, 3))
    >>> first = pool.ids[0].rsplit("/", 1)[-1]
    >>> pool.labelled({first: "0110", "elsewhere/x.png": "1111"}) == {pool.ids[0]: (first, "0110")}
    True
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Collection, Mapping

import numpy as np
import pandas as pd

from abs_ray.data import load_dataset
from abs_ray.errors import ConfigError, ImageDecodeError, StorageError
from abs_ray.io import S3Options, decode_image, read_bytes
from abs_ray.label.errors import UnknownImageError

logger = logging.getLogger(__name__)

__all__ = ["ImagePool"]


class ImagePool:
    """The images of one split, in a seeded random order, and which of them cannot be read.

    Thread-safe: the order and the lookups never change; the set of unreadable images is
    guarded by its own lock (held only to read or update that set).

    Args:
        data: data set URI (any layout :func:`abs_ray.data.load_dataset` reads).
        split: the split to label; None = every split.
        seed: seed of the order.
        s3: S3 settings; default from the environment.

    Raises:
        ConfigError: no images in ``split``.
        LayoutError, StorageError: the data set cannot be read.
    """

    def __init__(
        self, data: str, split: str | None, seed: int, s3: S3Options | None = None
    ) -> None:
        manifest = load_dataset(data, s3)
        frame = manifest if split is None else manifest[manifest["split"] == split]
        if len(frame) == 0:
            splits = sorted(manifest["split"].astype(str).unique())
            raise ConfigError(f"no images in split {split!r} of {data} (splits there: {splits})")
        order = np.random.default_rng(seed).permutation(len(frame))
        self.data, self.split, self._s3 = data, split, s3
        #: The pool's manifest rows, in pool order.
        self.frame: pd.DataFrame = frame.iloc[order].reset_index(drop=True)
        #: Image ids in pool order.
        self.ids: list[str] = [str(i) for i in self.frame["id"]]
        self._pos = {image_id: k for k, image_id in enumerate(self.ids)}
        self._uris = dict(zip(self.ids, self.frame["image_uri"].astype(str), strict=True))
        self._classes = dict(zip(self.ids, self.frame["label"].astype(int), strict=True))
        self._by_name: dict[str, list[str]] = {}
        for image_id, uri in self._uris.items():
            self._by_name.setdefault(os.path.basename(uri.replace("\\", "/")), []).append(image_id)
        self._lock = threading.Lock()
        self._unreadable: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def check_id(self, image_id: str) -> str:
        """Return ``image_id`` if it is in the pool, else raise :class:`UnknownImageError`."""
        if image_id not in self._pos:
            split = "every split" if self.split is None else f"split {self.split!r}"
            raise UnknownImageError(
                f"unknown image id {image_id!r}: not among the {len(self.ids)} images of "
                f"{split} of {self.data}"
            )
        return image_id

    def position(self, image_id: str) -> int:
        """The image's place in the pool order (0 = first)."""
        return self._pos[image_id]

    def label(self, image_id: str) -> int:
        """The data set's class label of the image."""
        return self._classes[image_id]

    def read_rgb(self, image_id: str) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8; one that fails is remembered as unreadable.

        Raises:
            ImageDecodeError, StorageError: it cannot be read.
        """
        try:
            return decode_image(read_bytes(self._uris[image_id], self._s3))
        except (ImageDecodeError, StorageError) as exc:
            with self._lock:
                self._unreadable[image_id] = f"{type(exc).__name__}: {exc}"
            logger.warning("image %s cannot be read: %s", image_id, exc)
            raise

    def num_unreadable(self) -> int:
        """How many images failed to read so far."""
        with self._lock:
            return len(self._unreadable)

    def unlabelled(self, labelled: Collection[str]) -> list[str]:
        """Readable image ids not in ``labelled``, in pool order."""
        with self._lock:
            unreadable = set(self._unreadable)
        return [i for i in self.ids if i not in labelled and i not in unreadable]

    def match(self, info: str) -> str | None:
        """The pool id a label record's ``info`` names: itself, or the one image with that
        file name; None when it names none (or several)."""
        if info in self._pos:
            return info
        hits = self._by_name.get(info.replace("\\", "/").rsplit("/", 1)[-1], [])
        return hits[0] if len(hits) == 1 else None

    def labelled(self, records: Mapping[str, str]) -> dict[str, tuple[str, str]]:
        """``image id -> (CSV info, mask)`` for the records that match pool images.

        ``info`` equal to an id wins; otherwise a record whose last path part is the file name
        of exactly one pool image matches it (as :func:`csv_labels_for_manifest` does).
        """
        out = {info: (info, mask) for info, mask in records.items() if info in self._pos}
        for info, mask in records.items():
            key = self.match(info)
            if key is not None and key not in out:
                out[key] = (info, mask)
        return out
