"""Reading a pipeline output back: its rows, and the swap preview sheet."""

from __future__ import annotations

import numpy as np

from abs_ray.io import S3Options, join


def read_disentangled(out: str, s3: S3Options | None = None, limit: int | None = None):
    """The ``data/`` rows of a pipeline output as a pandas DataFrame (``limit`` rows at most)."""
    import io as _io

    import pandas as pd
    import pyarrow.parquet as pq

    from abs_ray.io import list_files, read_bytes

    frames, n = [], 0
    for uri in list_files(join(out, "data"), suffixes=[".parquet"], s3=s3):
        frames.append(pq.read_table(_io.BytesIO(read_bytes(uri, s3))).to_pandas())
        n += len(frames[-1])
        if limit is not None and n >= limit:
            break
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return df.head(limit) if limit is not None else df


#: The swap preview's rows, top to bottom.
PREVIEW_ROWS = ("input", "inpainted background", "swapped")


def swap_preview(out: str, n: int, seed: int, s3: S3Options | None = None) -> bytes:
    """Swap a few disentangled foregrounds onto other backgrounds → PNG sheet.

    Sheet rows, named in a column on the left: source image, inpainted background,
    foreground swapped onto a background drawn class-uniformly (the training-time
    augmentation, paper ranges scaled to the size).
    """
    import torch
    from torchvision.utils import make_grid

    from abs_ray.io import decode_image, encode_png
    from abs_ray.io.captions import label_rows
    from abs_ray.ops import SwapConfig, sample_swap_params, swap_backgrounds
    from abs_ray.ops.convert import to_float_chw, to_uint8_hwc

    rows = read_disentangled(out, s3, limit=max(4 * n, 32))
    fg = np.stack([decode_image(b, alpha=True) for b in rows["foreground_png"]])
    bg = np.stack([decode_image(b) for b in rows["background_png"]])
    images = to_float_chw(fg[..., :3])
    alpha = to_float_chw(fg[..., 3:])
    backgrounds = to_float_chw(bg)
    labels = torch.tensor(rows["label"].astype(int).to_numpy())
    size = images.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    k = min(n, len(rows))
    params = sample_swap_params(
        alpha[:k], labels[:k], labels, SwapConfig(translate=max(1.0, 32 * size / 224)), gen
    )
    swapped, _ = swap_backgrounds(images[:k], alpha[:k], backgrounds, params)
    # One row of k tiles per kind, no padding between them.
    sheet = make_grid(torch.cat([images[:k], backgrounds[:k], swapped]), nrow=k, padding=0)
    sheet = to_uint8_hwc(sheet[None])[0].numpy()
    return encode_png(label_rows(sheet, PREVIEW_ROWS))
