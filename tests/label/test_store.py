"""The shared labels file: mask checks, and saves merged from threads and other writers."""

from __future__ import annotations

import threading

import pytest

from abs_ray.errors import LabelFormatError
from abs_ray.io import read_text, write_text
from abs_ray.label.store import LabelStore, check_mask_string, mask_to_grid
from abs_ray.ops.label_csv import parse_patch_label_csv
from abs_ray.web.errors import InvalidRequestError


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
