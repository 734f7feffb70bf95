"""Loading the audited classifier: TorchScript, torch.export, MLflow URIs, run folders."""

from __future__ import annotations

import pytest
import torch

from abs_ray.audit.models import load_model, resolve_model
from abs_ray.errors import ConfigError, StorageNotFoundError
from abs_ray.train.mlflow_model import ServingClassifier, export_classifier

SIZE = 32


def _expected(model, images):
    with torch.no_grad():
        return ServingClassifier(model, SIZE).eval()(images)


def test_torchscript_file(readers):
    ref = resolve_model(readers["bg"])
    assert ref.kind == "torchscript" and len(ref.identity["sha256"]) == 64
    images = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    images[0, ..., 2] = 200  # blue: class 0
    images[1, ..., 0] = 200  # red-yellowish corners: class 1
    assert load_model(ref)(images).argmax(1).tolist() == [0, 1]


def test_export_file_gives_the_serving_classifier_outputs(tmp_path, store):
    model = store["model"]
    path = export_classifier(model, SIZE, tmp_path / "model.pt2")
    ref = resolve_model(str(path))
    images = torch.randint(0, 256, (3, SIZE, SIZE, 3), dtype=torch.uint8)
    assert ref.kind == "export"
    torch.testing.assert_close(load_model(ref)(images), _expected(model, images))


@pytest.mark.parametrize("form", ["runs", "models_version", "logged_model", "run_folder"])
def test_mlflow_sources_load_the_logged_program(store, form, tmp_path):
    import mlflow

    # MLflow's global store is elsewhere: the given (or reported) tracking URI must win,
    # and the global must be left as it was.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    mlflow.set_tracking_uri(other)
    source = {
        "runs": f"runs:/{store['run_id']}/model",
        "models_version": "models:/audit-tiny/1",
        "logged_model": store["model_uri"],
        "run_folder": store["folder"],
    }[form]
    ref = resolve_model(source, tracking_uri=None if form == "run_folder" else store["uri"])
    assert mlflow.get_tracking_uri() == other
    assert ref.kind == "export" and ref.identity["run_id"] == store["run_id"]
    images = torch.randint(0, 256, (2, SIZE, SIZE, 3), dtype=torch.uint8)
    torch.testing.assert_close(load_model(ref)(images), _expected(store["model"], images))
    if form == "run_folder":
        assert ref.identity["method"] == "abs" and ref.identity["tracking_uri"] == store["uri"]


def test_unknown_or_broken_models_raise_typed_errors(tmp_path, store):
    with pytest.raises(StorageNotFoundError):
        resolve_model(str(tmp_path / "missing.pt"))
    with pytest.raises(StorageNotFoundError):
        resolve_model(str(tmp_path / "nothing-here"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(ConfigError, match="neither a training run folder"):
        resolve_model(str(tmp_path / "folder"))
    (tmp_path / "broken.pt2").write_bytes(b"not a program")
    with pytest.raises(ConfigError, match="not a loadable export program"):
        resolve_model(str(tmp_path / "broken.pt2"))
    (tmp_path / "broken.pt").write_bytes(b"not a program")
    with pytest.raises(ConfigError, match="not a loadable torchscript program"):
        resolve_model(str(tmp_path / "broken.pt"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "report.json").write_text("{}")
    with pytest.raises(ConfigError, match="mlflow.model_uri"):
        resolve_model(str(tmp_path / "run"))
    with pytest.raises(StorageNotFoundError):
        resolve_model("models:/no-such-model/3", tracking_uri=store["uri"])
    with pytest.raises(ConfigError, match="non-empty"):
        resolve_model("  ")
