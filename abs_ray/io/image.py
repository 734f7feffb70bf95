"""Safe image decoding and encoding.

Decoding accepts a fixed set of raster formats, checks the pixel count from the header
*before* decoding (decompression bombs) against the caller's ``max_pixels`` (never Pillow's
own process-wide limit), converts every pixel format it accepts faithfully to 8-bit RGB(A),
and raises one distinct typed error per failure so a pipeline can record why each input was
rejected and go on with the rest. No error message quotes the data's bytes.

Pixel formats (Pillow modes) of the accepted files and how each becomes 8-bit RGB:

=================================  =========================================================
mode (from)                        conversion
=================================  =========================================================
1, L, P, LA, PA, RGB, RGBA         Pillow's; palette and ``tRNS`` transparency kept as alpha
(all formats)                      (16-bit PNG/TIFF RGB(A), LA, CMYK: Pillow keeps the high
                                   byte, ``v >> 8``, the same rule as 16-bit gray below)
CMYK (JPEG, TIFF)                  Pillow's plain CMYK → RGB (no ICC colour management)
YCbCr (TIFF)                       Pillow's (full-range BT.601)
LAB (TIFF CIELab)                  Pillow's, through LittleCMS: CIE L*a*b* (D50) → sRGB
La (TIFF, premultiplied alpha)     luminance un-premultiplied, then as LA
I;16, I;16B (16-bit gray PNG/TIFF) scaled by the format's range: ``v >> (bits - 8)``
                                   (16 bits: ``v >> 8``; 12-bit TIFF: ``v >> 4``)
I (TIFF signed or 32-bit integer)  refused (:class:`UnsupportedImageModeError`): no
                                   standard display range
F (TIFF 32-bit float)              refused: TIFF defines no display range for float samples
                                   (its Min/MaxSampleValue tags are statistics only)
=================================  =========================================================

``RGBa`` and ``HSV`` (no accepted format yields them today) are converted by Pillow; any
other mode is refused.

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
import re
import struct
import threading
import warnings
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageFile, ImageOps

from abs_ray.errors import (
    ConfigError,
    CorruptImageError,
    EmptyImageError,
    ImageDecodeError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedImageModeError,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_MAX_PIXELS",
    "decode_image",
    "encode_jpeg",
    "encode_png",
    "image_size",
    "max_encoded_bytes",
]

#: Formats decoded; anything else (EPS, PDF, ...) is refused as not an image.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")
#: Default pixel limit: 40 MP (e.g. 8000 x 5000). Pass ``max_pixels`` to change it.
DEFAULT_MAX_PIXELS = 40_000_000

# A bytes literal in an exception text (Pillow quotes chunk names and headers: "broken PNG
# file (chunk b'...')"): replaced so that no message carries the data's bytes.
_BYTES_LITERAL = re.compile(r"""b(['"])(?:\\.|(?!\1).)*\1""")
_PILLOW_PIXELS = re.compile(r"\((\d+) pixels\)")
_PILLOW_LIMIT_LOCK = threading.Lock()


def _describe(exc: BaseException) -> str:
    """The exception's text without any quoted bytes, at most 200 characters."""
    text = _BYTES_LITERAL.sub("<bytes>", str(exc)).strip()
    return text[:200] or type(exc).__name__


def _let_pillow_decode(max_pixels: int) -> None:
    """Keep Pillow's own bomb check from refusing what ``max_pixels`` allows.

    Pillow stops at 2 x ``Image.MAX_IMAGE_PIXELS`` (178,956,970 by default) in some load
    paths (TIFF tiles, GIF frames). Only a ``max_pixels`` above that raises the process-wide
    value, and never lowers it; our own check, from the header, comes first either way.
    """
    with _PILLOW_LIMIT_LOCK:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and 2 * limit < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


def _identify(data: bytes) -> ImageFile.ImageFile:
    """Read the header with the plugin of the accepted format whose signature ``data`` has.

    This is ``Image.open(..., formats=ACCEPTED_FORMATS)`` without its decompression-bomb
    check, which raises on Pillow's process-wide limit (and quotes it) before the size can be
    compared with the caller's; the plugins' factories read the header only.

    Raises:
        NotAnImageError: no accepted format's signature.
        TruncatedImageError, CorruptImageError: a signature, then a header that cannot be read.
    """
    Image.init()  # registers every plugin once (TIFF and WebP are not in Pillow's preinit)
    fp = io.BytesIO(data)
    prefix = fp.read(16)
    failure: tuple[str, Exception] | None = None
    for fmt in ACCEPTED_FORMATS:
        factory, accept = Image.OPEN[fmt]
        if accept is not None:
            verdict = accept(prefix)
            if not verdict or isinstance(verdict, str):
                continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error, EOFError) as exc:
            failure = failure or (fmt, exc)  # as Image.open: maybe another format reads it
    if failure is None:
        raise NotAnImageError(
            f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)}); {len(data)} bytes"
        )
    fmt, exc = failure
    cause = exc.__cause__ or exc.__context__  # Pillow wraps struct.error in SyntaxError
    ended = (EOFError, struct.error)
    if isinstance(exc, ended) or isinstance(cause, ended) or "truncat" in str(exc).lower():
        raise TruncatedImageError(f"{fmt} header ends early: {_describe(exc)}") from exc
    raise CorruptImageError(f"unreadable {fmt} header: {_describe(exc)}") from exc


