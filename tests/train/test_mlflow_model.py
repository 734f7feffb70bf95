"""The logged classifier loads and serves where abs_ray cannot be imported; registry; inputs."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.models.classifier import create_classifier
from abs_ray.train.mlflow_model import (
    ServingClassifier,
    frame_digest,
    log_classifier,
    log_inputs,
    register_model,
    split_frames,
    system_metrics,
    version_tags,
)

CLASSES = ["landbird", "waterbird"]
SIZE = 32

#: Runs first in every Python process that has its folder on PYTHONPATH: abs_ray cannot load.
_BLOCK_ABS_RAY = "import sys\nsys.modules['abs_ray'] = None\n"

_PREDICT = """
import sys
sys.modules["abs_ray"] = None
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


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _reference(model: torch.nn.Module, images: list[bytes]) -> np.ndarray:
    """The in-process model on the pixels the training data would have had (Pillow bilinear
    resize to SIZE, RGB)."""
    from PIL import Image

    pixels = [
        np.asarray(Image.open(io.BytesIO(b)).convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))
        for b in images
    ]
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float() / 255.0
    with torch.no_grad():
        return model.eval()(x).softmax(dim=1).numpy()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite MLflow store with one run holding the logged tiny classifier, registered."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("clf", artifact_location=str(root / "mlartifacts"))
    torch.manual_seed(0)
    model = create_classifier("test_tiny", num_classes=2, weights=None).eval()
    with mlflow.start_run(experiment_id=exp) as run:
        info = log_classifier(model, SIZE, class_names=CLASSES, tags={"abs_ray.method": "abs"})
    version = register_model(
        info.model_uri,
        "abs-ray-classifier",
        {"method": "abs", "data_digest": "ab12", "test_worst_group_accuracy": "0.8125"},
        alias="candidate",
    )
    rng = np.random.default_rng(0)
    images = [
        _png(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)),
        _png(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)),  # resized by the pyfunc
        _jpeg(rng.integers(0, 256, (70, 50, 3), dtype=np.uint8)),
        _png(rng.integers(0, 256, (40, 40), dtype=np.uint8)),  # greyscale
    ]
    yield {
        "uri": uri,
        "root": root,
        "run_id": run.info.run_id,
        "info": info,
        "version": version,
        "model": model,
        "images": images,
    }


def _env_without_abs_ray(tmp_path, store) -> dict[str, str]:
    block = tmp_path / "block"
    block.mkdir(exist_ok=True)
    (block / "sitecustomize.py").write_text(_BLOCK_ABS_RAY)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # As with the venv activated: `mlflow models serve` runs `uvicorn` from PATH.
    path = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env.update(PYTHONPATH=str(block), MLFLOW_TRACKING_URI=store["uri"], PATH=path)
    return env


def test_loads_and_predicts_where_abs_ray_cannot_be_imported(store, tmp_path):
    images = store["images"]
    (tmp_path / "images.json").write_text(
        json.dumps([base64.b64encode(b).decode() for b in images])
    )
    (tmp_path / "predict.py").write_text(_PREDICT)
    proc = subprocess.run(
        [sys.executable, "predict.py", store["info"].model_uri, "images.json"],
        cwd=tmp_path,  # not the repository
        env=_env_without_abs_ray(tmp_path, store),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "abs_ray: not importable" in proc.stdout
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    probs = np.stack([result[f"prob_{c}"] for c in CLASSES], axis=1)
    assert probs.shape == (4, 2)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, _reference(store["model"], images), atol=1e-5)
    assert result["label"] == [CLASSES[i] for i in probs.argmax(axis=1)]


def test_the_exported_program_matches_the_module(store):
    model = ServingClassifier(store["model"], SIZE).eval()
    x = torch.randint(0, 256, (3, SIZE, SIZE, 3), dtype=torch.uint8)
    ref = _reference(store["model"], [_png(im.numpy()) for im in x])
    np.testing.assert_allclose(model(x).detach().numpy(), ref, atol=1e-5)


def test_registered_version_has_its_tags_and_alias(store):
    from mlflow import MlflowClient

    client = MlflowClient(store["uri"])
    version = client.get_model_version_by_alias("abs-ray-classifier", "candidate")
    assert version.version == store["version"].version
    assert version.tags == {
        "method": "abs",
        "data_digest": "ab12",
        "test_worst_group_accuracy": "0.8125",
    }
    model = client.get_logged_model(store["info"].model_id)
    assert model.tags["abs_ray.method"] == "abs"
    with pytest.raises(ConfigError, match="empty"):
        register_model(store["info"].model_uri, " ")


