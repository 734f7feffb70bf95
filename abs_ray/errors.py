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


class NotAFileError(StorageError):
    """The path names a directory, pipe, socket or device where a regular file belongs."""


class OutsideDataRootError(StorageError, PermissionError):
    """A file inside a local data set resolves (through a symbolic link) outside its root."""


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
    """More pixels (or file bytes) than the configured limit (decompression-bomb guard)."""

    reason = "too_large"


class UnsupportedImageModeError(ImageDecodeError):
    """The image's pixel format has no faithful 8-bit RGB conversion (float, signed, 32-bit)."""

    reason = "unsupported_mode"


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


# --- runs ----------------------------------------------------------------------------------


class LabelsRequiredError(ConfigError):
    """The detector would be trained, but the data set has neither masks nor patch labels."""


class WeakDetectorError(AbsRayError, RuntimeError):
    """A trained detector is below the quality floor on its held-out labelled patches."""


class NothingProducedError(AbsRayError, RuntimeError):
    """A run processed its inputs but every one failed: there is no output to commit."""
