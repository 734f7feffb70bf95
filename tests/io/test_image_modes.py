"""Every pixel format the accepted formats can yield decodes faithfully or fails typed; the
pixel limit is ours, from the header, for every format; no message quotes the data.

Real encoded files throughout (tests/hostile.py builds them), pixel values asserted.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import (
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

from abs_ray.errors import ImageDecodeError, ImageTooLargeError, UnsupportedImageModeError
from abs_ray.io import decode_image, image_size
from tests.hostile import (
    MAX_PIXELS,
    OK,
    _chunk,
    _pack12,
    corpus,
    echoes_content,
    png_raw,
    tiff_raw,
)

FILES = [e for e in corpus() if not e.local_only]


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("entry", FILES, ids=[e.name for e in FILES])
def test_corpus_file_decodes_to_its_pixels_or_its_typed_error(entry):
    if entry.expected == OK:
        out = decode_image(entry.data, max_pixels=MAX_PIXELS)
        assert out.dtype == np.uint8 and out.shape[:2] == entry.shape, entry.why
        if entry.pixels is not None:
            diff = np.abs(out.astype(int) - entry.pixels.astype(int)).max()
            assert diff <= entry.tolerance, (entry.name, diff)
        rgba = decode_image(entry.data, max_pixels=MAX_PIXELS, alpha=True)
        np.testing.assert_array_equal(rgba[..., :3], out)
        return
    with pytest.raises(ImageDecodeError) as info:
        decode_image(entry.data, max_pixels=MAX_PIXELS)
    assert type(info.value).__name__ == entry.expected, (entry.name, str(info.value))
    assert not echoes_content(str(info.value), entry.data), str(info.value)


def test_sixteen_bit_gray_is_scaled_by_its_range_not_clipped_to_white():
    values = np.array([[0, 255, 256, 257, 1000, 32768, 65280, 65535]], np.uint16)
    expected = np.array([[0, 0, 1, 1, 3, 128, 255, 255]], np.uint8)
    files = {
        "png": png_raw(8, 1, 16, 0, [values.astype(">u2").tobytes()]),
        "tiff I;16": _save(Image.fromarray(values), "TIFF"),
        "tiff I;16B": _save(
            Image.frombytes("I;16B", (8, 1), values.astype(">u2").tobytes()), "TIFF"
        ),
    }
    for name, data in files.items():
        assert Image.open(io.BytesIO(data)).mode.startswith("I;16"), name
        out = decode_image(data)
        np.testing.assert_array_equal(out, np.repeat(expected[..., None], 3, axis=-1), name)


def test_twelve_bit_tiff_is_scaled_by_twelve_bits():
    values = np.array([[0, 16, 2048, 4095]], np.uint16)
    out = decode_image(tiff_raw(4, 1, _pack12(values), bits=12))
    np.testing.assert_array_equal(out[..., 0], [[0, 1, 128, 255]])


def test_sixteen_bit_transparency_becomes_alpha():
    values = np.array([[0, 1000, 65535]], np.uint16)
    trns = _chunk(b"tRNS", b"\x03\xe8")  # gray 1000 is transparent
    data = png_raw(3, 1, 16, 0, [values.astype(">u2").tobytes()], extra=trns)
    out = decode_image(data, alpha=True)
    np.testing.assert_array_equal(out[0, :, 3], [255, 0, 255])
    np.testing.assert_array_equal(out[0, :, 0], [0, 3, 255])


def test_premultiplied_gray_alpha_is_unpremultiplied():
    la = np.array([[[100, 200], [0, 0], [50, 100]]], np.uint8)  # luminance * alpha, alpha
    out = decode_image(tiff_raw(3, 1, la.tobytes(), bits=8, samples=2, extra_samples=1), alpha=True)
    np.testing.assert_array_equal(out[0, :, 0], [128, 0, 128])
    np.testing.assert_array_equal(out[0, :, 3], [200, 0, 100])


def test_lab_tiff_is_converted_as_colours_not_as_numbers():
    lab = Image.new("LAB", (3, 1))
    for x, value in enumerate([(255, 128, 128), (0, 128, 128), (136, 208, 195)]):
        lab.putpixel((x, 0), value)
    out = decode_image(_save(lab, "TIFF")).astype(int)
    assert (out[0, 0] >= 253).all() and (out[0, 1] <= 2).all()
    red, green, blue = out[0, 2]
    assert red > 200 and green < 80 and blue < 80  # L*53 a*+80 b*+67 is a saturated red


@pytest.mark.parametrize(
    "data, mode",
    [
        (_save(Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32), "F"), "TIFF"), "F"),
        (tiff_raw(2, 1, np.array([0, 70000], "<u4").tobytes(), bits=32), "I"),
        (tiff_raw(2, 1, np.array([-5, 9], "<i2").tobytes(), bits=16, sample_format=2), "I"),
        (tiff_raw(2, 1, np.array([-5, 9], "<i4").tobytes(), bits=32, sample_format=2), "I"),
    ],
    ids=["float32", "uint32", "int16", "int32"],
)
def test_modes_without_a_display_range_are_refused_from_the_header(data, mode):
    assert Image.open(io.BytesIO(data)).mode == mode
    for call in (lambda: decode_image(data), lambda: image_size(data)):
        with pytest.raises(UnsupportedImageModeError, match=f"mode {mode}"):
            call()


def test_every_mode_the_accepted_plugins_can_yield_is_decided():
    """PNG, JPEG, GIF, WebP, BMP and TIFF modes: each converted or refused, none left to
    Pillow's default ``convert`` by accident."""
    modes = {m for m, _ in PngImagePlugin._MODES.values()}
    modes |= {m for m, _ in TiffImagePlugin.OPEN_INFO.values()}
    modes |= {m for m, _ in BmpImagePlugin.BIT2MODE.values()} | {"1", "L", "RGBA"}
    modes |= {"L", "RGB", "CMYK"}  # JPEG (JpegImagePlugin sets these three)
    modes |= {"P", "L", "RGB", "RGBA"}  # GIF frames
    modes |= {"RGB", "RGBA"}  # WebP
    assert JpegImagePlugin and GifImagePlugin  # the plugins the sets above describe
    from abs_ray.io.image import _CONVERTERS, _REFUSED_MODES

    decided = set(_CONVERTERS) | set(_REFUSED_MODES)
    assert modes <= decided, sorted(modes - decided)
    assert not set(_CONVERTERS) & set(_REFUSED_MODES)


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("RGBa", (50, 50, 50, 128), (99, 99, 99)),  # premultiplied: 50 * 255 / 128
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("YCbCr", (128, 128, 128), (128, 128, 128)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ],
)
def test_converters_of_modes_no_accepted_file_yields_today(mode, value, expected):
    from abs_ray.io.image import _CONVERTERS

    img = Image.new(mode, (2, 1), value)
    out = _CONVERTERS[mode](img, False, 8)
    np.testing.assert_array_equal(out, np.full((1, 2, 3), expected, np.uint8))


