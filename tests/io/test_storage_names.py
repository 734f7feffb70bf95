"""Object keys with the characters URLs reserve (``?``, ``#``, ``%``) name their own object."""

from __future__ import annotations

import pytest

from abs_ray.io import list_files, read_bytes, write_bytes

NAMES = ("a?x=1.png", "a#1.png", "a#2.png", "pct%41%2F.png", "with space.png", "猫.png")


@pytest.mark.parametrize("local", [True, False], ids=["local", "s3"])
def test_reserved_characters_in_names(local, tmp_path, bucket, s3_server):
    root, s3 = (str(tmp_path), None) if local else (f"{bucket}/odd", s3_server)
    for i, name in enumerate(NAMES):
        write_bytes(f"{root}/{name}", bytes([i]) * 3, s3)
    listed = sorted(u.rsplit("/", 1)[1] for u in list_files(root, s3=s3))
    assert listed == sorted(NAMES)
    for i, name in enumerate(NAMES):
        assert read_bytes(f"{root}/{name}", s3) == bytes([i]) * 3, name
