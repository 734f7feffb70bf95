"""Fixtures of the deployment checks: the k8s/ and docker/ tools, the manifests, the CRDs.

hadolint and kubernetes-validate come with the dev dependencies and always run. The KubeRay
CRD schemas are not in this repository: ``ABS_RAY_KUBERAY_CRDS`` names a folder holding them
(``make test`` points it at ``../shared/kuberay-crds`` when that exists). Without it the
schema tests are skipped with the reason; with a wrong folder they fail.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path):
    """Import a script of the repository (k8s/, docker/ are not packages) as a module.

    As when it runs (``python k8s/validate.py``), its folder is on ``sys.path``, so that it
    imports its neighbours (``house_rules``); appended, so that it shadows nothing installed.
    """
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    name = f"abs_ray_deploy_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def validate():
    """``k8s/validate.py``."""
    return _load(ROOT / "k8s" / "validate.py")


@pytest.fixture(scope="session")
def rules(validate):
    """``k8s/house_rules.py``, as ``k8s/validate.py`` imports it."""
    return validate.house_rules


@pytest.fixture(scope="session")
def render():
    """``k8s/render.py``."""
    return _load(ROOT / "k8s" / "render.py")


@pytest.fixture(scope="session")
def dockerlint():
    """``docker/lint.py``."""
    return _load(ROOT / "docker" / "lint.py")


@pytest.fixture(scope="session")
def pipeline_cli():
    """``abs-ray pipeline``, which ``jobs/pipeline.py`` runs (its parser, ``config_from_args``)."""
    import abs_ray.cli.pipeline

    return abs_ray.cli.pipeline


@pytest.fixture(scope="session")
def manifests(validate) -> list:
    """``(path, object)`` for every object in k8s/*.yaml; do not modify (see ``docs``)."""
    return validate.load_manifests()


@pytest.fixture
def docs(manifests) -> list:
    """A copy of ``manifests`` that a test may edit."""
    return copy.deepcopy(manifests)


@pytest.fixture
def by_kind(docs) -> dict:
    """The objects of ``docs`` by kind (each kind occurs once in k8s/); edits show in ``docs``."""
    return {d["kind"]: d for _, d in docs}


@pytest.fixture(scope="session")
def crd_schemas(validate):
    """Closed KubeRay CRD schemas by kind; skipped, with the reason, when not configured."""
    folder = validate.crds_folder()
    if folder is None:
        pytest.skip(
            f"KubeRay CRD schema check could not run: {validate.CRDS_ENV} is not set. Set it to "
            "a folder with the operator's ray.io CRDs (ray.io_rayjobs.yaml, "
            "ray.io_rayservices.yaml, ray.io_rayclusters.yaml); `make test` sets it to "
            "../shared/kuberay-crds when present. The ray.io manifests were NOT validated."
        )
    return validate.load_crd_schemas(folder)  # a folder without the CRDs fails here
