"""End to end on the session's Ray cluster: 2 CPU workers (gloo) train the tiny model on a tiny
disentangled set in object storage while one worker is killed; the run resumes from its
checkpoint; MLflow holds one run with params, per-epoch metrics and artifacts; the model loads
and predicts; a re-submitted job continues the run."""

import dataclasses
import json

import numpy as np
import pytest

from abs_ray.errors import ConfigError
from abs_ray.io import decode_image, encode_png, read_bytes, read_text
from abs_ray.train import TrainConfig, run_training, scan_disentangled
from abs_ray.train import write_disentangled_from_samples as write_set
from abs_ray.train.loop import FaultInjection

_PREDICT = """
import sys
try:
    import abs_ray  # noqa: F401
except ImportError:
    print("abs_ray: not importable")
import base64, json
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
images = [base64.b64decode(s) for s in json.load(open(sys.argv[2]))]
out = model.predict(pd.DataFrame({"image": images}))
print("RESULT " + json.dumps(out.to_dict(orient="list")))
"""


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
def killed_run(ray_cluster, s3_server, tiny_samples, tiny_run, tmp_path_factory):
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
        register_model="tiny-classifier",
        **tiny_run,
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
        # The label-free swap-val score, read from object storage, also after the restart.
        assert entry["swap_val"]["n"] == 8 and 0 <= entry["swap_val"]["overall_accuracy"] <= 1
    for split, n in (("val", 8), ("test", 16)):
        final = report["final"][split]
        assert final["n"] == n and set(final["per_group"]) == set(final["counts"])
    best = report["best"]
    assert best["epoch"] in (0, 1) and set(best["test"]["per_group"]) == {"0", "1", "2", "3"}
    assert best["test"]["worst_group_accuracy"] == min(best["test"]["per_group"].values())


def test_mlflow_holds_one_run_with_params_metrics_artifacts(killed_run, s3_server):
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

    # The store's "Default" experiment points into the output, not a Ray worker's temp folder.
    for exp in client.search_experiments():
        assert exp.artifact_location.startswith(f"{cfg.out}/mlartifacts"), exp.artifact_location
    # Dataset inputs with their digests, one per split.
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    assert all(len(d.digest) == 16 for d in inputs.values())
    assert len({d.digest for d in inputs.values()}) == 3


def test_the_logged_model_loads_where_abs_ray_cannot_be_imported(killed_run, tmp_path, monkeypatch):
    import base64
    import subprocess
    import sys

    from mlflow import MlflowClient

    tracking = f"sqlite:///{killed_run['tmp']}/mlflow.db"
    uri = killed_run["report"]["mlflow"]["model_uri"]
    rng = np.random.default_rng(1)
    images = [encode_png(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)) for s in (32, 50)]
    (tmp_path / "images.json").write_text(
        json.dumps([base64.b64encode(b).decode() for b in images])
    )
    (tmp_path / "predict.py").write_text(_PREDICT)
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text("import sys\nsys.modules['abs_ray'] = None\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(block), MLFLOW_TRACKING_URI=tracking)
    proc = subprocess.run(
        [sys.executable, "predict.py", uri, "images.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "abs_ray: not importable" in proc.stdout
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    probs = np.stack([result["prob_class_0"], result["prob_class_1"]], axis=1)
    assert probs.shape == (2, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    model = MlflowClient(tracking).get_logged_model(uri.split("/")[-1])
    assert model.source_run_id == killed_run["report"]["mlflow"]["run_id"]
    # Signature and input example travel with it.
    import mlflow.models

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking)
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.input_names() == ["image"]
    assert info.saved_input_example_info is not None


def test_the_best_epoch_is_registered_with_tags(killed_run):
    from mlflow import MlflowClient

    report = killed_run["report"]
    registered = report["mlflow"]["registered_model"]
    assert registered["name"] == "tiny-classifier"
    client = MlflowClient(f"sqlite:///{killed_run['tmp']}/mlflow.db")
    version = client.get_model_version("tiny-classifier", registered["version"])
    assert version.run_id == report["mlflow"]["run_id"]
    tags = version.tags
    assert tags["method"] == "abs"
    assert tags["data_digest"] == report["tags"]["abs_ray.data_rows_sha256"]
    assert tags["detector"] == "patch-grid-8-coverage-0.25"
    assert tags["best_epoch"] == str(report["best"]["epoch"])
    wga = report["best"]["test"]["worst_group_accuracy"]
    assert tags["test_worst_group_accuracy"] == f"{wga:.4f}"


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