def _riff_truncated(data: bytes) -> bool:
    """A WebP whose RIFF header declares more bytes than there are (libwebp only says
    "could not create decoder object")."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return False
    return struct.unpack("<I", data[4:8])[0] + 8 > len(data)


def _open(data: bytes, max_pixels: int) -> ImageFile.ImageFile:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NotAnImageError(f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise EmptyImageError("empty input: 0 bytes")
    if max_pixels <= 0:
        raise ConfigError(f"max_pixels must be positive, got {max_pixels}")
    _let_pillow_decode(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = _identify(bytes(data))
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:  # a GIF frame larger than its screen
        found = _PILLOW_PIXELS.search(str(exc))
        size = f"{int(found.group(1))} pixels" if found else "larger than its header says"
        raise ImageTooLargeError(f"image is {size}, over the limit of {max_pixels}") from exc
    except Exception as exc:  # any other failure of a plugin on hostile bytes: damage
        if isinstance(exc, EOFError) or _riff_truncated(data):
            raise TruncatedImageError(f"image data ends early: {_describe(exc)}") from exc
        raise CorruptImageError(f"unreadable image header: {_describe(exc)}") from exc
    w, h = img.size
    if w <= 0 or h <= 0:
        raise CorruptImageError(f"image has no pixels: {w}x{h}")
    if w * h > max_pixels:
        raise ImageTooLargeError(
            f"image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}"
        )
    if img.mode in _REFUSED_MODES:
        raise UnsupportedImageModeError(
            f"{img.format} image of {w}x{h} pixels in mode {img.mode}: {_REFUSED_MODES[img.mode]}"
        )
    if img.mode not in _CONVERTERS:
        raise UnsupportedImageModeError(
            f"{img.format} image in pixel mode {img.mode!r}, which has no faithful 8-bit RGB "
            f"conversion; supported modes: {', '.join(sorted(_CONVERTERS))}"
        )
    return img


def max_encoded_bytes(max_pixels: int = DEFAULT_MAX_PIXELS) -> int:
    """Most bytes a file of at most ``max_pixels`` pixels needs, to refuse bigger files unread.

    8 bytes a pixel (16-bit RGBA, uncompressed) plus 16 MiB of metadata (EXIF, ICC, XMP).

    >>> max_encoded_bytes(1_000_000)
    24777216
    """
    return 8 * max_pixels + 16 * 2**20


def image_size(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """(width, height) read from the header only, with the same checks as :func:`decode_image`."""
    return _open(data, max_pixels).size


def decode_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, alpha: bool = False
) -> np.ndarray:
    """Decode image bytes to a uint8 array.

    EXIF orientation is applied; every accepted pixel format is converted to 8 bits per
    channel as the module table says (16-bit samples scaled by their range, never clipped).

    Args:
        data: encoded image bytes.
        max_pixels: refuse images with more pixels than this, from the header, before
            decoding them.
        alpha: return RGBA (H, W, 4) instead of RGB (H, W, 3); images without an alpha
            channel or transparency get alpha = 255.

    Returns:
        (H, W, 3) or (H, W, 4) uint8 array.

    Raises:
        EmptyImageError: zero bytes.
        NotAnImageError: not an image in an accepted format.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        UnsupportedImageModeError: a pixel format without a faithful 8-bit conversion
            (32-bit float, signed or 32-bit integer samples).
        TruncatedImageError: the data ends before the image does.
        CorruptImageError: the data cannot be decoded.

    Messages name the format, sizes and limits, never the data's bytes.
    """
    img = _open(data, max_pixels)
    fmt, bits = img.format, _bits_per_sample(img)  # the header's, before exif_transpose copies
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = ImageOps.exif_transpose(img)
            pixels = _CONVERTERS[img.mode](img, alpha, bits)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{fmt} image is over the limit of {max_pixels} pixels") from exc
    except Exception as exc:  # Pillow's decoders raise many types on hostile data: all damage
        text = _describe(exc)
        if isinstance(exc, EOFError) or "truncat" in text.lower():
            raise TruncatedImageError(f"truncated {fmt} image: {text}") from exc
        raise CorruptImageError(f"corrupt {fmt} image: {text}") from exc
    return np.ascontiguousarray(pixels, dtype=np.uint8)


# --- pixel formats -------------------------------------------------------------------------


def _pillow(img: Image.Image, alpha: bool, bits: int) -> np.ndarray:
    """Pillow's own conversion; through RGBA when the image has transparency to keep."""
    if alpha or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        return rgba if alpha else rgba[..., :3]
    return np.asarray(img.convert("RGB"))


