"""The pipeline's own MLflow run (real sqlite store): params, summary metrics, pictures."""

import dataclasses

import numpy as np

from abs_ray.io import encode_png
from abs_ray.pipeline import PipelineConfig
from abs_ray.pipeline.tracking import PipelineRun


def test_the_pipeline_run_holds_counts_rates_detector_metrics_and_pictures(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    out = tmp_path / "out"
    # What jobs/pipeline.py sets for a local output (abs_ray.env.configure_environment).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{out}/mlflow.db")
    (out / "detector").mkdir(parents=True)
    png = encode_png(np.zeros((8, 8, 3), np.uint8))
    (out / "detector" / "mask_sheet.png").write_bytes(png)
    (out / "swap_preview.png").write_bytes(png)
    cfg = PipelineConfig(out=str(out))
    tracking = PipelineRun(cfg, None)
    run_id = tracking.start("pipeline-out", {"abs_ray.code_version": "x"})
    assert run_id is not None
    summary = {
        "counts": {"input": 10, "ok": 9, "errors": 1},
        "errors_by_type": {"DecodeError": 1},
        "images_per_s": {"disentangle": 2.5},
        "detector_metrics": {"held_out": {"mask_iou": 0.7}},
        "train": {"best": {"test": {"worst_group_accuracy": 0.625}}},
    }
    tracking.finish(summary)
    client = MlflowClient(f"sqlite:///{out}/mlflow.db")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.experiment_id == client.get_experiment_by_name("abs-ray").experiment_id
    metrics = run.data.metrics
    assert metrics["counts/ok"] == 9 and metrics["errors/DecodeError"] == 1
    assert metrics["images_per_s/disentangle"] == 2.5
    assert metrics["detector/held_out/mask_iou"] == 0.7
    assert metrics["train/test_worst_group_accuracy"] == 0.625
    assert run.data.params["out"] == str(out)
    paths = {a.path for a in client.list_artifacts(run_id)}
    assert {"manifest.json", "swap_preview.png", "detector"} <= paths
    assert [a.path for a in client.list_artifacts(run_id, "detector")] == [
        "detector/mask_sheet.png"
    ]
    # Artifacts in the training's default location (<out>/train/mlartifacts), not elsewhere.
    assert run.info.artifact_uri.startswith(
        f"{out}/train/mlartifacts"
    ) or run.info.artifact_uri.startswith(f"file://{out}/train/mlartifacts")


def test_a_failed_pipeline_marks_its_run_failed(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/o/mlflow.db")
    cfg = dataclasses.replace(PipelineConfig(), out=str(tmp_path / "o"))
    tracking = PipelineRun(cfg, None)
    run_id = tracking.start("p", {})
    tracking.finish(None, failed=True)
    client = MlflowClient(f"sqlite:///{tmp_path}/o/mlflow.db")
    assert client.get_run(run_id).info.status == "FAILED"


def test_without_a_tracking_uri_the_library_call_writes_no_store(tmp_path, monkeypatch):
    """abs_ray.pipeline.run() outside the job: the output holds only what the stages write."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = dataclasses.replace(PipelineConfig(), out=str(tmp_path / "o"))
    tracking = PipelineRun(cfg, None)
    assert tracking.start("p", {}) is None
    tracking.finish({"counts": {"ok": 1}})
    assert not (tmp_path / "o").exists()
