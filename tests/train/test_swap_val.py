"""Label-free model selection: the swap-val pairs (fixed partners, pixels, shards), the data
checks, and a tiny end-to-end run that selects its epoch by ``swap_val_accuracy``."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from abs_ray.errors import ConfigError, DatasetError
from abs_ray.io import S3Options, encode_png
from abs_ray.train import TrainConfig, run_training, scan_disentangled
from abs_ray.train import write_disentangled_from_samples as write_set
from abs_ray.train.data import decode_rows
from abs_ray.train.run import _swap_val_pairs
from abs_ray.train.swap_val import read_swap_val, swap_val_inputs, swap_val_partners


def _batch(table: pa.Table) -> dict[str, np.ndarray]:
    """A pyarrow table as the numpy batch map_batches hands to decode_rows."""
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def test_partners_are_a_seeded_cycle_over_the_sorted_ids():
    ids = [f"v{i:02d}" for i in range(9)]
    partners = swap_val_partners(ids, seed=3)
    assert sorted(partners.tolist()) == list(range(9))  # every background used once
    assert (partners != np.arange(9)).all()  # nobody is their own partner
    # A single cycle: following partners from any row visits every row.
    seen, i = [], 0
    for _ in range(9):
        seen.append(i)
        i = int(partners[i])
    assert sorted(seen) == list(range(9)) and i == 0
    assert np.array_equal(swap_val_partners(ids, seed=3), partners)  # seeds reproduce
    assert not np.array_equal(swap_val_partners(ids, seed=4), partners)
    # The pairs belong to the ids, not to the order the rows arrive in.
    shuffled = [ids[k] for k in (4, 0, 8, 2, 6, 1, 7, 3, 5)]
    by_id = {ids[k]: ids[int(p)] for k, p in enumerate(partners)}
    again = swap_val_partners(shuffled, seed=3)
    assert {shuffled[k]: shuffled[int(p)] for k, p in enumerate(again)} == by_id
    assert swap_val_partners(["only"], seed=0).tolist() == [0]


def test_pairs_put_each_foreground_on_its_partners_background(tiny_set, tiny_samples, device):
    info = scan_disentangled(tiny_set)
    pairs = read_swap_val(info, seed=0)
    by_id = {s.name: s for s in tiny_samples}
    val = sorted(s.name for s in tiny_samples if s.split == "val")
    assert pairs.column("id").to_pylist() == val  # every val row, sorted by id
    partner = dict(zip(val, pairs.column("partner_id").to_pylist(), strict=True))
    assert sorted(partner.values()) == val and all(p != v for v, p in partner.items())
    again = read_swap_val(info, seed=0)
    assert again.column("partner_id").equals(pairs.column("partner_id"))  # fixed partners
    assert not read_swap_val(info, seed=1).column("partner_id").equals(pairs.column("partner_id"))

    batch = decode_rows(_batch(pairs), size=32, train=True)
    composites = swap_val_inputs({k: torch.from_numpy(v) for k, v in batch.items()}, device)
    assert composites.shape == (8, 3, 32, 32) and composites.device.type == device.type
    pixels = (composites * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i, ident in enumerate(val):
        inside = batch["alpha"][i] == 255
        assert 0 < inside.sum() < inside.size
        own, other = by_id[ident], by_id[partner[ident]]
        assert np.array_equal(pixels[i][inside], own.image[inside])  # own foreground
        assert np.array_equal(pixels[i][~inside], other.background[~inside])  # partner's bg
        assert batch["label"][i] == own.y and batch["group"][i] == own.group
    assert not np.array_equal(pixels[0], by_id[val[0]].image)


def test_pairs_are_sharded_by_id_every_row_once(tiny_set):
    pairs = _batch(read_swap_val(scan_disentangled(tiny_set), seed=0))
    shares = [decode_rows(pairs, size=32, train=True, rank=r, world=3) for r in range(3)]
    assert sum(len(s["label"]) for s in shares) == 8 and max(len(s["label"]) for s in shares) < 8
    merged = np.concatenate([s["image"] for s in shares])
    assert len({m.tobytes() for m in merged}) == 8


def _rewrite_val(root, column: str, value_of) -> None:
    """Replace ``column`` in the val rows of every Parquet file of a set written by
    ``write_disentangled_from_samples``."""
    import pathlib

    for path in sorted(pathlib.Path(root, "data").glob("*.parquet")):
        table = pq.read_table(path)
        values = [
            value_of(v) if s == "val" else v
            for v, s in zip(table[column].to_pylist(), table["split"].to_pylist(), strict=True)
        ]
        index = table.column_names.index(column)
        table = table.set_column(index, column, pa.array(values, type=table[column].type))
        buf = io.BytesIO()
        pq.write_table(table, buf)
        path.write_bytes(buf.getvalue())


def test_a_set_without_val_backgrounds_or_alphas(tiny_samples, tmp_path):
    from abs_ray.io import decode_image

    no_bg = str(tmp_path / "no_bg")
    write_set(tiny_samples, no_bg, rows_per_file=20)
    _rewrite_val(no_bg, "background_png", lambda v: None)
    info = scan_disentangled(no_bg)
    with pytest.raises(DatasetError, match="8 of 8 val rows have no inpainted background"):
        read_swap_val(info, seed=0)
    no_alpha = str(tmp_path / "no_alpha")
    write_set(tiny_samples, no_alpha, rows_per_file=20)
    _rewrite_val(no_alpha, "foreground_png", lambda v: encode_png(decode_image(v)))  # RGB
    with pytest.raises(DatasetError, match="8 of 8 val rows have no foreground alpha"):
        read_swap_val(scan_disentangled(no_alpha), seed=0)

    s3 = S3Options()
    needs = TrainConfig(data=no_bg, select_by="swap_val_accuracy", batch_size=8)
    with pytest.raises(ConfigError, match="select_by 'swap_val_accuracy' needs"):
        _swap_val_pairs(needs, info, s3)
    # Not needed for selection: the run goes on without the metric.
    assert _swap_val_pairs(TrainConfig(data=no_bg, batch_size=8), info, s3) is None


def test_run_training_refuses_swap_selection_before_training(ray_cluster, tiny_samples, tmp_path):
    """A typed error before training: no config written, no MLflow run, no Ray Train run."""
    data = str(tmp_path / "no_bg")
    write_set(tiny_samples, data, rows_per_file=20)
    _rewrite_val(data, "background_png", lambda v: b"")
    cfg = TrainConfig(
        data=data,
        out=str(tmp_path / "out"),
        select_by="swap_val_accuracy",
        backbone="test_tiny",
        weights=None,
        batch_size=8,
        use_gpu=False,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
    )
    with pytest.raises(ConfigError, match="swap_val_accuracy"):
        run_training(cfg)
    assert not (tmp_path / "out" / cfg.resolved_run_name).exists()
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "out" / "ray").exists()


@pytest.fixture(scope="module")
def swap_selected(ray_cluster, tiny_set, tiny_run, tmp_path_factory):
    """A 2-epoch ``abs`` run on the tiny local set that selects by ``swap_val_accuracy``."""
    tmp = tmp_path_factory.mktemp("swap_selected")
    cfg = TrainConfig(
        data=tiny_set,
        out=str(tmp / "out"),
        method="abs",
        epochs=2,
        select_by="swap_val_accuracy",
        mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db",
        **{**tiny_run, "sample_grid": 0},
    )
    return cfg, run_training(cfg)


def test_every_epoch_has_swap_val_accuracy_and_the_best_is_selected_by_it(swap_selected):
    from mlflow import MlflowClient

    cfg, report = swap_selected
    assert report["select_by"] == "swap_val_accuracy" and report["epochs_completed"] == 2
    scores = []
    for entry in report["history"]:
        swap = entry["swap_val"]
        assert swap["n"] == 8  # every val row once, over both workers
        assert 0.0 <= swap["overall_accuracy"] <= 1.0
        scores.append(swap["overall_accuracy"])
    best = max(range(len(scores)), key=lambda e: (scores[e], e))  # ties: the later epoch
    assert report["best"]["epoch"] == best and report["best"]["score"] == scores[best]
    assert report["best"]["swap_val"] == report["history"][best]["swap_val"]
    client = MlflowClient(cfg.mlflow_tracking_uri)
    run = client.get_run(report["mlflow"]["run_id"])
    history = client.get_metric_history(run.info.run_id, "swap_val/accuracy")
    assert sorted((m.step, m.value) for m in history) == list(enumerate(scores))
