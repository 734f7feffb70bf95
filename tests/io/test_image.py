import io

import numpy as np
import pytest
from PIL import Image

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
from abs_ray.io import decode_image, encode_jpeg, encode_png, image_size


def _image(h=32, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_png_round_trip_is_exact():
    arr = _image()
    out = decode_image(encode_png(arr))
    assert out.dtype == np.uint8 and out.shape == (32, 48, 3)
    np.testing.assert_array_equal(out, arr)


def test_jpeg_decodes_close():
    arr = np.full((16, 16, 3), 120, np.uint8)
    out = decode_image(encode_jpeg(arr))
    assert np.abs(out.astype(int) - 120).max() <= 3


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16"])
def test_any_mode_becomes_rgb(mode):
    img = Image.new(mode, (8, 5))
    fmt = "TIFF" if mode in ("CMYK", "I;16") else "PNG"
    out = decode_image(_save(img, fmt))
    assert out.shape == (5, 8, 3) and out.dtype == np.uint8


def test_alpha_is_kept_on_request():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[1:3, 1:3, 3] = 255
    out = decode_image(encode_png(rgba), alpha=True)
    assert out.shape == (4, 4, 4)
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])
    rgb = decode_image(encode_png(_image(4, 4)), alpha=True)
    assert (rgb[..., 3] == 255).all()


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (10, 4))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    out = decode_image(_save(img, "JPEG", exif=exif))
    assert out.shape == (10, 4, 3)


def test_empty():
    with pytest.raises(EmptyImageError):
        decode_image(b"")


@pytest.mark.parametrize("data", [b"hello world, not an image", b"%PDF-1.4\n", b"\x00" * 100])
def test_not_an_image(data):
    with pytest.raises(NotAnImageError, match="not an image"):
        decode_image(data)


def test_eps_is_refused_as_not_an_image():
    # Pillow would hand EPS to Ghostscript; it is not an accepted format.
    with pytest.raises(NotAnImageError):
        decode_image(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt):
    data = _save(Image.fromarray(_image(64, 64)), fmt)
    with pytest.raises(TruncatedImageError):
        decode_image(data[: len(data) // 2])


def test_corrupt_png_data():
    data = bytearray(encode_png(_image(64, 64)))
    # Keep the signature and IHDR; scramble the compressed pixel data.
    start = data.index(b"IDAT") + 8
    data[start : start + 200] = bytes(200)
    with pytest.raises((CorruptImageError, TruncatedImageError)) as info:
        decode_image(bytes(data))
    assert isinstance(info.value, ImageDecodeError)


def test_too_many_pixels_checked_before_decoding():
    data = encode_png(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ImageTooLargeError, match="10000 pixels, over the limit of 9999"):
        decode_image(data, max_pixels=9999)
    assert decode_image(data, max_pixels=10000).shape == (100, 100, 3)
    assert image_size(data) == (100, 100)


def test_decompression_bomb_header_refused_without_allocating():
    # A PNG header claiming 100k x 100k pixels (10 gigapixels) followed by no real data.
    import struct
    import zlib

    def chunk(tag, payload):
        return (
            struct.pack(">I", len(payload))
            + tag
            + payload
            + struct.pack(">I", zlib.crc32(tag + payload))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 10))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb)


def test_errors_have_distinct_reasons():
    reasons = {
        c.reason
        for c in (
            EmptyImageError,
            NotAnImageError,
            TruncatedImageError,
            CorruptImageError,
            ImageTooLargeError,
            UnsupportedImageModeError,
        )
    }
    assert len(reasons) == 6


def test_encode_rejects_bad_arrays():
    with pytest.raises(ConfigError, match="uint8"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ConfigError, match=r"\(4, 4, 2\)"):
        encode_png(np.zeros((4, 4, 2), np.uint8))
