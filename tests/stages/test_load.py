"""LoadImages: one row's bad file never fails its batch, links out of the root are refused per
row, and neither messages nor logs quote a file's bytes."""

from __future__ import annotations

import logging

import numpy as np

from abs_ray.stages import LoadImages
from tests.hostile import MAX_PIXELS, SECRET, corpus, echoes_content, write_entry, write_outside

ENTRIES = {e.name: e for e in corpus()}
NAMES = (
    "rgb.png",
    "gray16.png",
    "escape_image.png",
    "escape_secret.png",
    "directory.png",
    "pipe.png",
    "sparse.png",
    "passwd.png",
    "bomb.png",
)


def _batch(tmp_path):
    root, outside = tmp_path / "root", write_outside(tmp_path / "outside")
    uris = []
    for name in NAMES:
        write_entry(ENTRIES[name], root / "cls" / name, outside)
        uris.append(str(root / "cls" / name))
    return str(root), {"id": np.array(NAMES), "image_uri": np.array(uris)}


def test_each_row_gets_its_pixels_or_its_typed_error(tmp_path, caplog):
    root, batch = _batch(tmp_path)
    stage = LoadImages(size=(2, 5), max_pixels=MAX_PIXELS, masks=False, root=root)
    with caplog.at_level(logging.WARNING, logger="abs_ray.stages.load"):
        out = stage(batch)
    got = dict(zip(NAMES, out["error_type"], strict=True))
    assert got == {
        "rgb.png": "",
        "gray16.png": "",
        "escape_image.png": "OutsideDataRootError",
        "escape_secret.png": "OutsideDataRootError",
        "directory.png": "NotAFileError",
        "pipe.png": "NotAFileError",
        "sparse.png": "ImageTooLargeError",
        "passwd.png": "NotAnImageError",
        "bomb.png": "ImageTooLargeError",
    }
    # 16-bit gray arrives scaled (the 5 x 2 image is already the output size), not white.
    expected = ENTRIES["gray16.png"].pixels
    np.testing.assert_array_equal(out["image"][1], expected)
    assert not out["image"][2:].any()  # refused rows carry no pixels
    for name, message in zip(NAMES, out["error_message"], strict=True):
        assert not echoes_content(message, ENTRIES[name].data), message
    assert SECRET.decode() not in caplog.text
    assert caplog.text.count("skipping") == 7
    for name in ("passwd.png", "bomb.png"):
        assert not echoes_content(caplog.text, ENTRIES[name].data)


def test_without_a_root_nothing_is_checked_for_links(tmp_path):
    root, batch = _batch(tmp_path)
    out = LoadImages(size=(4, 4), max_pixels=MAX_PIXELS, masks=False)(batch)
    assert out["error_type"][2] == ""  # escape_image.png: a valid image, read
    assert out["error_type"][4] == "NotAFileError"  # regular files only, root or not
