"""End to end on the session's Ray cluster: 2 CPU workers (gloo) train the tiny model on a tiny
disentangled set in object storage while one worker is killed; the run resumes from its
checkpoint; MLflow holds one run with params, per-epoch metrics and artifacts; the model loads
and predicts; a re-submitted job continues the run."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.io import decode_image, read_bytes, read_text
from abs_ray.train import TrainConfig, run_training, scan_disentangled
from abs_ray.train import write_disentangled_from_samples as write_set
from abs_ray.train.loop import FaultInjection

#: Small and quick: 2 workers at half a CPU each leave one CPU of the 2 to Ray Data's decoding.
TINY_RUN = {
    "backbone": "test_tiny",
    "weights": None,
    "batch_size": 8,
    "num_workers": 2,
    "cpus_per_worker": 0.5,
    "eval_batch_size": 16,
    "lr": 0.05,
    "sample_grid": 8,
}


def _only_run(tracking_uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    experiments = client.search_experiments()
    runs = client.search_runs([e.experiment_id for e in experiments])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def killed_run(ray_cluster, s3_server, tiny_samples, tmp_path_factory):
    """One 2-epoch ``abs`` run on data in object storage, whose rank-1 worker exits abruptly
    after epoch 0's checkpoint (the run restarts its workers from that checkpoint)."""
    import uuid

    tmp = tmp_path_factory.mktemp("killed_run")
    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3_server.boto3_client().create_bucket(Bucket=bucket)
    data = f"s3://{bucket}/tiny"  # read by the Ray Data tasks through the S3 API
    write_set(tiny_samples, data, s3_server, alpha="patch", grid=8, rows_per_file=20)
    out = str(tmp / "out")
    cfg = TrainConfig(
        data=data,
        out=out,
        method="abs",
        epochs=2,
        max_failures=2,
        mlflow_tracking_uri=f"sqlite:///{tmp}/mlflow.db",
        **TINY_RUN,
    )
    marker = tmp / "killed.txt"
    report = run_training(cfg, s3=s3_server, fault=FaultInjection(1, 0, str(marker)))
    return {"cfg": cfg, "report": report, "marker": marker, "tmp": tmp}


def test_a_killed_worker_resumes_from_its_checkpoint(killed_run):
    report = killed_run["report"]
    assert killed_run["marker"].exists()  # rank 1 did exit after epoch 0
    assert report["attempts"] == 2 and report["resumed_from_epochs"] == [1]
    assert report["epochs_completed"] == 2
    assert [h["epoch"] for h in report["history"]] == [0, 1]
    for entry in report["history"]:
        assert entry["train"]["samples"] == 32  # both shards, every row once
        assert entry["train"]["swapped_fraction"] == 1.0
    for split, n in (("val", 8), ("test", 16)):
        final = report["final"][split]
        assert final["n"] == n and set(final["per_group"]) == set(final["counts"])
    best = report["best"]
    assert best["epoch"] in (0, 1) and set(best["test"]["per_group"]) == {"0", "1", "2", "3"}
    assert best["test"]["worst_group_accuracy"] == min(best["test"]["per_group"].values())


def test_mlflow_holds_one_run_with_params_metrics_artifacts(killed_run, s3_server, monkeypatch):
    import mlflow.pytorch

    cfg, report, tmp = killed_run["cfg"], killed_run["report"], killed_run["tmp"]
    tracking = f"sqlite:///{tmp}/mlflow.db"
    assert report["mlflow"]["tracking_uri"] == tracking
    client, run = _only_run(tracking)  # one run, though the workers restarted
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert (params["method"], params["backbone"], params["batch_size"]) == ("abs", "test_tiny", "8")
    assert (params["image_size"], params["num_classes"], params["data.train_rows"]) == (
        "32",
        "2",
        "32",
    )
    assert params["crop_scale"] == "[0.7, 1.0]" and params["swap_prob"] == "1.0"
    info = scan_disentangled(cfg.data, s3_server)
    assert tags["abs_ray.data_rows_sha256"] == info.rows_sha256
    assert tags["abs_ray.data_manifest_sha256"] == info.manifest_sha256
    assert tags["abs_ray.detector_checkpoint"] == "patch-grid-8-coverage-0.25"
    assert tags["abs_ray.code_version"].startswith("0.1.0")
    # [:2]: the resubmission test may add epoch 2 to the same run.
    for key in ("train/loss", "train/accuracy", "val/accuracy", "val/worst_group_accuracy"):
        assert _steps(client, run.info.run_id, key)[:2] == [0, 1], key
    assert _steps(client, run.info.run_id, "test/group_2_accuracy")[:2] == [0, 1]

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"train_samples.png", "per_group_accuracy.png", "report.json"} <= artifacts
    folder = client.download_artifacts(run.info.run_id, "", str(tmp / "artifacts"))
    grid = decode_image(read_bytes(f"{folder}/train_samples.png"))
    assert grid.shape == (2 * 32, 4 * 32, 3)  # originals over inputs; one worker batch (8 / 2)
    originals, composites = grid[:32].astype(int), grid[32:].astype(int)
    assert np.abs(originals - composites).mean() > 5  # swapped, cropped, flipped
    assert decode_image(read_bytes(f"{folder}/per_group_accuracy.png")).shape[0] > 100
    logged = json.loads(read_text(f"{folder}/report.json"))
    assert logged["epochs_completed"] >= 2 and logged["mlflow"]["run_id"] == run.info.run_id
    on_disk = json.loads(read_text(f"{cfg.out}/{cfg.resolved_run_name}/report.json"))
    assert on_disk["history"][:2] == report["history"]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)  # where models:/<id> is looked up
    model = mlflow.pytorch.load_model(report["mlflow"]["model_uri"]).eval()
    with torch.no_grad():
        logits = model(torch.rand(3, 3, 32, 32))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()


def test_a_resubmitted_job_resumes_the_run(killed_run, s3_server):
    cfg, report, tmp = killed_run["cfg"], killed_run["report"], killed_run["tmp"]
    more = run_training(dataclasses.replace(cfg, epochs=3), s3=s3_server)
    assert more["resumed_from_epochs"] == [1, 2] and more["epochs_completed"] == 3
    assert more["history"][:2] == report["history"]  # epochs 0-1 restored, not retrained
    assert more["mlflow"]["run_id"] == report["mlflow"]["run_id"]
    client, run = _only_run(f"sqlite:///{tmp}/mlflow.db")
    assert _steps(client, run.info.run_id, "train/loss") == [0, 1, 2]
    # Finished: submitting it again trains nothing; other settings are refused.
    again = run_training(dataclasses.replace(cfg, epochs=3), s3=s3_server)
    assert again["history"] == more["history"]
    with pytest.raises(ConfigError, match="exists with other settings.*lr"):
        run_training(dataclasses.replace(cfg, epochs=3, lr=0.5), s3=s3_server)
