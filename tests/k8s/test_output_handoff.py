"""One kustomize value ties the RayService's served output to the RayJob's ``--out``.

``k8s/kustomization.yaml``'s ``output`` (a local ConfigMap) is copied by ``replacements`` into
the RayJob's entrypoint and into SwapModel's ``user_config.output`` inside the RayService's
``serveConfigV2``. Rendered here with ``kubectl kustomize`` (kustomize built in) on a copy of
``k8s/`` whose value was changed, as an operator would change it.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from abs_ray.serve.config import check_serve_config

NEW = "s3://elsewhere/runs/2026-12-02"


@pytest.fixture(scope="module")
def rendered(repo_root, tmp_path_factory) -> dict[str, dict]:
    """``kubectl kustomize`` of a copy of k8s/ with ``output`` set to :data:`NEW`, by kind."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("this test needs kubectl (its built-in kustomize) on PATH")
    folder = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(repo_root / "k8s", folder)
    kustomization = folder / "kustomization.yaml"
    text, count = re.subn(r"(?m)^(\s*- output=).*$", rf"\g<1>{NEW}", kustomization.read_text())
    assert count == 1, "kustomization.yaml must hold exactly one `- output=` literal"
    kustomization.write_text(text)
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=True
    ).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    return {d["kind"]: d for d in docs} | {"_names": [d["metadata"]["name"] for d in docs]}


def test_the_rayjob_writes_where_the_rayservice_reads(rendered, pipeline_cli):
    argv = shlex.split(rendered["RayJob"]["spec"]["entrypoint"])
    cfg = pipeline_cli.config_from_args(pipeline_cli.get_args_parser().parse_args(argv[2:]))
    assert cfg.out == NEW
    serve_config = yaml.safe_load(rendered["RayService"]["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    model = next(d for d in app["deployments"] if d["name"] == "SwapModel")
    assert model["user_config"] == {"output": NEW}
    check_serve_config(serve_config, (app["import_path"],))


def test_the_value_carrier_is_not_applied(rendered):
    assert "abs-ray-output" not in rendered["_names"]


def test_the_shipped_manifests_agree_before_kustomize(by_kind):
    argv = shlex.split(by_kind["RayJob"]["spec"]["entrypoint"])
    out = argv[argv.index("--out") + 1]
    serve_config = yaml.safe_load(by_kind["RayService"]["spec"]["serveConfigV2"])
    model = serve_config["applications"][0]["deployments"][1]
    assert model["name"] == "SwapModel" and model["user_config"]["output"] == out
