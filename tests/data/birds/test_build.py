"""Birds benchmark: the asset split and the samples, on fake assets."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from abs_ray.data.birds import (
    BirdAssets,
    BirdsConfig,
    PasteParams,
    build_birds,
    compose_bird,
    load_photo,
    load_stamp,
    split_assets,
)
from abs_ray.errors import ConfigError


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
    stamp = load_stamp(paths[s.meta["bird"]])
    photo = load_photo(paths[s.meta["photo"]], math.ceil(cfg.size / cfg.crop_range[0]))
    image, mask, background = compose_bird(stamp, photo, params, cfg.size)
    np.testing.assert_array_equal(image, s.image)
    np.testing.assert_array_equal(mask, s.mask)
    np.testing.assert_array_equal(background, s.background)
