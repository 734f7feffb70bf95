"""k8s/ manifests without a cluster: core schemas, the project's rules, and what the issue asks.

Runs everywhere (no CRDs needed): every core object through kubernetes-validate (strict, the
schemas its wheel carries), the rules of k8s/house_rules.py (/dev/shm, Secrets, one Ray
version across pyproject.toml / Dockerfile / manifests), the RayJob's entrypoint accepted by
jobs/pipeline.py's own parser.
"""

from __future__ import annotations

import re
import shlex
import socket

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from abs_ray.env import DEFAULTS


def _cluster(doc: dict) -> dict:
    return doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]


def _ray_containers(doc: dict) -> list[dict]:
    cluster = _cluster(doc)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"]["containers"][0] for g in groups]


def _containers(rules, doc: dict) -> list[dict]:
    """Every container of every pod template in ``doc``."""
    return [c for _, spec in rules.pod_specs(doc) for c in spec["containers"]]


def test_each_kind_once(manifests):
    kinds = [d["kind"] for _, d in manifests]
    assert sorted(kinds) == sorted(set(kinds))
    assert {"RayJob", "RayService", "Deployment", "Service", "ConfigMap"} <= set(kinds)


def test_core_objects_validate(validate, manifests):
    core = {d["kind"] for _, d in manifests if not d["apiVersion"].startswith("ray.io/")}
    assert core == {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Deployment", "Service"}
    assert validate.core_errors(manifests) == []


def _mlflow(d):
    return d["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        # wrong types
        ("Deployment", lambda d: d["spec"].update(replicas="1"), "spec.replicas: '1' is not of"),
        (
            "Deployment",
            lambda d: _mlflow(d)["ports"][0].update(containerPort="5000"),
            "spec.template.spec.containers.0.ports.0.containerPort: '5000' is not of type",
        ),
        (
            "Service",
            lambda d: d["spec"]["ports"][0].update(port="5000"),
            "spec.ports.0.port: '5000' is not of type 'integer'",
        ),
        (
            "PersistentVolumeClaim",
            lambda d: d["spec"].update(accessModes="ReadWriteOnce"),
            "spec.accessModes: 'ReadWriteOnce' is not of type 'array'",
        ),
        ("ConfigMap", lambda d: d["data"].update(RAY_TRAIN_V2_ENABLED=1), "1 is not of type"),
        # unknown keys (strict)
        (
            "Deployment",
            lambda d: _mlflow(d).update(arg=_mlflow(d).pop("args")),
            "containers.0: Additional properties are not allowed ('arg' was unexpected)",
        ),
        (
            "Namespace",
            lambda d: d["metadata"].update(label=d["metadata"].pop("labels")),
            "metadata: Additional properties are not allowed ('label' was unexpected)",
        ),
        # a Secret reference without the key to read
        (
            "Deployment",
            lambda d: _mlflow(d)["env"].append(
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "abs-ray-s3"}}}
            ),
            "'key' is a required property",
        ),
        # pod-level resources came after Kubernetes 1.29, the oldest the guide supports
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"].update(resources={"limits": {"cpu": "1"}}),
            "Kubernetes 1.29: spec.template.spec: Additional properties are not allowed",
        ),
        # a kind it has no schema for is not a pass
        ("Service", lambda d: d.update(apiVersion="v2"), "Couldn't find schema for kind Service"),
    ],
)
def test_core_check_rejects(validate, docs, by_kind, kind, edit, message):
    edit(by_kind[kind])
    errors = validate.core_errors(docs)
    assert errors and all(kind in e for e in errors), errors
    assert any(message in e for e in errors), errors


def test_core_check_needs_no_network(validate, manifests, monkeypatch):
    """kubernetes-validate reads the schemas its wheel carries; it never downloads one."""

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    assert validate.core_errors(manifests) == []
    assert validate.core_errors(manifests, ("1.25",)) == []  # an older set, read for the first time


def test_house_rules_hold(rules, manifests, repo_root):
    assert rules.errors(manifests, repo_root / "pyproject.toml") == []


def _head_container(d):
    return _cluster(d)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _gpu_group(d):
    return next(g for g in _cluster(d)["workerGroupSpecs"] if g["groupName"] == "gpu")


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        (
            "RayJob",
            lambda d: _gpu_group(d)["rayStartParams"].update(
                {"object-store-memory": str(16 << 30)}
            ),
            "group gpu: object-store-memory 17179869184 exceeds /dev/shm 10737418240",
        ),
        (
            "RayService",
            lambda d: _gpu_group(d)["template"]["spec"]["volumes"].clear(),
            "group gpu: no /dev/shm",
        ),
        (
            "RayService",
            lambda d: _gpu_group(d)["template"]["spec"]["volumes"][0]["emptyDir"].pop("medium"),
            "group gpu: no /dev/shm from a memory emptyDir",
        ),
        (
            "RayJob",
            lambda d: _cluster(d)["headGroupSpec"]["rayStartParams"].pop("object-store-memory"),
            "head: rayStartParams has no object-store-memory",
        ),
        (
            "RayJob",
            lambda d: _head_container(d)["resources"]["limits"].update(memory="2Gi"),
            "head: /dev/shm 2Gi leaves no memory of 2Gi",
        ),
        # any Kubernetes quantity form (here 10 GB in exponent notation < 10 GiB of /dev/shm)
        (
            "RayJob",
            lambda d: _gpu_group(d)["template"]["spec"]["containers"][0]["resources"][
                "limits"
            ].update(memory="10e9"),
            "group gpu: /dev/shm 10Gi leaves no memory of 10e9",
        ),
    ],
)
def test_shared_memory_rule_rejects(rules, docs, by_kind, kind, edit, message):
    edit(by_kind[kind])
    errors = rules.memory_errors(docs)
    assert any(message in e and kind in e for e in errors), errors


