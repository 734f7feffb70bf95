"""Safe image decoding and encoding.

Decoding accepts a fixed set of raster formats, checks the pixel count from the header
*before* decoding (decompression bombs), and raises one distinct typed error per failure so
a pipeline can record why each input was rejected and go on with the rest.

Example:
    >>> import numpy as np
    >>> png = encode_png(np.zeros((4, 6, 3), dtype=np.uint8))
    >>> decode_image(png).shape
    (4, 6, 3)
    >>> decode_image(b"")
    Traceback (most recent call last):
    ...
    abs_ray.errors.EmptyImageError: empty input: 0 bytes
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from abs_ray.errors import (
    ConfigError,
    CorruptImageError,
    EmptyImageError,
    ImageDecodeError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "decode_image",
    "encode_jpeg",
    "encode_png",
    "image_size",
]

#: Formats decoded; anything else (EPS, PDF, ...) is refused as not an image.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
#: Default pixel limit: 40 MP (e.g. 8000 x 5000). Pass ``max_pixels`` to change it.
DEFAULT_MAX_PIXELS = 40_000_000


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NotAnImageError(f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise EmptyImageError("empty input: 0 bytes")
    if max_pixels <= 0:
        raise ConfigError(f"max_pixels must be positive, got {max_pixels}")
    try:
        with warnings.catch_warnings():
            # Pillow warns (then raises) on bombs by its own global limit; we check our own.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError as exc:
        raise NotAnImageError(
            f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)}); "
            f"{len(data)} bytes starting {bytes(data[:8])!r}"
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(str(exc)) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(f"unreadable image header: {exc}") from exc
    w, h = img.size
    if w <= 0 or h <= 0:
        raise CorruptImageError(f"image has no pixels: {w}x{h}")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}"
        )
    return img


def image_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) read from the header only, with the same checks as :func:`decode_image`."""
    return _open(data, max_pixels).size


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, alpha: bool = False
) -> np.ndarray:
    """Decode image bytes to a uint8 array.

    EXIF orientation is applied; palette, grayscale and CMYK images are converted.

    Args:
        data: encoded image bytes.
        max_pixels: refuse images with more pixels than this, before decoding them.
        alpha: return RGBA (H, W, 4) instead of RGB (H, W, 3); images without an alpha
            channel get alpha = 255.

    Returns:
        (H, W, 3) or (H, W, 4) uint8 array.

    Raises:
        EmptyImageError: zero bytes.
        NotAnImageError: not an image in an accepted format.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        TruncatedImageError: the data ends before the image does.
        CorruptImageError: the data cannot be decoded.
    """
    img = _open(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGBA" if alpha else "RGB")
    except ImageDecodeError:
        raise
    except (OSError, EOFError, ValueError, SyntaxError, struct.error) as exc:
        text = str(exc)
        if isinstance(exc, EOFError) or "truncat" in text.lower():
            raise TruncatedImageError(f"truncated {img.format} image: {text}") from exc
        raise CorruptImageError(f"corrupt {img.format} image: {text}") from exc
    return np.asarray(img, dtype=np.uint8).copy()


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode an (H, W), (H, W, 3) or (H, W, 4) uint8 array as PNG (lossless).

    ``compress_level`` 1 favours speed; PNG is lossless at every level.
    """
    return _encode(array, "PNG", compress_level=compress_level)


def encode_jpeg(array: np.ndarray, quality: int = 92) -> bytes:
    """Encode an (H, W) or (H, W, 3) uint8 array as JPEG."""
    return _encode(array, "JPEG", quality=quality)


def _encode(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ConfigError(f"image array must be uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ConfigError(f"image array must be (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()
