"""Row labels and legends go beside or under a sheet and leave its pixels alone."""

import numpy as np
import pytest

from abs_ray.errors import ConfigError
from abs_ray.io.captions import add_legend, label_rows
from abs_ray.pipeline.preview import PREVIEW_ROWS


def test_each_row_of_the_swap_preview_is_named():
    rng = np.random.default_rng(0)
    sheet = rng.integers(0, 256, (3 * 32, 5 * 32, 3), dtype=np.uint8)
    out = label_rows(sheet, PREVIEW_ROWS)
    width = out.shape[1] - sheet.shape[1]
    assert out.shape[0] == sheet.shape[0] and width > 40
    assert np.array_equal(out[:, width:], sheet)
    column = out[:, :width]
    for band in np.split(column, 3):  # ink in every row's band, on white
        assert (band < 100).all(axis=-1).sum() > 20
        assert (band == 255).all(axis=-1).mean() > 0.5


def test_the_legend_shows_each_colour_and_its_text():
    sheet = np.full((40, 300, 3), 128, dtype=np.uint8)
    out = add_legend(sheet, [((0, 255, 0), "outline"), ((255, 0, 0), "a long explanation")])
    assert out.shape[1] == 300 and out.shape[0] > 40
    assert np.array_equal(out[:40], sheet)
    strip = out[40:]
    for colour in ((0, 255, 0), (255, 0, 0)):
        assert (strip == colour).all(axis=-1).sum() > 50
    narrow = add_legend(sheet[:, :60], [((0, 255, 0), "outline"), ((255, 0, 0), "wrapped")])
    assert narrow.shape[0] > out.shape[0]  # a narrow sheet wraps the items onto more lines


def test_bad_captions_are_refused():
    sheet = np.zeros((30, 30, 3), dtype=np.uint8)
    with pytest.raises(ConfigError, match="labels for a sheet"):
        label_rows(sheet, ["a", "b", "c", "d"])
    with pytest.raises(ConfigError, match="at least one"):
        add_legend(sheet, [])
    with pytest.raises(ConfigError, match="uint8"):
        label_rows(sheet.astype(float), ["a"])