def _gray(gray: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """(H, W) uint8 gray [+ (H, W) uint8 alpha] -> (H, W, 3 or 4)."""
    planes = [gray, gray, gray] + ([] if alpha is None else [alpha])
    return np.stack(planes, axis=-1)


def _bits_per_sample(img: Image.Image) -> int:
    """Bits per sample of a 9-16-bit image: TIFF's BitsPerSample (e.g. 12), else 16.

    PNG stores every 16-bit sample at full range (``sBIT`` is a hint only), as TIFF does for
    its BitsPerSample.
    """
    tags = getattr(img, "tag_v2", None)
    bits = tags.get(258) if tags is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    return int(bits) if isinstance(bits, int) and 8 < bits <= 16 else 16


def _sixteen_bit(img: Image.Image, alpha: bool, bits: int) -> np.ndarray:
    """``I;16*`` gray: scaled by the format's range (``v >> (bits - 8)``), never clipped."""
    values = np.asarray(img).astype(np.uint16)  # native byte order whatever the file's
    gray = np.minimum(values >> (bits - 8), 255).astype(np.uint8)
    if not alpha:
        return _gray(gray, None)
    opacity = np.full(gray.shape, 255, np.uint8)
    transparent = img.info.get("transparency")  # PNG tRNS: one 16-bit gray value
    if isinstance(transparent, int):
        opacity[values == transparent] = 0
    return _gray(gray, opacity)


def _premultiplied_gray(img: Image.Image, alpha: bool, bits: int) -> np.ndarray:
    """``La`` (luminance premultiplied by alpha): un-premultiplied as Pillow does ``RGBa``."""
    la = np.asarray(img).astype(np.uint32)  # (H, W, 2)
    lum, opacity = la[..., 0], la[..., 1]
    gray = np.where(
        opacity > 0, np.minimum((lum * 255 + opacity // 2) // np.maximum(opacity, 1), 255), 0
    )
    return _gray(gray.astype(np.uint8), opacity.astype(np.uint8) if alpha else None)


#: Mode → converter ``(loaded image, alpha, bits per sample) -> (H, W, 3 or 4) uint8``.
_CONVERTERS: dict[str, Callable[[Image.Image, bool], np.ndarray]] = {
    **dict.fromkeys(
        ("1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBa", "CMYK", "YCbCr", "LAB", "HSV"),
        _pillow,
    ),
    **dict.fromkeys(("I;16", "I;16L", "I;16B", "I;16N"), _sixteen_bit),
    "La": _premultiplied_gray,
}
#: Modes refused, and why.
_REFUSED_MODES = {
    "I": "signed or 32-bit integer samples have no standard display range; save it as "
    "8- or 16-bit unsigned",
    "F": "floating-point samples have no display range in TIFF (its Min/MaxSampleValue tags "
    "are statistics only); save it as 8- or 16-bit unsigned",
}


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