# --- the pixel limit -------------------------------------------------------------------


BOMBS = [e for e in FILES if e.expected == "ImageTooLargeError"]


@pytest.mark.parametrize("entry", BOMBS, ids=[e.name for e in BOMBS])
@pytest.mark.parametrize("limit", [MAX_PIXELS, 4_194_304, 40_000_000])
def test_header_bombs_quote_our_limit_for_every_format(entry, limit):
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(entry.data, max_pixels=limit)
    assert f"over the limit of {limit}" in str(info.value)
    assert "178956970" not in str(info.value)  # Pillow's own hard stop


def test_our_limit_may_exceed_pillows_own():
    # 15000 x 15000 = 225 MP: over Pillow's 178,956,970-pixel hard stop, under this limit.
    data = png_raw(15_000, 15_000, 8, 0, [b""])
    assert image_size(data, max_pixels=300_000_000) == (15_000, 15_000)
    with pytest.raises(ImageTooLargeError, match="over the limit of 200000000"):
        image_size(data, max_pixels=200_000_000)


def test_bytes_quoted_by_pillow_never_reach_the_message():
    png = _save(Image.new("RGB", (4, 4)), "PNG")
    at = png.index(b"IHDR") + 17
    broken = png[:at] + b"\xde\xad\xbe\xef" + png[at + 4 :]  # Pillow: "... in b'IHDR'"
    with pytest.raises(ImageDecodeError) as info:
        decode_image(broken)
    assert "b'" not in str(info.value) and "\\x" not in str(info.value)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(b"root:x:0:0:root:/root:/bin/bash\n")
    assert "root:x" not in str(info.value) and "b'" not in str(info.value)
