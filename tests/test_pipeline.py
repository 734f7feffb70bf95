"""The main job end to end on a real local Ray cluster, on a local folder and on S3."""

import json

import pandas as pd
import pyarrow.parquet as pq
import pytest

from abs_ray.data import SyntheticConfig, load_dataset, write_synthetic
from abs_ray.errors import ConfigError, StorageAccessError, StorageNotFoundError
from abs_ray.io import (
    S3Options,
    decode_image,
    join,
    read_bytes,
    read_text,
    resolve,
    write_bytes,
)
from abs_ray.ops import parse_patch_label_csv
from abs_ray.pipeline import PipelineConfig, run

SMALL = SyntheticConfig(n_train=12, n_val=4, n_test=8, size=32, seed=1)


def _read_parquet_dir(uri, s3=None) -> pd.DataFrame:
    fs, path = resolve(uri, s3)
    return pq.read_table(path, filesystem=fs).to_pandas()


def _damage(data_uri, s3=None):
    """Replace one image with junk and truncate another; return their ids."""
    manifest = load_dataset(data_uri, s3)
    bad, short = manifest.iloc[0], manifest.iloc[1]
    write_bytes(bad.image_uri, b"this is not an image", s3)
    png = read_bytes(short.image_uri, s3)
    write_bytes(short.image_uri, png[: len(png) // 2], s3)
    return {bad.id: "NotAnImageError", short.id: "TruncatedImageError"}


def _check_outputs(out, n_input, damaged, s3=None):
    summary = json.loads(read_text(join(out, "manifest.json"), s3))
    assert summary["counts"] == {
        "input": n_input,
        "ok": n_input - len(damaged),
        "errors": len(damaged),
    }
    errors = _read_parquet_dir(join(out, "errors"), s3)
    assert dict(zip(errors["id"], errors["error_type"], strict=True)) == damaged
    assert set(errors["stage"]) == {"load"}
    samples = _read_parquet_dir(join(out, "samples"), s3)
    assert len(samples) == n_input - len(damaged) and samples["id"].is_unique
    assert not set(samples["id"]) & set(damaged)
    labels = parse_patch_label_csv(read_text(join(out, "patch_labels.csv"), s3))
    assert len(labels) == len(samples)
    # Patch labels agree with the masks: every sample has some foreground and some background.
    assert all(0 < lab.grid.sum() < lab.grid.numel() for lab in labels)
    sheet = decode_image(read_bytes(join(out, "swap_preview.png"), s3))
    assert sheet.shape[0] == 3 * SMALL.size
    return summary


def test_pipeline_local_with_bad_files(ray_cluster, tmp_path):
    data = str(tmp_path / "data")
    write_synthetic(data, SMALL)
    damaged = _damage(data)
    out = str(tmp_path / "out")
    cfg = PipelineConfig(data=data, out=out, image_size=SMALL.size, grid=8, load_batch_size=8)
    summary = run(cfg)
    n = SMALL.n_train + SMALL.n_val + SMALL.n_test
    _check_outputs(out, n, damaged)
    assert summary["config"]["grid"] == 8
    # Re-running into the same output leaves exactly one row per id.
    run(cfg)
    _check_outputs(out, n, damaged)


def test_pipeline_on_s3(ray_cluster, bucket, s3_server):
    data, out = f"{bucket}/data", f"{bucket}/runs/r1"
    write_synthetic(data, SMALL, s3_server)
    damaged = _damage(data, s3_server)
    run(
        PipelineConfig(data=data, out=out, image_size=SMALL.size, grid=8, load_batch_size=8),
        s3=s3_server,
    )
    summary = _check_outputs(out, SMALL.n_train + SMALL.n_val + SMALL.n_test, damaged, s3_server)
    text = json.dumps(summary)
    assert s3_server.secret_key not in text and "secret" not in text.lower()


def test_missing_bucket_fails_before_work(s3_server, tmp_path):
    data = str(tmp_path / "data")
    write_synthetic(data, SMALL)
    with pytest.raises(StorageNotFoundError):
        run(
            PipelineConfig(data=data, out="s3://no-such-bucket-xyz/out", image_size=32, grid=8),
            s3=s3_server,
        )
    with pytest.raises(StorageNotFoundError):
        run(
            PipelineConfig(data="s3://no-such-bucket-xyz/in", out=str(tmp_path / "o")), s3=s3_server
        )


def test_wrong_credentials_fail_before_work(s3_server_with_auth, tmp_path):
    bad = S3Options(endpoint_url=s3_server_with_auth, access_key="wrong", secret_key="wrong")
    with pytest.raises(StorageAccessError):
        run(PipelineConfig(data="s3://some-bucket/in", out=str(tmp_path / "o")), s3=bad)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"grid": 15}, "patch grid 15 must divide image size 224"),
        ({"stages": ("labels", "paint")}, "unknown stage"),
        ({"coverage_threshold": 0.0}, "coverage_threshold"),
    ],
)
def test_bad_config_is_typed(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PipelineConfig(**kwargs)


def test_clean_run_still_writes_an_errors_table(ray_cluster, tmp_path):
    data = str(tmp_path / "data")
    write_synthetic(data, SyntheticConfig(n_train=4, n_val=2, n_test=4, size=32, seed=2))
    out = str(tmp_path / "out")
    summary = run(PipelineConfig(data=data, out=out, image_size=32, grid=8, stages=("labels",)))
    assert summary["counts"] == {"input": 10, "ok": 10, "errors": 0}
    errors = _read_parquet_dir(join(out, "errors"))
    assert len(errors) == 0 and list(errors.columns) == ["id", "uri", "stage", "error_type", "message"]
    assert not (tmp_path / "out" / "swap_preview.png").exists()
