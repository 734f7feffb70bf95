"""deployments/serve_config.yaml: Ray's schema, no unknown keys, consistent settings."""

from __future__ import annotations

import copy

import pytest
import yaml

from abs_ray.errors import ConfigError
from abs_ray.serve.config import ServiceConfig, check_serve_config, unknown_keys

APP = "deployments.augment:build_app"


@pytest.fixture(scope="module")
def config(serve_config_path):
    return yaml.safe_load(serve_config_path.read_text())


def test_repo_config_passes_ray_schema_and_strict_check(config):
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    check_serve_config(config, (APP,))
    (app,) = config["applications"]
    assert app["import_path"] == APP
    cfg = ServiceConfig.from_dict(app["args"])
    assert cfg.bank is None and cfg.detector_checkpoint is None  # works on a fresh clone
    names = {d["name"] for d in app["deployments"]}
    assert names == {"SwapIngress", "SwapModel"}
    model = next(d for d in app["deployments"] if d["name"] == "SwapModel")
    assert model["max_ongoing_requests"] >= cfg.max_batch_size
    assert model["autoscaling_config"]["max_replicas"] >= 1


def test_strict_check_finds_what_ray_accepts_silently(config):
    from ray.serve.schema import ServeDeploySchema

    bad = copy.deepcopy(config)
    bad["http_options"]["hostt"] = "0.0.0.0"
    bad["applications"][0]["route_prefx"] = "/x"
    bad["applications"][0]["deployments"][1]["max_ongoing_request"] = 99
    bad["applications"][0]["deployments"][1]["autoscaling_config"]["max_replica"] = 9
    ServeDeploySchema.model_validate(bad)  # Ray's schema lets all four through
    found = unknown_keys(ServeDeploySchema, bad)
    assert sorted(found) == [
        "applications[0].deployments[1].autoscaling_config.max_replica",
        "applications[0].deployments[1].max_ongoing_request",
        "applications[0].route_prefx",
        "http_options.hostt",
    ]
    with pytest.raises(ConfigError, match="hostt"):
        check_serve_config(bad, (APP,))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda a: a["args"].update(bnak="s3://x"), "unknown service setting"),
        (lambda a: a["args"].update(max_batch_size=0), "max_batch_size"),
        (lambda a: a["args"].update(mask_source="detector"), "needs detector_checkpoint"),
        (lambda a: a["deployments"][0].update(name="Ingress"), "is not one of"),
        (lambda a: a["deployments"][1].update(max_ongoing_requests=4), "batches never fill"),
    ],
)
def test_strict_check_finds_bad_app_settings(config, edit, message):
    bad = copy.deepcopy(config)
    edit(bad["applications"][0])
    with pytest.raises(ConfigError, match=message):
        check_serve_config(bad, (APP,))


def test_ray_schema_errors_are_reported(config):
    bad = copy.deepcopy(config)
    bad["applications"][0]["deployments"][1]["max_ongoing_requests"] = "many"
    with pytest.raises(ConfigError, match="ServeDeploySchema"):
        check_serve_config(bad, (APP,))


@pytest.mark.parametrize(
    "values",
    [
        {"scale": [2, 1]},
        {"degrees": 181},
        {"translate": -0.1},
        {"max_pixels": 10},
        {"tight": 0.9, "loose": 0.5},
        {"num_gpus": "many"},
        {"bank": ""},
    ],
)
def test_service_config_rejects_bad_values(values):
    with pytest.raises(ConfigError):
        ServiceConfig.from_dict(values)


def test_builder_validates_args():
    from ray.serve import Application

    from deployments.augment import app, build_app

    assert isinstance(app, Application)
    assert isinstance(build_app({"max_batch_size": 1}), Application)
    with pytest.raises(ConfigError, match="unknown service setting"):
        build_app({"detector": "x"})
