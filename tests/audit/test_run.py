"""The audit job end to end: a background reader and a foreground reader give the expected
extremes; seeds reproduce; Ray and in-process agree; S3 in and out; MLflow nesting; bad
inputs raise typed errors and leave a previous audit.json intact."""

from __future__ import annotations

import json
import os

import pytest

from abs_ray.audit.config import AuditConfig
from abs_ray.audit.run import audit_table, run_audit
from abs_ray.errors import ConfigError, DatasetError, StorageNotFoundError
from abs_ray.io import exists, join, read_text
from abs_ray.train.data import scan_disentangled


def _cfg(data, model, out, **kw):
    kw = {"in_process": True, "n_boot": 200, "examples": 4, **kw}
    return AuditConfig(data=data, model=model, out=str(out), **kw)


def _acc(report, split):
    return {v: a["accuracy"] for v, a in report["splits"][split]["variants"].items()}


def test_background_reader_is_caught(dataset, readers, tmp_path):
    report = run_audit(_cfg(dataset, readers["bg"], tmp_path))
    acc, gap = _acc(report, "val"), report["splits"]["val"]["bg_gap"]
    # val: every background agrees with the class; the reader sees only the background.
    assert acc["original"] == acc["only_bg"] == acc["mixed_same"] == 1.0
    assert acc["mixed_next"] == 0.0
    assert 0.2 <= acc["mixed_rand"] <= 0.8  # about chance (0.5)
    assert gap["gap"] >= 0.2 and gap["ci_low"] > 0.0
    assert _acc(report, "test")["original"] == 0.5  # test backgrounds say nothing
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["splits"] == json.loads(json.dumps(report["splits"]))
    assert saved["data"]["rows_sha256"] == scan_disentangled(dataset).rows_sha256
    assert saved["model"]["kind"] == "torchscript" and saved["model"]["source"] == readers["bg"]
    assert "| only_bg | 1.000 | 16 | 0 |" in (tmp_path / "audit.md").read_text()
    assert sorted(os.listdir(tmp_path / "examples")) == sorted(
        f"{v}.png" for v in _acc(report, "val")
    )


def test_foreground_reader_is_cleared(dataset, readers, tmp_path):
    report = run_audit(_cfg(dataset, readers["fg"], tmp_path))
    for split in ("val", "test"):
        acc, gap = _acc(report, split), report["splits"][split]["bg_gap"]
        assert acc["only_fg_black"] == acc["mixed_rand"] == acc["mixed_next"] == 1.0
        assert acc["only_bg"] == 0.5
        assert (gap["gap"], gap["ci_low"], gap["ci_high"]) == (0.0, 0.0, 0.0)


def test_same_seed_same_numbers_other_seed_other_partners(dataset, readers, tmp_path):
    a = run_audit(_cfg(dataset, readers["bg"], tmp_path / "a", seed=5))
    b = run_audit(_cfg(dataset, readers["bg"], tmp_path / "b", seed=5))
    assert a["splits"] == b["splits"]
    info = scan_disentangled(dataset)
    t5, t6 = audit_table(info, ("val",), 5), audit_table(info, ("val",), 6)
    assert t5["partner_mixed_rand"].equals(audit_table(info, ("val",), 5)["partner_mixed_rand"])
    assert not t5["partner_mixed_rand"].equals(t6["partner_mixed_rand"])
    # The val partners do not depend on which other splits are audited.
    both = audit_table(info, ("test", "val"), 5)
    assert both.filter(both["split"].to_numpy(zero_copy_only=False) == "val")[
        "partner_mixed_same"
    ].equals(t5["partner_mixed_same"])


def test_ray_actor_pool_gives_the_in_process_numbers(ray_cluster, dataset, readers, tmp_path):
    local = run_audit(_cfg(dataset, readers["bg"], tmp_path / "local"))
    on_ray = run_audit(
        _cfg(dataset, readers["bg"], tmp_path / "ray", in_process=False, batch_size=8)
    )
    assert on_ray["splits"] == local["splits"]
    assert on_ray["rows"] == {"audited": 24, "predicted": 24}


