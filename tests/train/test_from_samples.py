"""Writing a disentangled set from generated samples (:mod:`abs_ray.train.from_samples`)."""

import pyarrow.parquet as pq

from abs_ray.io import decode_image
from abs_ray.train import scan_disentangled


def test_written_rows_match_the_pipeline_schema(tiny_set):
    from abs_ray.train.data import REQUIRED_COLUMNS

    info = scan_disentangled(tiny_set)
    pipeline = {"id", "image_uri", "label", "split", "group", "place", "mask_uri"}
    pipeline |= {"foreground_png", "background_png", "patch_prob", "detector", "inpainter"}
    assert pipeline | {"code_version"} <= set(info.columns)
    assert set(REQUIRED_COLUMNS) <= set(info.columns)
    first = pq.read_table(f"{tiny_set}/data/part-00000.parquet")["foreground_png"][0].as_py()
    fg = decode_image(first, alpha=True)
    assert fg.shape == (32, 32, 4)
