"""A fixed, deterministic hostile corpus: what every entrypoint must decode or refuse.

Each :class:`Entry` is one file (or directory, pipe, link) with the outcome every entrypoint
must report: ``"ok"`` or the name of the typed error (``"NotAnImageError"``, ...). Everything
is made here with Pillow, numpy and bytes; nothing is downloaded or committed as binary.

- :func:`corpus` — the entries, the same on every call;
- :func:`write_entry` / :func:`write_corpus` — put them on disk (links and pipes need a
  local folder; :attr:`Entry.local_only` marks them);
- :func:`echoes_content` — whether a message quotes an entry's bytes (it never may);
- :data:`SECRET` — a token planted in every text-like file and in the file that escaping
  links point to; it must never appear in an error message or a log.

Pixel expectations: ``Entry.pixels`` is the exact RGB a faithful decoder returns (16-bit
samples scaled by their range, ``v >> 8``), within ``Entry.tolerance`` for lossy formats;
``Entry.shape`` is the decoded (H, W) (EXIF rotation applied).

Example:
    >>> entries = corpus()
    >>> len(entries) >= 60 and len({e.name for e in entries}) == len(entries)
    True
    >>> sorted({e.expected for e in entries})[:3]
    ['CorruptImageError', 'EmptyImageError', 'ImageTooLargeError']
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import struct
import zlib
from collections import Counter

import numpy as np
from PIL import Image

SECRET = b"s3cr3t-t0ken-7f3a"
#: Pixel limit the entrypoints run the corpus with (bombs are far above, ok images far below).
MAX_PIXELS = 1_000_000
#: Size of the sparse file: over the byte limit derived from :data:`MAX_PIXELS`.
SPARSE_BYTES = 64 * 2**20

OK = "ok"


@dataclasses.dataclass(frozen=True)
class Entry:
    """One corpus item.

    Attributes:
        name: file name (may hold spaces, unicode, ``#``, ``%``, ``?``...).
        expected: ``"ok"`` or the typed error's class name.
        data: the file's bytes (``kind == "file"``), else None.
        kind: ``file``, ``dir`` (a directory named like an image, an image inside), ``fifo``,
            ``sparse`` (a sparse file of :data:`SPARSE_BYTES`), ``link_secret`` /
            ``link_image`` / ``link_dir`` (symlinks out of the data root to a secret text, a
            valid image, a folder), ``link_inside`` (to an image beside it), ``link_broken``,
            ``link_loop``.
        pixels: exact decoded (H, W, 3) uint8 expected, when known.
        tolerance: largest per-channel difference allowed from ``pixels`` (lossy formats).
        shape: decoded (H, W), for ok entries.
        why: what the entry tests.
    """

    name: str
    expected: str
    data: bytes | None = None
    kind: str = "file"
    pixels: np.ndarray | None = dataclasses.field(default=None, compare=False, repr=False)
    tolerance: int = 0
    shape: tuple[int, int] | None = None
    why: str = ""

    @property
    def local_only(self) -> bool:
        """Links, pipes, directories and sparse files exist only in a local folder."""
        return self.kind != "file"


# --- encoders ------------------------------------------------------------------------------


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(tag: bytes, payload: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(tag + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", crc)


def png_raw(
    width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes], extra=b""
) -> bytes:
    """A PNG written by hand (for what Pillow cannot write: 16-bit RGB(A)/LA, 2-bit gray).

    ``rows`` are the unfiltered scanlines; ``extra`` chunks go between IHDR and IDAT.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\0" + r for r in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + extra
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


_TIFF_TYPES = {"H": 3, "I": 4, "d": 12}


def tiff_raw(
    width: int,
    height: int,
    strip: bytes,
    *,
    bits: int,
    samples: int = 1,
    photometric: int = 1,
    sample_format: int = 1,
    extra_samples: int | None = None,
) -> bytes:
    """A little-endian, uncompressed, one-strip TIFF written by hand.

    Args:
        strip: the pixel bytes, rows packed as TIFF stores them.
        bits: bits per sample (all samples alike).
        samples: samples per pixel.
        photometric: 1 = BlackIsZero, 2 = RGB.
        sample_format: 1 = unsigned, 2 = signed, 3 = IEEE float.
        extra_samples: the ExtraSamples value (1 = associated alpha, 2 = unassociated).
    """
    tags: list[tuple[int, str, list]] = [
        (256, "I", [width]),
        (257, "I", [height]),
        (258, "H", [bits] * samples),
        (259, "H", [1]),
        (262, "H", [photometric]),
        (273, "I", [0]),  # strip offset, patched below
        (277, "H", [samples]),
        (278, "I", [height]),
        (279, "I", [len(strip)]),
        (284, "H", [1]),
        (339, "H", [sample_format] * samples),
    ]
    if extra_samples is not None:
        tags.append((338, "H", [extra_samples]))
    tags.sort()
    ifd_size = 2 + 12 * len(tags) + 4
    data_start = 8 + ifd_size
    blobs = b""
    entries = []
    for tag, fmt, values in tags:
        payload = struct.pack("<" + fmt * len(values), *values)
        if len(payload) <= 4:
            entries.append((tag, fmt, len(values), payload.ljust(4, b"\0")))
        else:
            entries.append((tag, fmt, len(values), struct.pack("<I", data_start + len(blobs))))
            blobs += payload
    strip_offset = data_start + len(blobs)
    out = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, fmt, count, value in entries:
        if tag == 273:
            value = struct.pack("<I", strip_offset)
        out += struct.pack("<HHI", tag, _TIFF_TYPES[fmt], count) + value
    return out + struct.pack("<I", 0) + blobs + strip


def _pack12(values: np.ndarray) -> bytes:
    """Rows of 12-bit samples packed MSB first, each row padded to a byte."""
    out = b""
    for row in values:
        bits = "".join(f"{int(v):012b}" for v in row)
        bits += "0" * (-len(bits) % 8)
        out += int(bits, 2).to_bytes(len(bits) // 8, "big")
    return out


def _gif_header(width: int, height: int, frame: tuple[int, int] | None = None) -> bytes:
    """A GIF: logical screen ``width x height``, one 1-pixel-LZW frame of size ``frame``."""
    fw, fh = frame or (width, height)
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global palette of 2 colours
        + b"\0\0\0\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, fw, fh, 0)
        + b"\x02\x02\x44\x01\x00;"
    )


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """Patch the SOF0 frame size of a baseline JPEG."""
    at = data.index(b"\xff\xc0") + 5
    return data[:at] + struct.pack(">HH", height, width) + data[at + 4 :]


def _bmp_with_size(data: bytes, width: int, height: int) -> bytes:
    return data[:18] + struct.pack("<ii", width, height) + data[26:]


def _webp_lossless_with_size(data: bytes, width: int, height: int) -> bytes:
    """Patch the 14-bit size fields of a simple (VP8L) lossless WebP."""
    at = data.index(b"VP8L") + 8
    assert data[at] == 0x2F
    word = struct.unpack("<I", data[at + 1 : at + 5])[0]
    word = (word & ~0x0FFFFFFF) | (width - 1) | ((height - 1) << 14)
    return data[: at + 1] + struct.pack("<I", word) + data[at + 5 :]


def _rng_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(gray, np.uint8)[..., None], 3, axis=-1)


