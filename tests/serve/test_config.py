"""deployments/serve_config.yaml: Ray's schema, no unknown keys, consistent settings."""

from __future__ import annotations

import copy

import pytest
import yaml

from abs_ray.errors import ConfigError
from abs_ray.serve.config import (
    LOCAL_CLUSTER,
    ServiceConfig,
    capacity_errors,
    check_serve_config,
    replica_resources,
    unknown_keys,
)

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


# --- the shipped config fits the cluster it is sized for -------------------------------------


def test_shipped_config_fits_the_2_cpu_machine_it_declares(config):
    """At the autoscaling maxima every replica can be placed on LOCAL_CLUSTER (2 CPUs): a
    maximum that cannot be placed leaves a replica pending and the app UNHEALTHY."""
    replicas = replica_resources(config, (APP,), gpus=False)
    names = [name for name, _ in replicas]
    assert names.count("SwapModel") >= 1 and names.count("SwapIngress") >= 1
    assert capacity_errors(replicas, list(LOCAL_CLUSTER)) == []
    # On a machine with one GPU, num_gpus auto asks one GPU per model replica: it fits too.
    with_gpu = replica_resources(config, (APP,), gpus=True)
    assert capacity_errors(with_gpu, [{"CPU": 2, "GPU": 1}]) == []


def test_capacity_check_finds_maxima_the_cluster_cannot_place(config):
    bad = copy.deepcopy(config)
    model = next(d for d in bad["applications"][0]["deployments"] if d["name"] == "SwapModel")
    model["autoscaling_config"]["max_replicas"] = 4  # the config before: 4 x 1 CPU on 2 CPUs
    errors = capacity_errors(replica_resources(bad, (APP,), gpus=False), list(LOCAL_CLUSTER))
    assert errors and "SwapModel needs CPU 1" in errors[0]
    assert "cluster has CPU 2" in errors[-1]


def test_capacity_check_packs_per_node_not_by_sums():
    """Two 1-GPU replicas need two GPUs on whole nodes: half a GPU on each of 4 nodes won't do."""
    two = [("SwapModel", {"CPU": 1.0, "GPU": 1.0})] * 2
    assert capacity_errors(two, [{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}]) == []
    assert capacity_errors(two, [{"CPU": 4, "GPU": 0.5}] * 4)  # 2 GPUs in sum, no whole one
    assert capacity_errors([("SwapIngress", {"CPU": 0.5, "GPU": 0.0})] * 4, [{"CPU": 2}]) == []


def test_replica_resources_follow_actor_options_and_refuse_open_ended_counts(config):
    cfg = copy.deepcopy(config)
    (app,) = cfg["applications"]
    ingress = next(d for d in app["deployments"] if d["name"] == "SwapIngress")
    ingress.pop("autoscaling_config")
    ingress["num_replicas"] = 3
    ingress["ray_actor_options"] = {"num_cpus": 0.25}
    replicas = replica_resources(cfg, (APP,), gpus=False)
    assert [r for n, r in replicas if n == "SwapIngress"] == [{"CPU": 0.25, "GPU": 0.0}] * 3
    ingress["num_replicas"] = "auto"
    with pytest.raises(ConfigError, match="no maximum"):
        replica_resources(cfg, (APP,), gpus=False)


@pytest.mark.parametrize(
    "values",
    [
        {"body_timeout_s": 0},
        {"model_retries": -1},
        {"model_retries": 11},
        {"retry_backoff_s": -1},
        {"ready_timeout_s": 0},
        {"docs": "no"},
    ],
)
def test_service_config_rejects_bad_hostile_client_settings(values):
    with pytest.raises(ConfigError):
        ServiceConfig.from_dict(values)
