"""The shared labels file: the published ``info,mask`` CSV, updated one image at a time.

Many browsers label through one server at once. :meth:`LabelStore.put` holds a process lock,
re-reads the CSV from storage, replaces or appends that one image's record and writes the whole
file back with :func:`abs_ray.io.write_text` (a rename for local files, a single PUT for
``s3://``), so

- saves to different images never lose each other (each starts from the latest file);
- a reader (another page, the training job) never sees a half-written file;
- records keep their order (existing ones in place, new ones appended) and records of images
  the app does not show are kept as they are.

One server per labels file: the lock is per process (see :mod:`abs_ray.label`).

Example:
    >>> import os, tempfile
    >>> store = LabelStore(os.path.join(tempfile.mkdtemp(), "labels.csv"), grid=2)
    >>> store.put("a.png", "1000")
    1
    >>> print(read_text(store.uri), end="")
    info,mask
    a.png,1000
    >>> store.put("b.png", "10x0")
    Traceback (most recent call last):
        ...
    abs_ray.web.errors.InvalidRequestError: mask may contain only '0' and '1', got 'x' at position 2
"""

from __future__ import annotations

import logging
import threading

import torch

from abs_ray.errors import LabelFormatError, StorageNotFoundError
from abs_ray.io import S3Options, read_text, write_text
from abs_ray.ops.label_csv import PatchLabel, format_patch_label_csv, parse_patch_label_csv
from abs_ray.web.errors import InvalidRequestError

logger = logging.getLogger(__name__)

__all__ = ["LabelStore", "check_mask_string", "mask_to_grid"]


def check_mask_string(mask: object, grid: int) -> str:
    """Validate a label payload: ``G * G`` characters ``'0'``/``'1'``, row-major, 1 = foreground.

    Args:
        mask: the value received.
        grid: patches per side ``G``.

    Returns:
        ``mask`` unchanged.

    Raises:
        InvalidRequestError: not a string, the wrong length, or a character other than 0/1.

    Example:
        >>> check_mask_string("0110", grid=2)
        '0110'
        >>> check_mask_string("011", grid=2)
        Traceback (most recent call last):
            ...
        abs_ray.web.errors.InvalidRequestError: mask must have 4 characters (grid 2x2), got 3
    """
    if not isinstance(mask, str):
        raise InvalidRequestError(
            f"mask must be a string of '0'/'1' characters, got {type(mask).__name__}"
        )
    if len(mask) != grid * grid:
        raise InvalidRequestError(
            f"mask must have {grid * grid} characters (grid {grid}x{grid}), got {len(mask)}"
        )
    bad = next((i for i, c in enumerate(mask) if c not in "01"), None)
    if bad is not None:
        raise InvalidRequestError(
            f"mask may contain only '0' and '1', got {mask[bad]!r} at position {bad}"
        )
    return mask


def mask_to_grid(mask: str, grid: int) -> torch.Tensor:
    """A checked mask string as a ``(G, G)`` float32 grid in ``{0, 1}``, 1 = foreground.

    Example:
        >>> mask_to_grid("0110", 2)
        tensor([[0., 1.],
                [1., 0.]])
    """
    check_mask_string(mask, grid)
    return torch.tensor([c == "1" for c in mask], dtype=torch.float32).view(grid, grid)


class LabelStore:
    """One ``info,mask`` CSV at a URI, read once and updated per image under a lock.

    Args:
        uri: the CSV (local path or ``s3://``); it need not exist yet.
        grid: patches per side ``G``; an existing file must use the same.
        s3: S3 settings; default from the environment.

    Raises:
        LabelFormatError: the existing file is malformed or has another grid size.
        StorageError: it cannot be read.
    """

    def __init__(self, uri: str, grid: int, s3: S3Options | None = None) -> None:
        self.uri = uri
        self.grid = grid
        self._s3 = s3
        self._lock = threading.Lock()
        self._records = self._read()
        logger.info("labels %s: %d records (G=%d)", uri, len(self._records), grid)

    def _read(self) -> dict[str, str]:
        try:
            text = read_text(self.uri, self._s3)
        except StorageNotFoundError:
            return {}
        if not text.strip():
            return {}
        try:
            labels = parse_patch_label_csv(text, grid=self.grid)
        except LabelFormatError as exc:
            raise LabelFormatError(f"labels file {self.uri}: {exc}") from exc
        return {label.info: label.mask_string for label in labels}

    def _write(self, records: dict[str, str]) -> None:
        labels = [PatchLabel(info, mask_to_grid(m, self.grid)) for info, m in records.items()]
        write_text(self.uri, format_patch_label_csv(labels), self._s3)

    def records(self) -> dict[str, str]:
        """``info -> mask string`` as last read or written by this process, in file order."""
        with self._lock:
            return dict(self._records)

    def refresh(self) -> dict[str, str]:
        """Re-read the file (picking up edits made elsewhere) and return its records."""
        with self._lock:
            self._records = self._read()
            return dict(self._records)

    def put(self, info: str, mask: str) -> int:
        """Set one image's label: re-read, replace or append its record, write atomically.

        Args:
            info: the record key (a manifest id or the key an existing record uses).
            mask: ``G * G`` characters ``'0'``/``'1'``.

        Returns:
            The number of records in the file after the write.

        Raises:
            InvalidRequestError: a bad ``mask`` or an empty ``info``.
            LabelFormatError: the file on storage has become malformed.
            StorageError: reading or writing fails.
        """
        check_mask_string(mask, self.grid)
        if not isinstance(info, str) or not info.strip():
            raise InvalidRequestError(f"image key must be a non-empty string, got {info!r}")
        with self._lock:
            records = self._read()
            records[info] = mask
            self._write(records)
            self._records = records
            return len(records)
