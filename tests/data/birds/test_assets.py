"""Birds benchmark: the asset tables, and finding their files without installing anything."""

from __future__ import annotations

import os

import pytest

from abs_ray.data.birds import BIRD_STAMPS, PACKAGES, PHOTOS, fetch_assets, missing_packages
from abs_ray.errors import AssetUnavailableError


def test_tables_are_consistent():
    assert all(y in (0, 1) for y in BIRD_STAMPS.values())
    assert sum(BIRD_STAMPS.values()) >= 10 and len(BIRD_STAMPS) - sum(BIRD_STAMPS.values()) >= 10
    assert {pkg for pkg, _ in PHOTOS.values()} | {"tuxpaint-stamps-default"} == set(PACKAGES)
    assert sum(p for _, p in PHOTOS.values()) >= 6 and sum(1 - p for _, p in PHOTOS.values()) >= 6


def test_missing_assets_raise_a_clear_error(tmp_path):
    with pytest.raises(AssetUnavailableError) as info:
        fetch_assets(tmp_path / "cache", search_roots=[tmp_path])
    assert "tuxpaint-stamps-default" in str(info.value) and "make assets" in str(info.value)
    assert "\n" not in str(info.value)  # a one-line hint


def test_finding_assets_never_runs_apt(tmp_path, monkeypatch):
    """The library only reads: apt-get and dpkg belong to ``make assets`` (its script)."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "dpkg"):
        fake = bin_dir / tool
        fake.write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexit 1\n')
        fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(AssetUnavailableError):
        fetch_assets(tmp_path / "cache", search_roots=[tmp_path / "empty"])
    assert not calls.exists()


def test_missing_packages_names_only_the_incomplete_ones(tmp_path):
    root = tmp_path / "root"
    assert missing_packages(tmp_path / "cache", search_roots=[root]) == list(PACKAGES)
    for path, (package, _) in PHOTOS.items():  # every listed file of two packages
        if package in ("tuxpaint-data", "mate-backgrounds"):
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_bytes(b"")
    assert missing_packages(tmp_path / "cache", search_roots=[root]) == [
        "tuxpaint-stamps-default",
        "plasma-workspace-wallpapers",
    ]
    # files extracted into the cache's root/ count as much as installed ones
    (tmp_path / "cache" / "root").mkdir(parents=True)
    (root / "usr").rename(tmp_path / "cache" / "root" / "usr")
    assert missing_packages(tmp_path / "cache", search_roots=[root]) == [
        "tuxpaint-stamps-default",
        "plasma-workspace-wallpapers",
    ]
