"""k8s/ ray.io objects against the real KubeRay CRD schemas, closed: unknown keys and wrong types fail.

Needs ``ABS_RAY_KUBERAY_CRDS`` (see conftest.py). The core objects are kubernetes-validate's
(test_manifests.py).
"""

from __future__ import annotations

import json

import pytest
import yaml


def _worker(doc: dict, i: int = 0) -> dict:
    spec = doc["spec"]
    return (spec.get("rayClusterSpec") or spec["rayClusterConfig"])["workerGroupSpecs"][i]


def _head(doc: dict) -> dict:
    spec = doc["spec"]
    return (spec.get("rayClusterSpec") or spec["rayClusterConfig"])["headGroupSpec"]


def test_every_manifest_validates(validate, manifests, crd_schemas):
    kinds = [d["kind"] for _, d in manifests if d["apiVersion"].startswith("ray.io/")]
    assert sorted(kinds) == ["RayJob", "RayService"]
    assert validate.crd_errors(manifests, crd_schemas) == []


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


@pytest.mark.parametrize(
    ("kind", "edit", "message"),
    [
        # typos: keys the closed schema does not know
        (
            "RayJob",
            lambda d: _rename(_worker(d), "maxReplicas", "maxReplica"),
            "workerGroupSpecs.0: Additional properties are not allowed ('maxReplica'",
        ),
        (
            "RayJob",
            lambda d: _rename(d["spec"], "shutdownAfterJobFinishes", "shutdownAfterJobFinish"),
            "spec: Additional properties are not allowed ('shutdownAfterJobFinish'",
        ),
        (
            "RayService",
            lambda d: _rename(
                _head(d)["template"]["spec"]["containers"][0], "resources", "resource"
            ),
            "containers.0: Additional properties are not allowed ('resource'",
        ),
        (
            "RayService",
            lambda d: d["spec"]["rayClusterConfig"].update(enableInTreeAutoscaler=True),
            "'enableInTreeAutoscaler' was unexpected",
        ),
        # wrong types and values
        (
            "RayService",
            lambda d: _worker(d).update(minReplicas="0"),
            "'0' is not of type 'integer'",
        ),
        (
            "RayJob",
            lambda d: _head(d)["rayStartParams"].update({"num-cpus": 0}),
            "rayStartParams.num-cpus: 0 is not of type 'string'",
        ),
        ("RayJob", lambda d: d["spec"].update(ttlSecondsAfterFinished="10m"), "is not of type"),
        (
            "RayService",
            lambda d: d["spec"]["rayClusterConfig"]["authOptions"].update(mode="tokens"),
            "'tokens' is not one of ['disabled', 'token']",
        ),
        (
            "RayJob",
            lambda d: d["spec"]["rayClusterSpec"]["autoscalerOptions"].update(version="v3"),
            "'v3' is not one of ['v1', 'v2']",
        ),
        # a required field
        ("RayJob", lambda d: _worker(d, 1).pop("groupName"), "'groupName' is a required property"),
    ],
)
def test_schema_check_rejects(validate, docs, by_kind, crd_schemas, kind, edit, message):
    edit(by_kind[kind])
    errors = validate.crd_errors(docs, crd_schemas)
    assert len(errors) >= 1 and all(kind in e for e in errors), errors
    assert any(message in e for e in errors), errors


def test_free_form_maps_stay_open(validate, docs, by_kind, crd_schemas):
    """Closing objects must not close maps: any rayStartParams key, label or annotation."""
    job = by_kind["RayJob"]
    _head(job)["rayStartParams"]["metrics-export-port"] = "8080"
    job["metadata"]["annotations"] = {"example.com/owner": "ml-team"}
    _worker(job)["template"]["metadata"]["labels"]["team"] = "ml"
    assert validate.crd_errors(docs, crd_schemas) == []


def test_missing_crds_are_an_error_not_a_pass(validate, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        validate.load_crd_schemas(tmp_path / "nowhere")
    assert validate.main(["--crds", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "other.yaml").write_text("kind: ConfigMap\n")
    with pytest.raises(
        FileNotFoundError, match="no ray.io/v1 CRD for RayCluster, RayJob, RayService"
    ):
        validate.load_crd_schemas(tmp_path)


def test_crds_from_kubectl_get_as_one_list(validate, crd_schemas, tmp_path):
    """`kubectl get crd rayclusters.ray.io rayjobs.ray.io rayservices.ray.io -o yaml` works too."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    folder = validate.crds_folder()
    items = [d for p in sorted(folder.glob("*.yaml")) for d in yaml.load_all(p.read_text(), loader)]
    crd_list = {"apiVersion": "v1", "kind": "List", "items": [d for d in items if d]}
    (tmp_path / "crds.yaml").write_text(json.dumps(crd_list))  # JSON is YAML, and fast
    assert validate.load_crd_schemas(tmp_path) == crd_schemas


def test_cli_runs_all_checks(validate, crd_schemas, capsys):
    folder = validate.crds_folder()
    assert validate.main(["--crds", str(folder)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
