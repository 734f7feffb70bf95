"""docker/Dockerfile and .dockerignore, checked without a container builder (docker/lint.py)."""

from __future__ import annotations

import doctest
import tomllib

import pytest


@pytest.fixture(scope="module")
def dockerfile_text(repo_root) -> str:
    return (repo_root / "docker" / "Dockerfile").read_text()


def test_dockerfile_lints_clean(dockerlint):
    assert dockerlint.lint() == []


def test_both_variants_build_on_the_pinned_ray(dockerlint, dockerfile_text, repo_root):
    pins = dockerlint.pins(repo_root / "pyproject.toml")
    instructions = dockerlint.parse(dockerfile_text)
    for variant in ("gpu", "cpu"):
        image = dockerlint.base_image(instructions, {"VARIANT": variant})
        assert image == f"rayproject/ray:{pins['ray']}-py311-{variant}"


def test_image_holds_what_the_install_and_the_cluster_need(dockerlint, dockerfile_text, repo_root):
    """The package, its metadata (pyproject + readme), the job and the Serve app are copied."""
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    copied = set()
    for i in dockerlint.parse(dockerfile_text):
        if i.cmd == "COPY":
            copied |= set(dockerlint._copy_parts(i.args)[1][:-1])
    assert {"pyproject.toml", project["readme"], "abs_ray", "jobs", "deployments"} <= copied


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("ARG RAY_VERSION=2.60.0", "ARG RAY_VERSION=2.59.0", "base image for VARIANT=gpu is"),
        ("ARG RAY_VERSION=2.60.0", "ARG RAY_VERSION=2.59.0", "but pyproject.toml pins ray==2.60.0"),
        ("ARG VARIANT=gpu\n", "", "the default build (no --build-arg) is on"),
        (
            "-${VARIANT}\n",
            "-gpu\n",
            "base image for VARIANT=cpu is rayproject/ray:2.60.0-py311-gpu",
        ),
        (
            "COPY --chown=ray:users jobs ./jobs",
            "COPY --chown=ray:users job ./jobs",
            "job does not exist",
        ),
        # bench/ exists in the repository but is left out of the build context
        (
            "COPY --chown=ray:users jobs ./jobs",
            "COPY --chown=ray:users bench ./bench",
            "left out by .dockerignore",
        ),
        (
            "COPY --chown=ray:users jobs ./jobs",
            "COPY --chown=root jobs ./jobs",
            "gives the files to root",
        ),
        ("COPY --chown=ray:users jobs ./jobs", "ADD jobs ./jobs", "use COPY"),
        ("USER ray", "USER root", "runs as root"),
        ("USER ray", "USER 0:0", "runs as 0"),
        ("USER ray\n", "", "no USER"),
        ("WORKDIR /home/ray/abs-ray", "WORKDIR abs-ray", "not an absolute path"),
        ("pip install --no-cache-dir -r", "pip install -r", "without --no-cache-dir"),
        ("ARG GIT_COMMIT=unknown", "ENV AWS_SECRET_ACCESS_KEY=x", "does not belong in an image"),
    ],
)
def test_lint_rejects(dockerlint, dockerfile_text, repo_root, tmp_path, old, new, message):
    assert old in dockerfile_text
    broken = tmp_path / "Dockerfile"
    broken.write_text(dockerfile_text.replace(old, new, 1))
    errors = dockerlint.lint(broken, context=repo_root)
    assert any(message in e for e in errors), errors


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
        ("abs_ray/__pycache__/env.cpython-311.pyc", True),
        ("deployments/.env", True),
        ("abs_ray/serve/x.db", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("abs_ray/env.py", False),
        ("abs_ray/io/storage.py", False),
        ("jobs/pipeline.py", False),
        ("deployments/serve_config.yaml", False),
    ],
)
def test_dockerignore(dockerlint, repo_root, path, ignored):
    patterns = dockerlint.ignore_patterns((repo_root / ".dockerignore").read_text())
    assert dockerlint.is_ignored(path, patterns) is ignored


def test_ignore_pattern_semantics(dockerlint):
    """Docker's rules: last match wins, a folder match covers its files, ** crosses folders."""
    p = dockerlint.ignore_patterns("data\n!data/keep.csv\n**/*.tmp\n/build/\n")
    assert dockerlint.is_ignored("data/x.csv", p)
    assert not dockerlint.is_ignored("data/keep.csv", p)
    assert dockerlint.is_ignored("a/b/c.tmp", p) and dockerlint.is_ignored("c.tmp", p)
    assert dockerlint.is_ignored("build/out/x", p)
    assert not dockerlint.is_ignored("src/data.py", p)


def test_tool_doctests(dockerlint, validate, render):
    for module in (dockerlint, validate, render):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