def _quadrants(h: int, w: int) -> np.ndarray:
    """Four flat colours (red, green, blue, white) in the quadrants: easy to follow through
    rotations and lossy coding."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2 :] = (0, 255, 0)
    img[h // 2 :, : w // 2] = (0, 0, 255)
    img[h // 2 :, w // 2 :] = (255, 255, 255)
    return img


# --- the corpus ----------------------------------------------------------------------------


def _ok(name: str, data: bytes, pixels: np.ndarray, tolerance: int = 0, why: str = "") -> Entry:
    pixels = np.asarray(pixels, np.uint8)
    return Entry(
        name, OK, data, pixels=pixels, tolerance=tolerance, shape=pixels.shape[:2], why=why
    )


@functools.cache
def corpus() -> tuple[Entry, ...]:
    """The corpus entries, built deterministically (cached)."""
    e: list[Entry] = []
    rgb = _rng_image(12, 16, seed=1)
    quad = _quadrants(32, 64)  # 16x32 quadrants: whole JPEG blocks

    # --- good files, every accepted format and the modes Pillow hands back ---------------
    e.append(_ok("rgb.png", _save(Image.fromarray(rgb), "PNG"), rgb, why="8-bit RGB"))
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    e.append(_ok("gray.png", _save(Image.fromarray(gray), "PNG"), _rgb(gray), why="L"))
    bw = (np.indices((6, 10)).sum(0) % 2).astype(bool)
    e.append(_ok("bilevel.png", _save(Image.fromarray(bw), "PNG"), _rgb(bw * 255), why="mode 1"))
    e.append(
        _ok(
            "gray2bit.png",
            png_raw(4, 2, 2, 0, [bytes([0b00011011]), bytes([0b11100100])]),
            _rgb([[0, 85, 170, 255], [255, 170, 85, 0]]),
            why="2-bit gray, scaled by Pillow",
        )
    )
    pal = Image.fromarray(quad).quantize(4)
    e.append(_ok("palette.png", _save(pal, "PNG"), np.asarray(pal.convert("RGB")), why="P"))
    pal_alpha = pal.copy()
    pal_alpha.info["transparency"] = bytes([0, 128, 255, 255])
    e.append(
        _ok(
            "palette_alpha.png",
            _save(pal_alpha, "PNG", transparency=bytes([0, 128, 255, 255])),
            np.asarray(pal.convert("RGB")),
            why="P + tRNS: colours kept",
        )
    )
    la = np.stack([gray, 255 - gray], axis=-1)
    e.append(_ok("gray_alpha.png", _save(Image.fromarray(la, "LA"), "PNG"), _rgb(gray), why="LA"))
    rgba = np.concatenate([rgb, np.full((12, 16, 1), 77, np.uint8)], axis=-1)
    e.append(_ok("rgba.png", _save(Image.fromarray(rgba), "PNG"), rgb, why="RGBA"))
    g16 = np.array([[0, 255, 256, 257, 1000], [32768, 40000, 65280, 65534, 65535]], np.uint16)
    g16_8 = (g16 >> 8).astype(np.uint8)
    e.append(
        _ok(
            "gray16.png",
            png_raw(5, 2, 16, 0, [r.astype(">u2").tobytes() for r in g16]),
            _rgb(g16_8),
            why="16-bit gray (I;16): scaled, not clipped to white",
        )
    )
    e.append(
        _ok(
            "gray16_trns.png",
            png_raw(
                5, 2, 16, 0, [r.astype(">u2").tobytes() for r in g16], _chunk(b"tRNS", b"\x03\xe8")
            ),
            _rgb(g16_8),
            why="16-bit gray with a transparent value",
        )
    )
    c16 = np.array([[[0, 257, 65535], [1000, 30000, 65280]]] * 2, np.uint16)  # 2 x 2
    e.append(
        _ok(
            "rgb16.png",
            png_raw(2, 2, 16, 2, [r.astype(">u2").tobytes() for r in c16]),
            (c16 >> 8).astype(np.uint8),
            why="16-bit RGB",
        )
    )
    c16a = np.array([[[0, 40000, 65535, 65535], [65535, 0, 512, 0]]] * 2, np.uint16)
    e.append(
        _ok(
            "rgba16.png",
            png_raw(2, 2, 16, 6, [r.astype(">u2").tobytes() for r in c16a]),
            (c16a[..., :3] >> 8).astype(np.uint8),
            why="16-bit RGBA",
        )
    )
    la16 = np.array([[[1000, 65535], [65535, 0], [40000, 1]]] * 2, np.uint16)
    e.append(
        _ok(
            "gray_alpha16.png",
            png_raw(3, 2, 16, 4, [r.astype(">u2").tobytes() for r in la16]),
            _rgb((la16[..., 0] >> 8).astype(np.uint8)),
            why="16-bit LA",
        )
    )
    frames = [Image.fromarray(_quadrants(8, 8)), Image.fromarray(255 - _quadrants(8, 8))]
    e.append(
        _ok(
            "animated.apng.png",
            _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=50),
            _quadrants(8, 8),
            why="APNG: the first frame",
        )
    )
    e.append(
        _ok(
            "photo.jpg",
            _save(Image.fromarray(quad), "JPEG", quality=95, subsampling=0),
            quad,
            40,
            "JPEG RGB",
        )
    )
    e.append(
        _ok("gray.jpg", _save(Image.fromarray(gray), "JPEG", quality=95), _rgb(gray), 12, "JPEG L")
    )
    red_cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    e.append(
        _ok(
            "cmyk.jpg",
            _save(red_cmyk, "JPEG", quality=95),
            np.tile(np.uint8([255, 0, 0]), (16, 16, 1)),
            8,
            "CMYK JPEG (Adobe inverted)",
        )
    )
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    e.append(
        _ok(
            "exif_rotated.jpg",
            _save(Image.fromarray(quad), "JPEG", quality=95, subsampling=0, exif=exif),
            np.rot90(quad, k=-1),
            40,
            "EXIF orientation 6 applied",
        )
    )
    e.append(
        _ok(
            "progressive.jpg",
            _save(Image.fromarray(quad), "JPEG", quality=95, subsampling=0, progressive=True),
            quad,
            40,
            "progressive JPEG",
        )
    )
    e.append(_ok("still.gif", _save(pal, "GIF"), np.asarray(pal.convert("RGB")), why="GIF"))
    e.append(
        _ok(
            "animated.gif",
            _save(frames[0].quantize(4), "GIF", save_all=True, append_images=[frames[1]]),
            _quadrants(8, 8),
            why="animated GIF: the first frame",
        )
    )
    e.append(
        _ok(
            "lossless.webp",
            _save(Image.fromarray(rgb), "WEBP", lossless=True),
            rgb,
            why="WebP lossless",
        )
    )
    e.append(
        _ok(
            "alpha.webp",
            _save(Image.fromarray(rgba), "WEBP", lossless=True, exact=True),
            rgb,
            why="WebP RGBA",
        )
    )
    ramp = np.zeros((32, 64, 3), np.uint8)  # smooth: lossy 4:2:0 chroma stays close
    ramp[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)
    ramp[..., 1] = 120
    ramp[..., 2] = np.linspace(255, 0, 32, dtype=np.uint8)[:, None]
    e.append(_ok("lossy.webp", _save(Image.fromarray(ramp), "WEBP", quality=95), ramp, 12, "WebP"))
    e.append(
        _ok(
            "animated.webp",
            _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], lossless=True),
            _quadrants(8, 8),
            why="animated WebP: the first frame",
        )
    )
    e.append(_ok("rgb.bmp", _save(Image.fromarray(rgb), "BMP"), rgb, why="BMP 24-bit"))
    e.append(_ok("palette.bmp", _save(pal, "BMP"), np.asarray(pal.convert("RGB")), why="BMP 8-bit"))
    e.append(_ok("rgb.tif", _save(Image.fromarray(rgb), "TIFF"), rgb, why="TIFF RGB"))
    e.append(
        _ok(
            "lzw.tif",
            _save(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"),
            rgb,
            why="TIFF LZW (libtiff)",
        )
    )
    e.append(
        _ok(
            "gray16.tif",
            _save(Image.fromarray(g16), "TIFF"),
            _rgb(g16_8),
            why="16-bit gray TIFF (I;16)",
        )
    )
    e.append(
        _ok(
            "gray16_msb.tif",
            _save(Image.frombytes("I;16B", (5, 2), g16.astype(">u2").tobytes()), "TIFF"),
            _rgb(g16_8),
            why="16-bit big-endian gray TIFF (I;16B)",
        )
    )
    g12 = np.array([[0, 15, 16, 4000], [4095, 2048, 100, 7]], np.uint16)
    e.append(
        _ok(
            "gray12.tif",
            tiff_raw(4, 2, _pack12(g12), bits=12),
            _rgb((g12 >> 4).astype(np.uint8)),
            why="12-bit gray TIFF: scaled by 12 bits",
        )
    )
    e.append(
        _ok(
            "rgb16.tif",
            tiff_raw(2, 2, c16.astype("<u2").tobytes(), bits=16, samples=3, photometric=2),
            (c16 >> 8).astype(np.uint8),
            why="16-bit RGB TIFF",
        )
    )
    premul = np.array([[[100, 200], [0, 0], [255, 255], [50, 100]]] * 2, np.uint8)  # L*a, a
    e.append(
        _ok(
            "gray_premultiplied.tif",
            tiff_raw(4, 2, premul.tobytes(), bits=8, samples=2, extra_samples=1),
            _rgb([[128, 0, 255, 128]] * 2),
            why="La (associated alpha): un-premultiplied",
        )
    )
    e.append(
        _ok(
            "cmyk.tif",
            _save(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "TIFF"),
            np.tile(np.uint8([255, 0, 0]), (4, 4, 1)),
            why="CMYK TIFF",
        )
    )
    lab = Image.new("LAB", (2, 2), (255, 128, 128))  # L* = 100: white
    lab.putpixel((1, 0), (0, 128, 128))  # L* = 0: black
    lab.putpixel((1, 1), (0, 128, 128))
    e.append(
        _ok(
            "lab.tif",
            _save(lab, "TIFF"),
            np.uint8([[[255, 255, 255], [0, 0, 0]]] * 2),
            2,
            "CIELab TIFF through LittleCMS",
        )
    )
    pages = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    e.append(
        _ok(
            "multipage.tif",
            _save(pages[0], "TIFF", save_all=True, append_images=pages[1:]),
            rgb,
            why="multi-page TIFF: the first page",
        )
    )
    one = np.uint8([[[9, 99, 199]]])
    e.append(_ok("one_pixel.png", _save(Image.fromarray(one), "PNG"), one, why="1x1"))
    strip = np.zeros((1, 100_000, 3), np.uint8)
    strip[0, ::2] = (200, 100, 50)
    e.append(_ok("strip_1x100000.png", _save(Image.fromarray(strip), "PNG"), strip, why="1x100000"))
    tall = np.zeros((3000, 1, 3), np.uint8)
    tall[::3, 0] = (10, 20, 30)
    e.append(_ok("tall_3000x1.gif", _save(Image.fromarray(tall), "GIF"), tall, why="3000x1 GIF"))
    # Content wins over the suffix.
    e.append(
        _ok(
            "jpeg_named.png",
            _save(Image.fromarray(quad), "JPEG", quality=95, subsampling=0),
            quad,
            40,
            "JPEG under a .png name",
        )
    )
    e.append(
        _ok(
            "png_named.gif",
            _save(Image.fromarray(rgb), "PNG"),
            rgb,
            why="PNG under a .gif name",
        )
    )
    e.append(
        _ok(
            "webp_named.tif",
            _save(Image.fromarray(rgb), "WEBP", lossless=True),
            rgb,
            why="WebP under a .tif name",
        )
    )
    # Polyglots and payloads riding in valid images: decoded, the payload ignored.
    small = _save(Image.fromarray(rgb), "PNG")
    e.append(
        _ok(
            "png_then_zip.png",
            small + b"PK\x03\x04" + SECRET + b"\0" * 30 + b"PK\x05\x06" + b"\0" * 18,
            rgb,
            why="PNG + appended ZIP",
        )
    )
    e.append(
        _ok(
            "png_then_html.png",
            small + b"<html><script>alert('" + SECRET + b"')</script></html>",
            rgb,
            why="PNG + appended HTML",
        )
    )
    text_png = _save(
        Image.fromarray(rgb),
        "PNG",
        pnginfo=_pnginfo({"Comment": "<?php system($_GET['c']); ?> " + SECRET.decode()}),
    )
    e.append(_ok("php_in_text_chunk.png", text_png, rgb, why="PHP in a tEXt chunk"))
    jpeg = _save(Image.fromarray(quad), "JPEG", quality=95, subsampling=0)
    comment = b"<?php echo '" + SECRET + b"'; ?>"
    jpeg_com = jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]
    e.append(_ok("php_in_comment.jpg", jpeg_com, quad, 40, "PHP in a JPEG COM segment"))
    gif = _save(pal, "GIF")
    script = b"alert('" + SECRET + b"')"
    gif_ext = gif[:-1] + b"\x21\xfe" + bytes([len(script)]) + script + b"\x00;"
    e.append(_ok("script_in_comment.gif", gif_ext, np.asarray(pal.convert("RGB")), why="GIF"))
    # Odd but legal names.
    for name in (
        "with space.png",
        "ünïcødé_猫.png",
        "hash#frag.png",
        "percent%41%2F.png",
        "question?x=1.png",
        "-leading-dash.png",
        "semi;colon,comma'quote.png",
        "plus+and&amp=.png",
        "L" * 200 + ".png",
    ):
        e.append(_ok(name, small, rgb, why="odd file name"))
    e.append(
        Entry(
            "inside_link.png",
            OK,
            kind="link_inside",
            pixels=rgb,
            shape=rgb.shape[:2],
            why="a symlink to a file beside it, inside the root: followed",
        )
    )

    # --- refused ---------------------------------------------------------------------------
    e.append(Entry("empty.png", "EmptyImageError", b"", why="zero bytes"))
    e.append(Entry("empty.jpg", "EmptyImageError", b"", why="zero bytes, .jpg"))
    e.append(Entry("passwd.png", "NotAnImageError", b"root:x:0:0:" + SECRET + b":/root:/bin/sh\n"))
    e.append(Entry("page.jpg", "NotAnImageError", b"<!doctype html><p>" + SECRET + b"</p>"))
    e.append(Entry("doc.png", "NotAnImageError", b"%PDF-1.4\n%" + SECRET + b"\n"))
    e.append(
        Entry(
            "ghostscript.png",
            "NotAnImageError",
            b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%" + SECRET,
            why="EPS would run Ghostscript: not an accepted format",
        )
    )
    e.append(
        Entry(
            "vector.png",
            "NotAnImageError",
            b'<svg xmlns="http://www.w3.org/2000/svg"><text>' + SECRET + b"</text></svg>",
        )
    )
    e.append(Entry("zeros.bmp", "NotAnImageError", b"\0" * 100))
    e.append(Entry("program.gif", "NotAnImageError", b"\x7fELF\x02\x01\x01" + SECRET))
    for fmt, name in (("JPEG2000", "jp2.png"), ("ICO", "icon.png"), ("PPM", "pixmap.png")):
        e.append(
            Entry(
                name,
                "NotAnImageError",
                _save(Image.fromarray(rgb), fmt),
                why=f"{fmt}: decodable by Pillow but not accepted",
            )
        )
    png = _save(Image.fromarray(_rng_image(64, 64, seed=2)), "PNG")
    e.append(Entry("truncated.png", "TruncatedImageError", png[: len(png) // 2]))
    e.append(
        Entry(
            "header_only.png",
            "TruncatedImageError",
            png[: png.index(b"IDAT") - 4],
            why="signature + IHDR, no data",
        )
    )
    big_jpeg = _save(Image.fromarray(_rng_image(64, 64, seed=3)), "JPEG", quality=90)
    e.append(Entry("truncated.jpg", "TruncatedImageError", big_jpeg[: len(big_jpeg) // 2]))
    big_gif = _save(Image.fromarray(_rng_image(64, 64, seed=4)).quantize(64), "GIF")
    e.append(Entry("truncated.gif", "TruncatedImageError", big_gif[: len(big_gif) // 2]))
    big_webp = _save(Image.fromarray(_rng_image(64, 64, seed=5)), "WEBP", lossless=True)
    e.append(Entry("truncated.webp", "TruncatedImageError", big_webp[: len(big_webp) // 2]))
    big_tif = _save(Image.fromarray(_rng_image(64, 64, seed=6)), "TIFF")
    e.append(Entry("truncated.tif", "TruncatedImageError", big_tif[: len(big_tif) // 2]))
    big_bmp = _save(Image.fromarray(_rng_image(64, 64, seed=7)), "BMP")
    e.append(Entry("truncated.bmp", "TruncatedImageError", big_bmp[: len(big_bmp) // 2]))
    corrupt = bytearray(png)
    start = corrupt.index(b"IDAT") + 4
    corrupt[start + 2 : start + 200] = bytes(198)
    length = struct.unpack(">I", corrupt[start - 8 : start - 4])[0]
    corrupt[start + length : start + length + 4] = struct.pack(
        ">I", zlib.crc32(bytes(corrupt[start - 4 : start + length]))
    )
    e.append(Entry("corrupt_idat.png", "CorruptImageError", bytes(corrupt), why="zlib data"))
    bad_crc = bytearray(png)
    at = bad_crc.index(b"IHDR") + 17
    bad_crc[at : at + 4] = b"\xde\xad\xbe\xef"
    e.append(Entry("bad_ihdr_crc.png", "CorruptImageError", bytes(bad_crc), why="IHDR CRC"))
    e.append(
        Entry(
            "gif_js_polyglot.gif",
            "TruncatedImageError",
            b"GIF89a/*\x00\x00\x00\x00*/=1;alert('" + SECRET + b"');",
            why="GIF/JavaScript polyglot: a trailer before any image",
        )
    )
    # Header bombs: huge declared sizes, tiny files. Refused from the header by our limit.
    e.append(Entry("bomb.png", "ImageTooLargeError", png_raw(100_000, 100_000, 8, 2, [b""])))
    e.append(
        Entry(
            "bomb_under_pillow_limit.png",
            "ImageTooLargeError",
            png_raw(12_000, 12_000, 8, 0, [b""]),
            why="144 MP: under Pillow's own hard stop, over ours",
        )
    )
    e.append(Entry("bomb.jpg", "ImageTooLargeError", _jpeg_with_size(big_jpeg, 65_000, 65_000)))
    e.append(Entry("bomb.gif", "ImageTooLargeError", _gif_header(65_535, 65_535, (1, 1))))
    e.append(
        Entry(
            "bomb_frame.gif",
            "ImageTooLargeError",
            _gif_header(1, 1, (65_535, 65_535)),
            why="a 1x1 screen with a 65535x65535 frame",
        )
    )
    e.append(
        Entry(
            "bomb_frame_moderate.gif",
            "ImageTooLargeError",
            _gif_header(1, 1, (10_000, 10_000)),
            why="frame over our limit, under Pillow's",
        )
    )
    small_webp = _save(Image.fromarray(rgb), "WEBP", lossless=True)
    e.append(
        Entry(
            "bomb.webp", "ImageTooLargeError", _webp_lossless_with_size(small_webp, 16_384, 16_384)
        )
    )
    e.append(
        Entry(
            "bomb.bmp",
            "ImageTooLargeError",
            _bmp_with_size(_save(Image.fromarray(rgb), "BMP"), 100_000, 100_000),
        )
    )
    e.append(
        Entry("bomb.tif", "ImageTooLargeError", tiff_raw(100_000, 100_000, b"\0" * 16, bits=8))
    )
    # Pixel formats without a faithful 8-bit conversion.
    floats = np.array([[0.0, 0.5, 1.0, 3.5]], np.float32)
    e.append(
        Entry(
            "float32.tif",
            "UnsupportedImageModeError",
            _save(Image.fromarray(floats, "F"), "TIFF"),
            why="F: no display range",
        )
    )
    e.append(
        Entry(
            "int32.tif",
            "UnsupportedImageModeError",
            tiff_raw(2, 1, np.array([0, 70000], "<u4").tobytes(), bits=32),
            why="32-bit unsigned",
        )
    )
    e.append(
        Entry(
            "int16_signed.tif",
            "UnsupportedImageModeError",
            tiff_raw(2, 1, np.array([-5, 300], "<i2").tobytes(), bits=16, sample_format=2),
            why="16-bit signed",
        )
    )

    # --- things that are not (regular, inside) files: local folders only ------------------
    e.append(Entry("directory.png", "NotAFileError", kind="dir", why="a directory named .png"))
    e.append(Entry("pipe.png", "NotAFileError", kind="fifo", why="a named pipe: would block"))
    e.append(Entry("sparse.png", "ImageTooLargeError", kind="sparse", why="64 MiB of nothing"))
    e.append(Entry("escape_secret.png", "OutsideDataRootError", kind="link_secret"))
    e.append(Entry("escape_image.png", "OutsideDataRootError", kind="link_image"))
    e.append(Entry("escape_dir.png", "OutsideDataRootError", kind="link_dir"))
    e.append(Entry("broken_link.png", "StorageNotFoundError", kind="link_broken"))
    e.append(Entry("loop_link.png", "StorageError", kind="link_loop"))
    return tuple(e)


def _pnginfo(text: dict[str, str]):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    return info


# --- writing -------------------------------------------------------------------------------


def write_outside(folder: str | os.PathLike) -> str:
    """Files outside any data root that escaping links point to; returns the folder."""
    folder = os.fspath(folder)
    os.makedirs(os.path.join(folder, "dir"), exist_ok=True)
    with open(os.path.join(folder, "secret.txt"), "wb") as f:
        f.write(b"root:x:0:0:" + SECRET + b"\n")
    image = _save(Image.fromarray(_rng_image(8, 8, seed=9)), "PNG")
    for path in (os.path.join(folder, "image.png"), os.path.join(folder, "dir", "inner.png")):
        with open(path, "wb") as f:
            f.write(image)
    return folder


def write_entry(entry: Entry, path: str | os.PathLike, outside: str | None = None) -> None:
    """Create ``entry`` at ``path`` (parent folders made). Links need ``outside``
    (:func:`write_outside`)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    kind = entry.kind
    if kind == "file":
        with open(path, "wb") as f:
            f.write(entry.data)
    elif kind == "dir":
        os.makedirs(path)
        with open(os.path.join(path, "inner.png"), "wb") as f:  # an image inside: not listed
            f.write(_save(Image.new("RGB", (4, 4)), "PNG"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "sparse":
        with open(path, "wb") as f:
            f.truncate(SPARSE_BYTES)
    elif kind == "link_inside":
        target = os.path.join(os.path.dirname(path), ".target-" + os.path.basename(path))
        with open(target, "wb") as f:
            f.write(_save(Image.fromarray(entry.pixels), "PNG"))
        os.symlink(os.path.basename(target), path)
    elif kind == "link_broken":
        os.symlink("no-such-file.png", path)
    elif kind == "link_loop":
        os.symlink(os.path.basename(path), path)
    else:
        if outside is None:
            raise ValueError(f"{entry.name}: links out of the root need the outside folder")
        target = {"link_secret": "secret.txt", "link_image": "image.png", "link_dir": "dir"}[kind]
        os.symlink(os.path.join(outside, target), path)


def write_corpus(
    folder: str | os.PathLike, outside: str | None = None, local: bool = True
) -> list[Entry]:
    """Write every entry (``local=False``: only plain files) into ``folder``; return them."""
    entries = [e for e in corpus() if local or not e.local_only]
    for entry in entries:
        write_entry(entry, os.path.join(os.fspath(folder), entry.name), outside)
    return entries


def counts(entries) -> dict[str, int]:
    """Outcome counts: ``{"ok": n, "NotAnImageError": n, ...}``."""
    return dict(sorted(Counter(e.expected for e in entries).items()))


# --- leak check ----------------------------------------------------------------------------


def echoes_content(message: str, data: bytes | None, window: int = 8) -> bool:
    """True when ``message`` holds :data:`SECRET` or any ``window`` consecutive bytes of the
    first 64 bytes of ``data`` (raw, as Latin-1, or as Python escapes ``\\x89PNG...``)."""
    if SECRET.decode() in message:
        return True
    if not data:
        return False
    head = data[:64]
    for i in range(max(0, len(head) - window + 1)):
        piece = head[i : i + window]
        if piece.decode("latin-1") in message or repr(piece)[2:-1] in message:
            return True
    return False
