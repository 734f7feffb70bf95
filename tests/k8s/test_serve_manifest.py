"""The RayService's serveConfigV2 is deployments/serve_config.yaml (plus the cluster overrides)."""

from __future__ import annotations

import copy

import yaml

from abs_ray.serve.config import check_serve_config

APP = "deployments.augment:build_app"


def _leaves(node, path=()):
    """``{path: value}`` for every scalar in a parsed YAML tree."""
    if isinstance(node, dict):
        return {k: v for key, sub in node.items() for k, v in _leaves(sub, (*path, key)).items()}
    if isinstance(node, list):
        return {k: v for i, sub in enumerate(node) for k, v in _leaves(sub, (*path, i)).items()}
    return {path: node}


def _serve_config(repo_root) -> dict:
    return yaml.safe_load((repo_root / "deployments" / "serve_config.yaml").read_text())


def test_serve_config_v2_is_the_repo_config(render, by_kind, repo_root):
    deployed = yaml.safe_load(by_kind["RayService"]["spec"]["serveConfigV2"])
    source = _serve_config(repo_root)
    assert deployed == render.cluster_serve_config(source)
    # ... and differs from the file in the documented overrides only.
    before, after = _leaves(source), _leaves(deployed)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert changed == {path for path, _, _ in render.CLUSTER_OVERRIDES}
    assert after[("http_options", "host")] == "0.0.0.0"
    deployments = deployed["applications"][0]["deployments"]
    for path, _, _ in render.CLUSTER_OVERRIDES:  # index paths name the intended deployment
        if path[:3] == ("applications", 0, "deployments"):
            assert deployments[path[3]]["name"] in ("SwapIngress", "SwapModel")
    assert [d["name"] for d in deployments] == ["SwapIngress", "SwapModel"]


def test_manifest_is_up_to_date(render, repo_root):
    manifest = repo_root / "k8s" / "rayservice-augment.yaml"
    assert render.render() == manifest.read_text(), "run: python k8s/render.py"
    assert render.main(["--check"]) == 0


def test_rendered_config_passes_the_serve_checks(by_kind):
    """Ray's own schema and the project's strict check (unknown keys, batching, args)."""
    from ray.serve.schema import ServeDeploySchema

    config = yaml.safe_load(by_kind["RayService"]["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(config)
    check_serve_config(config, (APP,))


def test_cluster_serves_what_the_config_asks(by_kind):
    """The head exposes Serve's port; the GPU group can hold every SwapModel replica."""
    service = by_kind["RayService"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    cluster = service["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert ports["serve"] == config["http_options"]["port"]
    (app,) = config["applications"]
    model = next(d for d in app["deployments"] if d["name"] == "SwapModel")
    gpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "gpu")
    per_pod = int(gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
    assert app["args"]["num_gpus"] >= 1
    needed = model["autoscaling_config"]["max_replicas"] * app["args"]["num_gpus"]
    assert gpu["maxReplicas"] * per_pod >= needed


def test_serve_replicas_at_their_maxima_fit_the_worker_groups(by_kind, validate, docs):
    """Every replica the autoscaling maxima allow can be placed on the cluster at its largest
    (head with num-cpus 0 + maxReplicas GPU pods): none stays pending, the app stays
    healthy. Raising a maximum past what the groups can place is an error."""
    service = by_kind["RayService"]
    nodes = validate.ray_nodes(service["spec"]["rayClusterConfig"])
    assert nodes[0] == {"CPU": 0.0, "GPU": 0.0}  # the head runs no replica
    assert validate.capacity_errors(docs) == []
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    model = config["applications"][0]["deployments"][1]
    assert model["name"] == "SwapModel"  # the override paths in k8s/render.py index it
    model["autoscaling_config"]["max_replicas"] = 5  # one more than there can be GPUs
    bad = copy.deepcopy(service)
    bad["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    path = next(p for p, d in docs if d is service)
    (error,) = validate.capacity_errors([(path, bad)])
    assert "SwapModel needs CPU 1, GPU 1" in error and "GPU 4" in error


def test_readiness_is_the_apps_and_the_head_takes_no_traffic(by_kind):
    """Pods get Serve traffic when the app can answer (/v1/ready), not when the proxy runs."""
    from deployments.augment import api

    service = by_kind["RayService"]
    assert service["spec"]["excludeHeadPodFromServeSvc"] is True
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    cluster = service["spec"]["rayClusterConfig"]
    (gpu,) = cluster["workerGroupSpecs"]
    container = gpu["template"]["spec"]["containers"][0]
    probe = container["readinessProbe"]
    assert probe["httpGet"] == {"path": "/v1/ready", "port": config["http_options"]["port"]}
    assert "/v1/ready" in api.openapi()["paths"]
    # the probe waits longer than the route's own deadline, so a 503 arrives as a 503
    assert probe["timeoutSeconds"] > config["applications"][0]["args"]["ready_timeout_s"]
    assert "livenessProbe" not in container  # KubeRay's own: a down model restarts no pod


def test_render_rewrites_only_the_block(render, repo_root, tmp_path):
    manifest = tmp_path / "rayservice.yaml"
    current = (repo_root / "k8s" / "rayservice-augment.yaml").read_text()
    stale = current.replace("max_batch_size: 8", "max_batch_size: 2")
    assert stale != current
    manifest.write_text(stale)
    assert render.main(["--check", "--manifest", str(manifest)]) == 1
    assert manifest.read_text() == stale  # --check writes nothing
    assert render.main(["--manifest", str(manifest)]) == 0
    assert manifest.read_text() == current

    config = tmp_path / "serve.yaml"
    edited = _serve_config(repo_root)
    edited["applications"][0]["args"]["bank"] = "s3://bucket/runs/wb1"
    config.write_text(yaml.safe_dump(edited))
    assert render.main(["--serve-config", str(config), "--manifest", str(manifest)]) == 0
    written = yaml.safe_load(manifest.read_text())
    assert yaml.safe_load(written["spec"]["serveConfigV2"])["applications"][0]["args"]["bank"] == (
        "s3://bucket/runs/wb1"
    )
    # everything outside the block is kept as written, comments included
    assert render.replace_block(manifest.read_text(), "") == render.replace_block(current, "")