def test_bad_inputs_raise_before_work_and_keep_the_previous_audit(dataset, readers, tmp_path):
    run_audit(_cfg(dataset, readers["fg"], tmp_path))
    before = (tmp_path / "audit.json").read_bytes()
    with pytest.raises(StorageNotFoundError):
        run_audit(_cfg(dataset, str(tmp_path / "missing.pt"), tmp_path))
    with pytest.raises(StorageNotFoundError):
        run_audit(_cfg(str(tmp_path / "no-data"), readers["fg"], tmp_path))
    with pytest.raises(DatasetError):
        run_audit(_cfg(str(tmp_path / "examples"), readers["fg"], tmp_path))
    with pytest.raises(ConfigError, match="returns 1 scores"):
        run_audit(_cfg(dataset, _one_score_model(tmp_path), tmp_path))
    with pytest.raises(ConfigError, match="splits must be among"):
        _cfg(dataset, readers["fg"], tmp_path, splits=("dev",))
    assert (tmp_path / "audit.json").read_bytes() == before


def test_a_failure_during_the_run_keeps_the_previous_audit(dataset, readers, tmp_path, monkeypatch):
    import abs_ray.audit.run as run_module

    run_audit(_cfg(dataset, readers["fg"], tmp_path))
    before = (tmp_path / "audit.json").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("worker lost")

    monkeypatch.setattr(run_module, "predict", broken)
    with pytest.raises(RuntimeError, match="worker lost"):
        run_audit(_cfg(dataset, readers["bg"], tmp_path))
    assert (tmp_path / "audit.json").read_bytes() == before


def _one_score_model(tmp_path) -> str:
    import torch

    class One(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return images.float().mean(dim=(1, 2, 3))[:, None]

    path = tmp_path / "one.pt"
    torch.jit.save(torch.jit.script(One()), str(path))
    return str(path)


def test_an_mlflow_model_is_audited_and_logged_nested_under_its_run(dataset, store, tmp_path):
    from mlflow import MlflowClient

    report = run_audit(
        _cfg(dataset, f"runs:/{store['run_id']}/model", tmp_path, mlflow_tracking_uri=store["uri"])
    )
    assert report["model"]["run_id"] == store["run_id"]
    logged = report["mlflow"]
    assert logged["parent_run_id"] == store["run_id"]
    client = MlflowClient(store["uri"])
    run = client.get_run(logged["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == store["run_id"]
    assert (
        run.data.metrics["val/original/accuracy"]
        == report["splits"]["val"]["variants"]["original"]["accuracy"]
    )
    names = {a.path for a in client.list_artifacts(logged["run_id"])}
    assert {"audit.json", "audit.md", "examples"} <= names
    saved = json.loads((tmp_path / "audit.json").read_text())
    assert saved["mlflow"]["run_id"] == logged["run_id"]


def test_s3_data_model_and_output(s3_server, bucket, readers, samples):
    from pathlib import Path

    from abs_ray.io import write_bytes
    from abs_ray.train import write_disentangled_from_samples

    data = join(bucket, "runs", "demo")
    write_disentangled_from_samples(samples, data, s3_server)
    model = join(bucket, "models", "bg.pt")
    write_bytes(model, Path(readers["bg"]).read_bytes(), s3_server)
    out = join(bucket, "audits", "bg")
    report = run_audit(_cfg(data, model, out), s3_server)
    saved = json.loads(read_text(join(out, "audit.json"), s3_server))
    assert saved["splits"]["val"]["variants"]["only_bg"]["accuracy"] == 1.0
    assert saved["splits"] == json.loads(json.dumps(report["splits"]))
    assert exists(join(out, "examples", "mixed_rand.png"), s3_server)
    assert exists(join(out, "audit.md"), s3_server)


def test_rows_without_partner_are_left_out_and_counted(samples, readers, tmp_path):
    from abs_ray.train import write_disentangled_from_samples

    val = [s for s in samples if s.split == "val"]
    lone = [s for s in val if s.y == 0][:3] + [s for s in val if s.y == 1][:1]
    data = str(tmp_path / "data")
    write_disentangled_from_samples([s for s in samples if s.split == "train"] + lone, data)
    report = run_audit(_cfg(data, readers["fg"], tmp_path / "out", splits=("val",)))
    same = report["splits"]["val"]["variants"]["mixed_same"]
    assert (same["n"], same["n_invalid"]) == (3, 1)  # class 1 has one image: no same partner
    assert same["per_class"]["1"]["n"] == 0
    assert report["splits"]["val"]["variants"]["mixed_rand"]["n_invalid"] == 0
    assert report["splits"]["val"]["bg_gap"]["n"] == 3
    assert "| mixed_same | 1.000 | 3 | 1 |" in (tmp_path / "out" / "audit.md").read_text()
