"""A pipeline output as what the service serves (abs_ray.serve.output), without Ray.

Outputs are written here as the pipeline commits them (``manifest.json``, ``data/*.parquet``
with the bank columns, ``detector/detector.pt``); the end-to-end run through the real
pipeline and Serve is ``test_handoff.py``.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from abs_ray.errors import ConfigError
from abs_ray.io import encode_png, join, write_bytes, write_text
from abs_ray.serve.bank import BackgroundBank
from abs_ray.serve.config import ServiceConfig, check_serve_config, parse_user_config
from abs_ray.serve.jobs import Job, SwapOptions
from abs_ray.serve.output import open_output
from abs_ray.serve.service import SwapService

IDS = ["images/a.jpg", "images/b.png", "images/c.webp"]


def write_output(out: str, mask_source: str = "detector", detector: bool = True) -> None:
    """A committed pipeline output with three backgrounds (and a tiny detector)."""
    rng = np.random.default_rng(0)
    backgrounds = [rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in IDS]
    table = pa.table(
        {
            "id": IDS,
            "label": pa.array([0, 1, 1], pa.int64()),
            "group": pa.array([0, 2, 3], pa.int64()),
            "background_png": [encode_png(b) for b in backgrounds],
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    write_bytes(join(out, "data", "part-0.parquet"), buf.getvalue())
    checkpoint = join(out, "detector", "detector.pt")
    if detector:
        from abs_ray.models import create_detector, save_detector

        save_detector(create_detector("test_tiny", grid=8, image_size=32, weights=None), checkpoint)
    manifest = {
        "state": "complete",
        "run_id": "run-1",
        "code_version": "0.1.0+gabc1234",
        "mask_source": mask_source,
        "detector_checkpoint": checkpoint if mask_source == "detector" else "truth",
        "counts": {"input": 4, "ok": 3, "errors": 1},
    }
    write_text(join(out, "manifest.json"), json.dumps(manifest))


@pytest.fixture
def output(tmp_path) -> str:
    out = str(tmp_path / "run")
    write_output(out)
    return out


def test_the_service_serves_the_outputs_bank_and_detector(output):
    service = SwapService.from_config(ServiceConfig(device="cpu"), output=output)
    info = service.info()
    assert info["mask_source"]["kind"] == "detector"
    assert info["mask_source"]["checkpoint"] == join(output, "detector", "detector.pt")
    assert info["output"]["uri"] == output
    assert info["output"]["code_version"] == "0.1.0+gabc1234"
    assert info["output"]["counts"] == {"input": 4, "ok": 3, "errors": 1}
    assert info["bank"]["size"] == 3
    assert info["bank"]["fingerprint"] == BackgroundBank.from_pipeline_output(output).fingerprint()
    image = np.full((24, 32, 3), 200, dtype=np.uint8)
    (result,) = service.process([Job("swap", image, swap=SwapOptions(n=4, seed=2))])
    assert result.mask_source == "detector"
    assert {p["bg_id"] for p in result.params} <= set(IDS)


def test_a_truth_masked_output_serves_its_bank_with_saliency_masks(tmp_path):
    out = str(tmp_path / "truth")
    write_output(out, mask_source="truth", detector=False)
    assert open_output(out).detector_checkpoint is None
    service = SwapService.from_config(ServiceConfig(device="cpu"), pretrained=False, output=out)
    assert service.info()["mask_source"]["kind"] == "saliency"
    assert service.info()["output"]["mask_source"] == "truth"


def test_mask_source_saliency_ignores_the_outputs_detector(output):
    cfg = ServiceConfig(device="cpu", mask_source="saliency")
    service = SwapService.from_config(cfg, pretrained=False, output=output)
    assert service.info()["mask_source"]["kind"] == "saliency"
    assert service.info()["output"]["detector"] == join(output, "detector", "detector.pt")


def test_the_manifests_checkpoint_is_used_when_the_output_has_none(tmp_path, output):
    out = str(tmp_path / "second")
    write_output(out, detector=False)
    manifest = json.loads((tmp_path / "second" / "manifest.json").read_text())
    manifest["detector_checkpoint"] = join(output, "detector", "detector.pt")
    write_text(join(out, "manifest.json"), json.dumps(manifest))
    assert open_output(out).detector_checkpoint == join(output, "detector", "detector.pt")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_folder", "not a pipeline output: no manifest.json"),
        ("bad_json", "not a pipeline output: no manifest.json"),
        ("replacing", "is not complete"),
        ("no_data", "has no data/\\*.parquet"),
        ("no_detector", "neither .* nor the manifest's detector_checkpoint"),
    ],
)
def test_a_bad_output_is_a_config_error_naming_it(tmp_path, damage, message):
    out = str(tmp_path / "run")
    if damage != "no_folder":
        write_output(out, detector=damage != "no_detector")
    manifest = tmp_path / "run" / "manifest.json"
    if damage == "bad_json":
        manifest.write_text("{not json")
    elif damage == "replacing":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "state": "replacing"}))
    elif damage == "no_data":
        (tmp_path / "run" / "data" / "part-0.parquet").unlink()
    with pytest.raises(ConfigError, match=message) as info:
        SwapService.from_config(ServiceConfig(device="cpu"), output=out)
    assert out in str(info.value)


def test_an_output_excludes_a_bank_or_detector_of_its_own(output):
    with pytest.raises(ConfigError, match="leave bank"):
        SwapService.from_config(ServiceConfig(device="cpu", bank=output), output=output)


def test_user_config_is_checked(shipped_config):
    assert parse_user_config(None) == {"output": None}
    with pytest.raises(ConfigError, match="unknown SwapModel user_config"):
        parse_user_config({"output": "s3://b/r", "bank": "x"})
    with pytest.raises(ConfigError, match="output must be"):
        parse_user_config({"output": ""})
    import copy

    config = copy.deepcopy(shipped_config)
    app = config["applications"][0]
    model = next(d for d in app["deployments"] if d["name"] == "SwapModel")
    model["user_config"] = {"output": "s3://b/r"}
    check_serve_config(config, (app["import_path"],))
    app["args"]["bank"] = "s3://b/other"
    with pytest.raises(ConfigError, match="leave args.bank"):
        check_serve_config(config, (app["import_path"],))
    model["user_config"] = {"outptu": "s3://b/r"}
    with pytest.raises(ConfigError, match="unknown SwapModel user_config"):
        check_serve_config(config, (app["import_path"],))
