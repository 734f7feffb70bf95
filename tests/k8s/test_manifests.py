"""k8s/ manifests without a cluster: policy, references, versions, and what the issue asks of them.

Runs everywhere (no CRDs needed): resources and non-root security contexts on every pod,
Secrets only by reference, one Ray version across pyproject.toml / Dockerfile / manifests,
the RayJob's entrypoint accepted by jobs/pipeline.py's own parser.
"""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

import abs_ray
from abs_ray.env import DEFAULTS


def _cluster(doc: dict) -> dict:
    return doc["spec"].get("rayClusterSpec") or doc["spec"]["rayClusterConfig"]


def _ray_containers(doc: dict) -> list[dict]:
    cluster = _cluster(doc)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [g["template"]["spec"]["containers"][0] for g in groups]


def _containers(validate, doc: dict) -> list[dict]:
    """Every container of every pod template in ``doc``."""
    return [c for _, spec in validate.pod_specs(doc) for c in spec["containers"]]


def test_each_kind_once(manifests):
    kinds = [d["kind"] for _, d in manifests]
    assert sorted(kinds) == sorted(set(kinds))
    assert {"RayJob", "RayService", "Deployment", "Service", "ConfigMap"} <= set(kinds)


def test_policy_and_references_hold(validate, manifests):
    assert validate.policy_errors(manifests) == []
    assert validate.reference_errors(manifests) == []


def _head_container(d):
    return _cluster(d)["headGroupSpec"]["template"]["spec"]["containers"][0]


def _gpu_group(d):
    return next(g for g in _cluster(d)["workerGroupSpecs"] if g["groupName"] == "gpu")


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        (
            "RayJob",
            lambda d: _head_container(d)["resources"]["limits"].pop("memory"),
            "no resources.limits.memory",
        ),
        (
            "RayService",
            lambda d: _head_container(d)["resources"]["requests"].update(cpu="8"),
            "resources.requests.cpu 8 exceeds the limit 4",
        ),
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
            "runs as root",
        ),
        (
            "RayJob",
            lambda d: d["spec"]["submitterPodTemplate"]["spec"].pop("securityContext"),
            "runAsNonRoot must be true",
        ),
        (
            "RayService",
            lambda d: _head_container(d)["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation must be false",
        ),
        (
            "Deployment",
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="abs-ray:latest"),
            "is not pinned to a tag",
        ),
        (
            "RayJob",
            lambda d: _gpu_group(d)["rayStartParams"].update(
                {"object-store-memory": str(16 << 30)}
            ),
            "exceeds /dev/shm",
        ),
        (
            "RayService",
            lambda d: _gpu_group(d)["template"]["spec"]["volumes"].clear(),
            "no /dev/shm",
        ),
        (
            "RayJob",
            lambda d: _cluster(d)["autoscalerOptions"].pop("resources"),
            "autoscalerOptions: no resources.requests.cpu",
        ),
    ],
)
def test_policy_check_rejects(validate, docs, by_kind, kind, edit, message):
    edit(by_kind[kind])
    errors = validate.policy_errors(docs)
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
            "Service",
            lambda d: d["spec"]["ports"][0].update(targetPort="web"),
            "targetPort 'web' is no port of Deployment/abs-ray-mlflow",
        ),
        (
            "Service",
            lambda d: d["spec"]["selector"].update({"app.kubernetes.io/component": "x"}),
            "matches no Deployment's pods",
        ),
        (
            "ConfigMap",
            lambda d: d.update(kind="Secret"),
            "a Secret in a manifest",
        ),
    ],
)
def test_reference_check_rejects(validate, docs, by_kind, kind, edit, message):
    edit(by_kind[kind])
    errors = validate.reference_errors(docs)
    assert any(message in e for e in errors), errors


def test_secrets_are_created_by_the_docs(validate, manifests, repo_root):
    """Every Secret referenced is one the guide tells the user to create, with its keys."""
    used = set().union(*(validate.secret_references(d) for _, d in manifests))
    assert used == set(validate.SECRETS)
    guide = (repo_root / "docs" / "deploy.md").read_text()
    for name in validate.SECRETS:
        assert re.search(rf"create secret generic {name}\b", guide), name
    s3 = guide[guide.index("create secret generic abs-ray-s3") :].split("```")[0]
    # the variables abs_ray.io reads (abs_ray/io/storage.py)
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION"):
        assert f"{var}=" in s3, var
    assert "auth_token=" in guide[guide.index("create secret generic abs-ray-ray-token") :]


def test_one_ray_version_everywhere(dockerlint, validate, manifests, repo_root):
    """pyproject.toml's pin, the Dockerfile's base image, rayVersion and the image tags agree."""
    pins = dockerlint.pins(repo_root / "pyproject.toml")
    instructions = dockerlint.parse((repo_root / "docker" / "Dockerfile").read_text())
    assert dockerlint.build_args(instructions)["RAY_VERSION"] == pins["ray"]
    assert dockerlint.base_image(instructions).startswith(f"rayproject/ray:{pins['ray']}-")
    ray_docs = [d for _, d in manifests if d["kind"] in ("RayJob", "RayService")]
    assert [_cluster(d)["rayVersion"] for d in ray_docs] == [pins["ray"]] * 2
    tag = re.compile(
        rf"^abs-ray:{re.escape(abs_ray.__version__)}-ray{re.escape(pins['ray'])}-(gpu|cpu)$"
    )
    images = {c["image"] for _, d in manifests for c in _containers(validate, d)}
    assert images and all(tag.match(i) for i in images), images


def test_gpu_image_exactly_where_gpus_are(validate, manifests):
    for _, doc in manifests:
        for c in _containers(validate, doc):
            gpu = "nvidia.com/gpu" in (c.get("resources") or {}).get("limits", {})
            assert c["image"].endswith("-gpu") == gpu, (doc["kind"], c["name"], c["image"])


def test_kustomization_lists_every_manifest_and_sets_the_image(validate, repo_root, manifests):
    k8s = repo_root / "k8s"
    kustomization = yaml.safe_load((k8s / "kustomization.yaml").read_text())
    files = {p.name for p in k8s.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert kustomization["namespace"] == "abs-ray"
    (image,) = kustomization["images"]
    names = {c["image"].split(":")[0] for _, d in manifests for c in _containers(validate, d)}
    assert names == {image["name"]}


def test_rayjob_runs_the_pipeline(by_kind, pipeline_cli, repo_root):
    job = by_kind["RayJob"]["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "jobs/pipeline.py"]
    assert (repo_root / argv[1]).is_file()
    # The job's own parser and config accept every flag and value.
    args = pipeline_cli.get_args_parser().parse_args(argv[2:])
    cfg = pipeline_cli.config_from_args(args)
    assert cfg.data.startswith("s3://") and cfg.out.startswith("s3://")
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


def test_containers_run_where_the_image_installs_the_project(dockerlint, by_kind, repo_root):
    """workingDir is the image's WORKDIR, which is on PYTHONPATH (`deployments.augment`)."""
    instructions = dockerlint.parse((repo_root / "docker" / "Dockerfile").read_text())
    workdir = dockerlint.workdir(instructions)
    assert dockerlint.stage_env(instructions)["PYTHONPATH"] == workdir
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
