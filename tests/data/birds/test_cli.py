"""``python -m abs_ray.data.birds``: bad settings, and one build from the real Debian packages
(``make assets`` installs or extracts them)."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from PIL import Image

from abs_ray.data import load_dataset
from abs_ray.data.birds import (
    BIRD_STAMPS,
    PHOTOS,
    fetch_assets,
    main,
    missing_packages,
    split_group_table,
)
from abs_ray.io import decode_image, read_bytes


def test_cli_rejects_bad_config_without_building(tmp_path, caplog):
    assert main(["--out", str(tmp_path / "x"), "--n-test", "6"]) == 2
    assert "n_test must be a multiple of 4 (four equal groups), got 6" in caplog.text
    assert not (tmp_path / "x").exists()


def test_missing_packages_mode_prints_one_package_a_line(tmp_path, capsys):
    assert main(["--missing-packages", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == missing_packages(tmp_path)
    with pytest.raises(SystemExit):
        main(["--check", "--missing-packages"])  # one mode at a time
    assert "not allowed with argument" in capsys.readouterr().err


def test_real_assets_build_the_tiny_benchmark(tmp_path, capsys):
    """Builds from the Debian packages that ``make assets`` installed (or extracted into the
    default cache, under the working directory)."""
    assert main(["--check"]) == 0
    assert "bird cut-outs" in capsys.readouterr().out
    assets = fetch_assets()
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

    meta = pd.read_csv(out / "metadata.csv")
    train, test = meta[meta.split == 0], meta[meta.split == 2]
    assert not set(train.bird) & set(test.bird) and not set(train.photo) & set(test.photo)
    image = decode_image(read_bytes(manifest.image_uri[0]))
    mask = decode_image(read_bytes(manifest.mask_uri[0]))[..., 0]
    assert image.shape == (64, 64, 3) and 0.03 < (mask == 255).mean() < 0.7
    assert decode_image(read_bytes(str(sheet))).shape[0] == 8 * (128 + 4)
