"""The labelling app's parts without HTTP: config, the labels store, selection helpers."""

from __future__ import annotations

import threading

import pytest
import torch

from abs_ray.errors import ConfigError, LabelFormatError
from abs_ray.io import read_text, write_text
from abs_ray.label import LabelConfig
from abs_ray.label.__main__ import config_from_args, get_args_parser
from abs_ray.label.session import holdout_split, least_confident, patch_confidence
from abs_ray.label.store import LabelStore, check_mask_string, mask_to_grid
from abs_ray.ops.label_csv import parse_patch_label_csv
from abs_ray.serve.errors import InvalidRequestError


def test_config_validates_and_derives_the_detector_folder():
    cfg = LabelConfig(data="d", labels="/x/labels.csv")
    assert cfg.detector_out == "/x/labels-detector" and cfg.host == "127.0.0.1"
    assert LabelConfig(data="d", labels="l.csv", out="s3://b/det/").detector_out == "s3://b/det"
    for bad, match in [
        ({"grid": 0}, "grid must be an int >= 1"),
        ({"grid": 15}, "patch grid 15 must divide image size 224"),
        ({"target": 0}, "target must be an int >= 1"),
        ({"prior": "magic"}, "prior must be one of saliency, none, got 'magic'"),
        ({"holdout_fraction": 0.9}, r"holdout_fraction must be a number in \(0, 0.5\]"),
        ({"lease_seconds": 0}, "lease_seconds must be a number > 0"),
        ({"min_train_labels": 2}, "min_train_labels must be an int >= 3"),
        ({"labels": ""}, "labels must be a non-empty URI"),
        ({"port": 70000}, "port must be an int >= 0 and <= 65535"),
    ]:
        with pytest.raises(ConfigError, match=match):
            LabelConfig(**{"data": "d", "labels": "l.csv", **bad})


def test_command_line_fills_the_config():
    args = get_args_parser().parse_args(
        ["--data", "s3://b/wb", "--labels", "s3://b/l.csv", "--grid", "8", "--split", "all"]
        + ["--image-size", "64", "--train-detector", "test_tiny", "--target", "50"]
    )
    cfg = config_from_args(args)
    assert (cfg.grid, cfg.split, cfg.target, cfg.port) == (8, None, 50, 8000)
    assert (cfg.train.detector, cfg.train.grid, cfg.train.image_size) == ("test_tiny", 8, 64)
    assert cfg.train.freeze_backbone and cfg.train.eval_split is None
    bad = get_args_parser().parse_args(["--data", "d", "--labels", "l", "--grid", "15"])
    with pytest.raises(ConfigError, match="patch grid 15 must divide image size 224"):
        config_from_args(bad)


def test_mask_checks_name_the_problem():
    assert check_mask_string("0" * 16, 4) == "0" * 16
    assert mask_to_grid("1000" + "0" * 12, 4)[0, 0] == 1.0
    for mask, match in [
        ("0" * 15, "mask must have 16 characters \\(grid 4x4\\), got 15"),
        ("0" * 15 + "a", "only '0' and '1', got 'a' at position 15"),
        (None, "mask must be a string"),
    ]:
        with pytest.raises(InvalidRequestError, match=match):
            check_mask_string(mask, 4)


def test_store_merges_saves_from_threads_and_edits_made_elsewhere(tmp_path):
    uri = str(tmp_path / "labels.csv")
    store = LabelStore(uri, grid=2)
    assert store.records() == {}
    masks = {f"img{i:02d}.png": format(i % 16, "04b") for i in range(40)}
    threads = [threading.Thread(target=store.put, args=item) for item in masks.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    on_disk = {r.info: r.mask_string for r in parse_patch_label_csv(read_text(uri), grid=2)}
    assert on_disk == masks == store.records()
    # Another writer appends a record: the next save keeps it (each save starts from the file).
    write_text(uri, read_text(uri) + "external.png,1111\n")
    store.put("img00.png", "1111")
    assert store.records()["external.png"] == "1111" and store.records()["img00.png"] == "1111"
    assert len(store.refresh()) == 41
    write_text(uri, "info,mask\na.png,101\n")
    with pytest.raises(LabelFormatError, match="labels.csv: line 2: mask must have 4"):
        LabelStore(uri, grid=2)


def test_selection_helpers():
    prob = torch.tensor([[[0.5, 0.6]], [[0.0, 1.0]], [[0.9, 0.1]]])
    assert patch_confidence(prob).tolist() == pytest.approx([0.05, 0.5, 0.4])
    with pytest.raises(ConfigError, match=r"\(N, G, G\)"):
        patch_confidence(torch.zeros(2, 2))
    scores = dict(zip("abc", patch_confidence(prob).tolist(), strict=True))
    assert least_confident(scores, ["c", "b", "a"]) == "a"
    assert least_confident(scores, ["c", "b", "x"]) == "c"
    assert least_confident(scores, ["x"]) is None


def test_holdout_is_stable_as_labels_grow():
    ids = [f"images/{i:04d}.png" for i in range(300)]
    _, held_100 = holdout_split(ids[:100], 0.2, seed=1)
    train_300, held_300 = holdout_split(ids, 0.2, seed=1)
    assert set(held_100) <= set(held_300)  # once held out, always held out
    assert 0.1 < len(held_300) / 300 < 0.3 and not set(train_300) & set(held_300)
    assert holdout_split(ids[:3], 0.2)[1] and len(holdout_split(ids[:3], 0.49)[0]) == 2
    assert holdout_split(ids, 0.2, seed=2)[1] != held_300
    with pytest.raises(ConfigError, match="need at least 3 distinct ids"):
        holdout_split(ids[:2], 0.2)
