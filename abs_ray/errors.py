"""Typed errors raised at abs-ray's boundaries.

Every error a caller can act on is a subclass of :class:`AbsRayError`; messages carry the
actual value and what was allowed. The HTTP layer maps them to 4xx codes, the pipeline records
them per input in ``errors/``.

Each also derives from the builtin it refines (``ValueError``, ``FileNotFoundError``, ...) so
generic handlers keep working.
"""

from __future__ import annotations


class AbsRayError(Exception):
    """Base of every error abs-ray raises on purpose."""


class ConfigError(AbsRayError, ValueError):
    """A configuration value is out of range or inconsistent (e.g. grid vs image size)."""


# --- storage -------------------------------------------------------------------------------


class StorageError(AbsRayError, OSError):
    """Object storage or file system failure."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object, folder or bucket does not exist."""


class StorageAccessError(StorageError, PermissionError):
    """Credentials are missing, wrong, or lack permission."""


# --- image decoding ------------------------------------------------------------------------


class ImageDecodeError(AbsRayError, ValueError):
    """Base of the image decoding errors; ``reason`` is a short stable code for records."""

    reason = "decode_error"


class EmptyImageError(ImageDecodeError):
    """Zero bytes."""

    reason = "empty"


class NotAnImageError(ImageDecodeError):
    """The bytes are not an image in an accepted format."""

    reason = "not_an_image"


class TruncatedImageError(ImageDecodeError):
    """The image header is valid but the data ends early."""

    reason = "truncated"


class CorruptImageError(ImageDecodeError):
    """The image header is valid but the data cannot be decoded."""

    reason = "corrupt"


class ImageTooLargeError(ImageDecodeError):
    """More pixels than the configured limit (decompression-bomb guard)."""

    reason = "too_large"


# --- data sets and labels ------------------------------------------------------------------


class DatasetError(AbsRayError, ValueError):
    """A data set cannot be read: unknown layout, missing columns, bad rows."""


class LayoutError(DatasetError):
    """No known data set layout was found at a location."""


class ManifestRowError(DatasetError):
    """A row of a metadata or manifest file is invalid; the message names file and row."""


class LabelFormatError(DatasetError):
    """A patch-label record (``info,mask`` CSV) is malformed; the message names the row."""


class AssetUnavailableError(AbsRayError, RuntimeError):
    """Files the project builds from (e.g. Debian photo packages) cannot be obtained here."""
