"""Birds benchmark: written to S3, read back, counted and shown on a contact sheet."""

from __future__ import annotations

import numpy as np

from abs_ray.data import load_dataset
from abs_ray.data.birds import BirdsConfig, contact_sheet, split_group_table, write_birds
from abs_ray.io import decode_image, read_bytes, read_text


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
