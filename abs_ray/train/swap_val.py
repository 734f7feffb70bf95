"""Label-free model selection: mixed-rand accuracy on the val split (``swap_val``).

Each val image's foreground, cut out with the pipeline's own alpha (the ``foreground_png``
alpha: the detector's tight mask, whatever the training method), is pasted in place on the
inpainted background of another val image, its *partner*, and the classifier is scored on these
composites: the "mixed-rand" variant of the ImageNet-9 backgrounds challenge (Xiao et al.
2020), with no group label involved. A model that reads the background loses accuracy here, so
``select_by="swap_val_accuracy"`` chooses the epoch without group labels.

The partners are fixed for the run: a seeded random cycle through the val rows sorted by id
(:func:`swap_val_partners`), so no row is its own partner when val has more than one, and the
pairs depend on the ids and ``cfg.seed`` only, not on the epoch, the number of workers or the
order of the files. The driver reads the val rows once (:func:`read_swap_val`; a data set whose
val rows lack a background or an alpha is refused there, before training), puts each row's
foreground beside its partner's background, and Ray Data decodes the pairs per worker, sharded
by id like the eval set (every val row is scored exactly once, :func:`swap_val_datasets`).
The workers composite on their device with :func:`~abs_ray.ops.paste_foregrounds` and identity
params (no warp: the foreground stays where it was, :func:`swap_val_inputs`).

Example:
    >>> partners = swap_val_partners(["c", "a", "b"], seed=0)
    >>> sorted(partners.tolist()), bool((partners != [0, 1, 2]).all())
    ([0, 1, 2], True)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from abs_ray.errors import DatasetError
from abs_ray.io import S3Options, resolve
from abs_ray.ops import SwapParams, paste_foregrounds, to_float_chw
from abs_ray.train.data import DatasetInfo, decode_rows
from abs_ray.train.evaluate import gather, predict, split_metrics

__all__ = [
    "SWAP_VAL",
    "read_swap_val",
    "swap_val_dataset_name",
    "swap_val_metrics",
    "swap_val_inputs",
    "swap_val_partners",
    "swap_val_datasets",
]

#: Key of the metrics in a history entry and prefix of the MLflow metrics (``swap_val/accuracy``).
SWAP_VAL = "swap_val"
#: Mixed into the seed so the partners are not drawn from the stream of any other draw.
_STREAM = 0x5A1
_PNG = b"\x89PNG\r\n\x1a\n"


def swap_val_dataset_name(rank: int) -> str:
    """Name of a worker's swap-val dataset (its share of the val pairs), e.g. ``swap_val_1``."""
    return f"{SWAP_VAL}_{rank}"


def swap_val_partners(ids: Sequence[Any], seed: int) -> np.ndarray:
    """Each row's partner: a seeded random cycle through the rows sorted by id.

    Args:
        ids: ``N`` distinct row ids (compared as strings).
        seed: the run's seed (``>= 0``).

    Returns:
        ``(N,)`` int64 indices into ``ids``: row ``i`` takes the background of row
        ``partners[i]``. A permutation with no fixed point when ``N > 1`` (``[0]`` for one
        row); the same ids and seed give the same pairs in any order of ``ids``.
    """
    keys = [str(i) for i in ids]
    order = np.asarray(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)
    cycle = order[np.random.default_rng((int(seed), _STREAM)).permutation(len(keys))]
    partners = np.empty(len(keys), dtype=np.int64)
    partners[cycle] = np.roll(cycle, -1)
    return partners


def _has_alpha(png: bytes | None) -> bool:
    """True for a PNG with an alpha channel (colour type 4 or 6) or a ``tRNS`` chunk."""
    if not png or not png.startswith(_PNG) or len(png) < 26:
        return False
    idat = png.find(b"IDAT")
    return png[25] in (4, 6) or b"tRNS" in png[: idat if idat > 0 else len(png)]


