"""Birds benchmark: asset split, composition and layout on fake assets; one build from the real
Debian packages (installed by ``fetch_assets`` where missing)."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
from PIL import Image

from abs_ray.data import (
    Asset,
    BirdAssets,
    BirdsConfig,
    PasteParams,
    build_birds,
    compose_bird,
    contact_sheet,
    fetch_assets,
    load_dataset,
    split_assets,
    split_group_table,
    write_birds,
)
from abs_ray.data import birds as birds_module
from abs_ray.data.birds import BIRD_STAMPS, PACKAGES, PHOTOS, main
from abs_ray.errors import AssetUnavailableError, ConfigError
from abs_ray.io import decode_image, read_bytes, read_text


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


def _names(samples, split, key):
    return {s.meta[key] for s in samples if s.split == split}


def test_split_assets_is_a_seeded_partition(fake_assets):
    parts = split_assets(fake_assets, (0.5, 0.2, 0.3), seed=0)
    for kind in ("bird", "photo"):
        for label in (0, 1):
            sets = {s: {a.name for a in parts[s].select(kind, label)} for s in parts}
            assert all(sets.values())  # every split gets at least one
            assert (
                not sets["train"] & sets["val"]
                and not sets["train"] & sets["test"]
                and not sets["val"] & sets["test"]
            )
            assert set().union(*sets.values()) == {a.name for a in fake_assets.select(kind, label)}
    assert split_assets(fake_assets, seed=0) == parts
    assert split_assets(fake_assets, seed=1) != parts
    tiny = BirdAssets(fake_assets.birds[:2] + fake_assets.birds[7:], fake_assets.photos)
    with pytest.raises(ConfigError, match="2 birds with label 1 cannot be split"):
        split_assets(tiny)


def test_no_bird_or_photo_shared_between_train_and_val_or_test(fake_assets):
    cfg = BirdsConfig.tiny(n_train=40, n_val=16, n_test=32)
    samples = list(build_birds(cfg, fake_assets))
    labels = {a.name: a.label for a in fake_assets.birds + fake_assets.photos}
    for key in ("bird", "photo"):
        train = _names(samples, "train", key)
        assert not train & _names(samples, "test", key), key
        assert not train & _names(samples, "val", key), key
    assert all(
        labels[s.meta["bird"]] == s.y and labels[s.meta["photo"]] == s.place for s in samples
    )
    assert all(s.place == s.y for s in samples if s.split != "test")
    assert [sum(s.group == g for s in samples if s.split == "test") for g in range(4)] == [
        8,
        8,
        8,
        8,
    ]
    # every train bird of a class is used, about equally often
    per_bird = {}
    for s in samples:
        if s.split == "train":
            per_bird[s.meta["bird"]] = per_bird.get(s.meta["bird"], 0) + 1
    assert max(per_bird.values()) - min(per_bird.values()) <= 2


def test_shared_bird_split_reuses_birds_but_still_holds_out_photos(fake_assets):
    cfg = BirdsConfig.tiny(n_train=40, n_val=16, n_test=32, bird_split="shared")
    samples = list(build_birds(cfg, fake_assets))
    train_birds = _names(samples, "train", "bird")
    # every bird can appear in train, and test shows birds seen in training ...
    assert len(train_birds) == len(fake_assets.birds)
    assert _names(samples, "test", "bird") <= train_birds
    # ... but never a training photo, and the groups are built as in the held-out split
    assert not _names(samples, "train", "photo") & _names(samples, "test", "photo")
    assert all(s.place == s.y for s in samples if s.split == "train")
    held_out = list(build_birds(dataclasses.replace(cfg, bird_split="held_out"), fake_assets))
    assert not _names(held_out, "train", "bird") & _names(held_out, "test", "bird")
    with pytest.raises(ConfigError, match="bird_split must be one of"):
        BirdsConfig(bird_split="species")


def test_composition_is_exact_and_deterministic(fake_assets):
    cfg = BirdsConfig.tiny(seed=5)
    first, second = list(build_birds(cfg, fake_assets)), list(build_birds(cfg, fake_assets))
    other = list(build_birds(BirdsConfig.tiny(seed=6), fake_assets))
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        assert a.meta == b.meta
        outside = a.mask == 0
        np.testing.assert_array_equal(a.image[outside], a.background[outside])
        fraction = (a.mask == 255).mean()
        assert 0.05 < fraction < 0.6, fraction
    # the recorded row is enough to reproduce a sample
    s = first[3]
    paths = {a.name: a.path for a in fake_assets.birds + fake_assets.photos}
    params = PasteParams(**{f: s.meta[f] for f in PasteParams.__dataclass_fields__})
    stamp = birds_module._load_stamp(paths[s.meta["bird"]])
    photo = birds_module._load_photo(
        paths[s.meta["photo"]], math.ceil(cfg.size / cfg.crop_range[0])
    )
    image, mask, background = compose_bird(stamp, photo, params, cfg.size)
    np.testing.assert_array_equal(image, s.image)
    np.testing.assert_array_equal(mask, s.mask)
    np.testing.assert_array_equal(background, s.background)


def test_compose_bird_keeps_the_bird_in_frame_and_flips():
    stamp = np.zeros((10, 30, 4), np.uint8)
    stamp[:, :10] = (255, 0, 0, 255)  # opaque left third
    photo = np.zeros((40, 40, 3), np.uint8)
    for flip in (False, True):
        image, mask, _ = compose_bird(stamp, photo, PasteParams(1.0, 0, 0, 1.0, 1.0, 1.0, flip), 30)
        cols = np.nonzero(mask.any(axis=0))[0]
        assert (cols.min(), cols.max()) == ((20, 29) if flip else (0, 9))
        assert mask[-1].any() or mask[20:].any()
    with pytest.raises(ConfigError, match="stamp must be"):
        compose_bird(stamp[..., :3], photo, PasteParams(1, 0, 0, 1, 0, 0, False), 30)


def test_write_to_s3_load_and_contact_sheet(fake_assets, bucket, tmp_path):
    cfg = BirdsConfig.tiny(n_train=8, n_val=4, n_test=8, size=48)
    manifest = write_birds(f"{bucket}/birds", cfg, assets=fake_assets)
    loaded = load_dataset(f"{bucket}/birds")
    assert loaded.equals(manifest)
    assert split_group_table(loaded).values.tolist() == [[4, 0, 0, 4], [2, 0, 0, 2], [2, 2, 2, 2]]
    row = loaded.iloc[0]
    assert decode_image(read_bytes(row.image_uri)).shape == (48, 48, 3)
    assert set(np.unique(decode_image(read_bytes(row.mask_uri)))) <= {0, 255}
    assert '"generator": "birds"' in read_text(f"{bucket}/birds/config.json")
    out = contact_sheet(f"{bucket}/birds", str(tmp_path / "sheet.png"), per_group=2, thumb=32)
    sheet = decode_image(read_bytes(out))
    assert sheet.shape == (8 * (32 + 4), 190 + 2 * (32 + 4), 3)  # 8 (split, group) rows
    assert (sheet == (255, 0, 0)).all(axis=-1).any()  # mask outlines drawn


def test_tables_are_consistent():
    assert all(y in (0, 1) for y in BIRD_STAMPS.values())
    assert sum(BIRD_STAMPS.values()) >= 10 and len(BIRD_STAMPS) - sum(BIRD_STAMPS.values()) >= 10
    assert {pkg for pkg, _ in PHOTOS.values()} | {"tuxpaint-stamps-default"} == set(PACKAGES)
    assert sum(p for _, p in PHOTOS.values()) >= 6 and sum(1 - p for _, p in PHOTOS.values()) >= 6


def test_missing_assets_raise_a_clear_error(tmp_path):
    with pytest.raises(AssetUnavailableError) as info:
        fetch_assets(tmp_path / "cache", install=False, search_roots=[tmp_path])
    assert "tuxpaint-stamps-default" in str(info.value) and "apt-get install" in str(info.value)


def test_cli_rejects_bad_config_without_building(tmp_path, caplog):
    assert main(["--out", str(tmp_path / "x"), "--n-test", "6"]) == 2
    assert "n_test must be a multiple of 4 (four equal groups), got 6" in caplog.text
    assert not (tmp_path / "x").exists()


def test_real_assets_build_the_tiny_benchmark(tmp_path, capsys):
    """Builds from the Debian packages; fetch_assets installs them (apt) where missing."""
    assets = fetch_assets(tmp_path / "cache")
    assert len(assets.birds) >= 0.9 * len(BIRD_STAMPS) and len(assets.photos) >= 0.9 * len(PHOTOS)
    for asset in assets.birds[:3]:
        with Image.open(asset.path) as img:
            assert img.mode == "RGBA" and os.path.basename(asset.name) in BIRD_STAMPS
    out, sheet = tmp_path / "birds", tmp_path / "sheet.png"
    assert (
        main(
            [
                "--out",
                str(out),
                "--tiny",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--contact-sheet",
                str(sheet),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "birds benchmark: 40 images at 64 px" in printed and "contact sheet" in printed
    manifest = load_dataset(str(out))
    assert split_group_table(manifest).values.tolist() == [[8, 0, 0, 8], [4, 0, 0, 4], [4, 4, 4, 4]]
    import pandas as pd

    meta = pd.read_csv(out / "metadata.csv")
    train, test = meta[meta.split == 0], meta[meta.split == 2]
    assert not set(train.bird) & set(test.bird) and not set(train.photo) & set(test.photo)
    image = decode_image(read_bytes(manifest.image_uri[0]))
    mask = decode_image(read_bytes(manifest.mask_uri[0]))[..., 0]
    assert image.shape == (64, 64, 3) and 0.03 < (mask == 255).mean() < 0.7
    assert decode_image(read_bytes(str(sheet))).shape[0] == 8 * (128 + 4)