def _add_env(container: dict, var: dict) -> None:
    container.setdefault("env", []).append(var)


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        (
            "RayJob",
            lambda d: _add_env(
                _head_container(d), {"name": "AWS_SECRET_ACCESS_KEY", "value": "abc"}
            ),
            "AWS_SECRET_ACCESS_KEY has a literal value",
        ),
        (
            "RayService",
            lambda d: _cluster(d)["authOptions"].update(secretName="ray-token"),
            "references Secret 'ray-token'",
        ),
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"][
                "configMapKeyRef"
            ].update(key="ARTIFACTS"),
            "no key 'ARTIFACTS' in abs-ray-config",
        ),
        (
            "RayJob",
            lambda d: _head_container(d)["envFrom"][0]["configMapRef"].update(name="abs-ray"),
            "no ConfigMap 'abs-ray'",
        ),
        (
            "ConfigMap",
            lambda d: d.update(kind="Secret"),
            "a Secret in a manifest",
        ),
    ],
)
def test_reference_rule_rejects(rules, docs, by_kind, kind, edit, message):
    edit(by_kind[kind])
    errors = rules.reference_errors(docs)
    assert any(message in e for e in errors), errors


def test_secrets_are_created_by_the_docs(rules, manifests, repo_root):
    """Every Secret referenced is one the guide tells the user to create, with its keys."""
    used = set().union(*(rules.secret_references(d) for _, d in manifests))
    assert used == set(rules.SECRETS)
    guide = (repo_root / "docs" / "deploy.md").read_text()
    for name in rules.SECRETS:
        assert re.search(rf"create secret generic {name}\b", guide), name
    s3 = guide[guide.index("create secret generic abs-ray-s3") :].split("```")[0]
    # the variables abs_ray.io reads (abs_ray/io/storage.py)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        assert f"{var}=" in s3, var
    assert "auth_token=" in guide[guide.index("create secret generic abs-ray-ray-token") :]


def test_one_ray_version_everywhere(dockerlint, rules, manifests, repo_root):
    """pyproject.toml's pin, the Dockerfile's base image, rayVersion and the image tags agree."""
    version, ray = rules.pinned_versions(repo_root / "pyproject.toml")
    assert ray == dockerlint.exact_pins(repo_root / "pyproject.toml")["ray"]
    assert dockerlint.base_image(repo_root / "docker" / "Dockerfile").startswith(
        f"rayproject/ray:{ray}-"
    )
    ray_docs = [d for _, d in manifests if d["kind"] in ("RayJob", "RayService")]
    assert [_cluster(d)["rayVersion"] for d in ray_docs] == [ray] * 2
    images = {c["image"] for _, d in manifests for c in _containers(rules, d)}
    assert images == {f"abs-ray:{version}-ray{ray}-gpu", f"abs-ray:{version}-ray{ray}-cpu"}
    assert rules.version_errors(manifests, repo_root / "pyproject.toml") == []


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        (
            "RayService",
            lambda d: _cluster(d).update(rayVersion="2.59.0"),
            "rayVersion '2.59.0', pyproject pins 2.60.0",
        ),
        (
            "RayJob",
            lambda d: _head_container(d).update(image="abs-ray:0.1.0-ray2.59.0-cpu"),
            "image abs-ray:0.1.0-ray2.59.0-cpu, expected abs-ray:0.1.0-ray2.60.0-<gpu|cpu>",
        ),
        (
            "RayJob",
            lambda d: d["spec"]["submitterPodTemplate"]["spec"]["containers"][0].update(
                image="abs-ray:latest"
            ),
            "submitterPodTemplate.spec: image abs-ray:latest, expected",
        ),
        (
            "Deployment",
            lambda d: _mlflow(d).update(image="abs-ray:0.2.0-ray2.60.0-cpu"),
            "image abs-ray:0.2.0-ray2.60.0-cpu, expected",
        ),
    ],
)
def test_version_rule_rejects(rules, docs, by_kind, repo_root, kind, edit, message):
    edit(by_kind[kind])
    errors = rules.version_errors(docs, repo_root / "pyproject.toml")
    assert any(message in e and kind in e for e in errors), errors


