"""Fixtures of the birds benchmark tests: fake assets (no Debian packages needed)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from abs_ray.data.birds import Asset, BirdAssets


@pytest.fixture(scope="module")
def fake_assets(tmp_path_factory) -> BirdAssets:
    """7 water and 8 land 'birds' (RGBA ellipses, transparent margins), 5 + 6 photos."""
    root = tmp_path_factory.mktemp("assets")
    rng = np.random.default_rng(0)
    birds, photos = [], []
    for i in range(15):
        h, w = int(rng.integers(20, 40)), int(rng.integers(20, 40))
        yy, xx = np.mgrid[0:h, 0:w]
        inside = ((yy - h / 2) / (h / 2 - 3)) ** 2 + ((xx - w / 2) / (w / 2 - 3)) ** 2 <= 1
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[..., :3] = rng.integers(0, 255, 3)
        rgba[..., 3] = inside * 255
        path = root / f"bird{i:02d}.png"
        Image.fromarray(rgba, "RGBA").save(path)
        birds.append(Asset(f"birds/bird{i:02d}.png", str(path), int(i < 7)))
    for i in range(11):
        place = int(i < 5)
        colour = (20, 60, 200) if place else (60, 160, 40)
        photo = np.clip(rng.normal(colour, 20, (60 + i, 90, 3)), 0, 255).astype(np.uint8)
        path = root / f"photo{i:02d}.jpg"
        Image.fromarray(photo).save(path, quality=95)
        photos.append(Asset(f"photos/photo{i:02d}.jpg", str(path), place))
    return BirdAssets(tuple(birds), tuple(photos))