def test_signature_and_input_example(store):
    import mlflow

    meta = mlflow.models.get_model_info(store["info"].model_uri)
    inputs = meta.signature.inputs.to_dict()
    assert inputs == [{"type": "binary", "name": "image", "required": True}]
    outputs = {c["name"]: c["type"] for c in meta.signature.outputs.to_dict()}
    assert outputs == {"prob_landbird": "double", "prob_waterbird": "double", "label": "string"}
    assert meta.saved_input_example_info is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_mlflow_models_serve_answers_invocations(store, tmp_path):
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "mlflow")
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [exe, "models", "serve", "-m", "models:/abs-ray-classifier@candidate"]
        + ["-h", "127.0.0.1", "-p", str(port), "--env-manager", "local", "--workers", "1"],
        cwd=tmp_path,
        env=_env_without_abs_ray(tmp_path, store),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    "mlflow models serve did not start:\n"
                    + (tmp_path / "serve.log").read_text()[-3000:]
                )
            time.sleep(1)
        images = store["images"][:2]
        body = {
            "dataframe_split": {
                "columns": ["image"],
                "data": [[base64.b64encode(b).decode()] for b in images],
            }
        }
        status, answer = _post(base + "/invocations", body)
        assert status == 200, answer
        rows = answer["predictions"]
        probs = np.array([[r[f"prob_{c}"] for c in CLASSES] for r in rows])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(probs, _reference(store["model"], images), atol=1e-5)

        bad = {
            "dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(b"no").decode()]]}
        }
        status, answer = _post(base + "/invocations", bad)
        assert status == 400, answer
        assert "not a readable image" in answer.get("message", ""), answer
        serve_log = (tmp_path / "serve.log").read_text()
        assert "abs_ray" not in serve_log or "ModuleNotFoundError" not in serve_log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_inputs_logged_with_digests(store, tiny_set):
    import mlflow
    from mlflow import MlflowClient

    from abs_ray.train import scan_disentangled

    info = scan_disentangled(tiny_set)
    frames = split_frames(info.files)
    assert {s: len(f) for s, f in frames.items()} == info.counts
    assert list(frames["train"].columns) == ["id", "label", "split", "group"]
    exp = mlflow.get_experiment_by_name("clf").experiment_id
    with mlflow.start_run(experiment_id=exp) as run:
        digests = log_inputs(frames, source=info.uri)
    inputs = MlflowClient(store["uri"]).get_run(run.info.run_id).inputs.dataset_inputs
    logged = {i.tags[0].value: (i.dataset.name, i.dataset.digest) for i in inputs}
    assert logged == {s: (f"disentangled-{s}", digests[s]) for s in ("train", "val", "test")}
    assert digests["train"] == frame_digest(frames["train"].sample(frac=1.0, random_state=1))
    assert len(set(digests.values())) == 3


def test_system_metrics_are_sampled(store):
    import mlflow
    from mlflow import MlflowClient

    exp = mlflow.get_experiment_by_name("clf").experiment_id
    run = MlflowClient(store["uri"]).create_run(exp)
    with system_metrics(run.info.run_id, interval_s=0.5) as on:
        assert on
        time.sleep(3)
    metrics = MlflowClient(store["uri"]).get_run(run.info.run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics), metrics
    assert any(k.startswith("system/system_memory_usage") for k in metrics), metrics


def test_bad_arguments():
    model = create_classifier("test_tiny", num_classes=2, weights=None)
    with pytest.raises(ConfigError, match="2 outputs"):
        log_classifier(model, SIZE, class_names=["a", "b", "c"])
    with pytest.raises(ConfigError, match="distinct"):
        log_classifier(model, SIZE, class_names=["a", "a"])
    with pytest.raises(ConfigError, match="image_size"):
        ServingClassifier(model, 4)


def test_version_tags_from_a_report():
    report = {
        "method": "abs",
        "run_name": "abs-test_tiny-s0",
        "config": {"backbone": "test_tiny"},
        "best": {"epoch": 2, "test": {"worst_group_accuracy": 0.75, "overall_accuracy": 0.9}},
        "tags": {
            "abs_ray.data_rows_sha256": "f00d",
            "abs_ray.detector_checkpoint": "out/detector/detector.pt",
            "abs_ray.code_version": "0.1.0",
        },
    }
    assert version_tags(report) == {
        "method": "abs",
        "run_name": "abs-test_tiny-s0",
        "backbone": "test_tiny",
        "data_digest": "f00d",
        "detector": "out/detector/detector.pt",
        "code_version": "0.1.0",
        "best_epoch": "2",
        "test_worst_group_accuracy": "0.7500",
        "test_overall_accuracy": "0.9000",
    }