def test_gpu_image_exactly_where_gpus_are(rules, manifests):
    for _, doc in manifests:
        for c in _containers(rules, doc):
            gpu = "nvidia.com/gpu" in (c.get("resources") or {}).get("limits", {})
            assert c["image"].endswith("-gpu") == gpu, (doc["kind"], c["name"], c["image"])


def test_kustomization_lists_every_manifest_and_sets_the_image(rules, repo_root, manifests):
    k8s = repo_root / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    files = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == "abs-ray"
    (image,) = kustomization["images"]
    names = {c["image"].split(":")[0] for _, d in manifests for c in _containers(rules, d)}
    assert names == {image["name"]}


def test_rayjob_runs_the_pipeline(by_kind, pipeline_cli, repo_root):
    job = by_kind["RayJob"]["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "jobs/pipeline.py"]
    assert "abs_ray.cli.pipeline import main" in (repo_root / argv[1]).read_text()
    # The job's own parser and config accept every flag and value.
    args = pipeline_cli.get_args_parser().parse_args(argv[2:])
    cfg = pipeline_cli.config_from_args(args)
    assert cfg.data.startswith("s3://") and cfg.out.startswith("s3://")
    assert (cfg.resume, cfg.detector.num_labelled, cfg.inpaint.max_size) == (True, 200, 16)
    assert job["submissionMode"] == "K8sJobMode"
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0


@pytest.mark.parametrize("kind", ["RayJob", "RayService"])
def test_cpu_head_and_autoscaling_gpu_group(by_kind, kind):
    cluster = _cluster(by_kind[kind])
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"]["limits"]
    assert cluster["enableInTreeAutoscaling"] is True
    gpu = _gpu_group(by_kind[kind])
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert gpu["minReplicas"] == 0 < gpu["maxReplicas"]
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": "abs-ray-ray-token"}


def test_containers_run_where_the_image_installs_the_project(by_kind, repo_root):
    """workingDir is the image's WORKDIR, which is on PYTHONPATH (`deployments.augment`)."""
    image = DockerfileParser(str(repo_root / "docker" / "Dockerfile"))
    (workdir,) = [i["value"] for i in image.structure if i["instruction"] == "WORKDIR"]
    assert image.envs["PYTHONPATH"] == workdir
    for kind in ("RayJob", "RayService"):
        for container in _ray_containers(by_kind[kind]):
            assert container["workingDir"] == workdir, (kind, container["name"])


def test_ray_pods_get_the_project_environment_and_s3(by_kind):
    """abs_ray.env.DEFAULTS reach every Ray pod (not RAY_AUTH_MODE: KubeRay sets it), S3 too."""
    data = by_kind["ConfigMap"]["data"]
    expected = {k: v for k, v in DEFAULTS.items() if k != "RAY_AUTH_MODE"}
    assert {k: data.get(k) for k in expected} == expected
    assert "RAY_AUTH_MODE" not in data
    service = by_kind["Service"]
    port = service["spec"]["ports"][0]["port"]
    assert data["MLFLOW_TRACKING_URI"] == f"http://{service['metadata']['name']}:{port}"
    for kind in ("RayJob", "RayService"):
        for container in _ray_containers(by_kind[kind]):
            sources = [
                (e.get("configMapRef") or e.get("secretRef"))["name"] for e in container["envFrom"]
            ]
            assert sources == [by_kind["ConfigMap"]["metadata"]["name"], "abs-ray-s3"]


def test_cli_says_when_the_schema_check_did_not_run(validate, monkeypatch, capsys):
    monkeypatch.delenv(validate.CRDS_ENV, raising=False)
    assert validate.main([]) == 0
    out = capsys.readouterr().out
    assert "KubeRay CRD schemas not given" in out and "NOT checked" in out


def test_docs_name_only_files_that_exist(repo_root):
    guide = (repo_root / "docs" / "deploy.md").read_text()
    paths = set(
        re.findall(
            r"\b((?:k8s|docker|deployments|jobs)/[\w./-]+\.(?:yaml|py|md|Dockerfile))", guide
        )
    )
    paths |= set(re.findall(r"\b(docker/Dockerfile)\b", guide))
    assert paths
    assert sorted(p for p in paths if not (repo_root / p).exists()) == []


def test_project_version_is_read_where_setuptools_reads_it(rules, repo_root, tmp_path):
    """The version lives in ``abs_ray/__init__.py`` (pyproject's ``dynamic`` attr): the image
    tag rule must read it there (a ``project["version"]`` lookup raised KeyError)."""
    import abs_ray

    assert rules.project_version(repo_root / "pyproject.toml") == abs_ray.__version__
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "9.8.7"\n')
    assert rules.project_version(tmp_path / "pyproject.toml") == "9.8.7"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\ndynamic = ["version"]\n')
    with pytest.raises(ValueError, match="no project.version"):
        rules.project_version(tmp_path / "pyproject.toml")