def read_swap_val(info: DatasetInfo, seed: int, s3: S3Options | None = None) -> pa.Table:
    """Read the val rows and pair each foreground with its partner's background (driver side).

    Reads ``id, label, group, foreground_png, background_png`` of the val rows (Parquet row
    groups without val rows are skipped by their statistics).

    Args:
        info: from :func:`~abs_ray.train.data.scan_disentangled`.
        seed: the run's seed, see :func:`swap_val_partners`.
        s3: S3 settings.

    Returns:
        One row per val row, sorted by id: ``id, label, group`` (when the set has groups),
        ``foreground_png`` (the row's own), ``background_png`` (its partner's) and
        ``partner_id``.

    Raises:
        DatasetError: no val rows, or val rows without an inpainted background or without a
            foreground alpha (the message counts them and names one).
    """
    import pyarrow.dataset as pads

    fs, _ = resolve(info.files[0], s3)
    dataset = pads.dataset([resolve(f, s3)[1] for f in info.files], filesystem=fs)
    columns = [c for c in ("id", "label", "group") if c in dataset.schema.names]
    table = dataset.to_table(
        columns=[*columns, "foreground_png", "background_png"],
        filter=pc.field("split") == "val",
    )
    if table.num_rows == 0:
        raise DatasetError(f"{info.uri}: no val rows to swap backgrounds in")
    table = table.take(pc.sort_indices(table["id"].cast(pa.string())))
    ids = table["id"].to_pylist()
    problems = []
    for column, ok in (("background_png", lambda b: bool(b)), ("foreground_png", _has_alpha)):
        bad = [i for i, v in zip(ids, table[column].to_pylist(), strict=True) if not ok(v)]
        if bad:
            what = "inpainted background" if column == "background_png" else "foreground alpha"
            problems.append(f"{len(bad)} of {len(ids)} val rows have no {what} (e.g. {bad[0]!r})")
    if problems:
        raise DatasetError(
            f"{info.uri}: swapping val backgrounds needs every val row's foreground alpha "
            f"(foreground_png RGBA) and inpainted background (background_png); "
            + "; ".join(problems)
        )
    partners = pa.array(swap_val_partners(ids, seed))
    return pa.table(
        {
            **{c: table[c] for c in columns},
            "foreground_png": table["foreground_png"],
            "background_png": table["background_png"].take(partners),
            "partner_id": table["id"].take(partners),
        }
    )


def swap_val_datasets(
    pairs: pa.Table, *, size: int, world: int, decode_num_cpus: float = 0.25
) -> dict[str, Any]:
    """Ray Data pipelines of the pairs, one per worker ``r`` (``swap_val_r``): its share by id
    hash, as the eval set's, decoded to ``image``, ``alpha`` (the foreground's) and
    ``background`` (the partner's), see :func:`~abs_ray.train.data.decode_rows`.

    Args:
        pairs: from :func:`read_swap_val`.
        size: decoded image side.
        world: number of training workers.
        decode_num_cpus: logical CPUs per decoding task.

    Returns:
        ``{name: ray.data.Dataset}``.
    """
    import ray

    base = ray.data.from_arrow(pairs)
    return {
        swap_val_dataset_name(rank): base.map_batches(
            decode_rows,
            fn_kwargs={"size": size, "train": True, "rank": rank, "world": world},
            batch_size=64,
            num_cpus=decode_num_cpus,
        )
        for rank in range(world)
    }


def swap_val_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The composites of a decoded pairs batch: each foreground in place on its partner's
    background (:func:`~abs_ray.ops.paste_foregrounds`, identity params, hard alpha).

    Args:
        batch: ``image`` ``(B, H, W, 3)`` uint8, ``alpha`` ``(B, H, W)`` uint8 in
            ``{0, 255}``, ``background`` ``(B, H, W, 3)`` uint8 (the partner's); any device.
        device: where to composite.

    Returns:
        ``(B, 3, H, W)`` float32 in ``[0, 1]`` on ``device``: the image where ``alpha`` is
        255, the background where it is 0 (bit for bit, as ``value / 255``).

    Raises:
        ConfigError: shapes that do not match (from the ops).
    """
    images = to_float_chw(batch["image"], device)
    alpha = to_float_chw(batch["alpha"], device)
    backgrounds = to_float_chw(batch["background"], device)  # this call's own: blend into it
    params = SwapParams.identity(torch.arange(images.shape[0], device=device))
    composites, _ = paste_foregrounds(images, alpha, backgrounds, params, inplace=True)
    return composites


def swap_val_metrics(
    model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]], device: torch.device
) -> dict[str, Any]:
    """Score ``model`` on the worker's composites, gathered over every worker.

    Args:
        model: classifier taking ``(B, 3, H, W)`` float in ``[0, 1]``.
        batches: the worker's decoded pairs batches (see :func:`swap_val_inputs`).
        device: where to run.

    Returns:
        :func:`~abs_ray.train.evaluate.split_metrics` of the composites: ``overall_accuracy``
        is ``swap_val_accuracy``; the per-group figures use the foreground's group.
    """
    results = gather(predict(model, batches, device, inputs=swap_val_inputs))
    return split_metrics(
        results["pred"], results["label"], results["group"], float(results["loss"].sum())
    )
