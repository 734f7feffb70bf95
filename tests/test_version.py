"""One version source: abs_ray.__version__; the installed metadata and pyproject follow it."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import abs_ray

REPO = Path(__file__).resolve().parents[1]


def test_installed_metadata_version_is_the_package_version():
    # Fails after a version bump until the package is reinstalled (make does it: the venv's
    # stamp depends on abs_ray/__init__.py).
    assert importlib.metadata.version("abs-ray") == abs_ray.__version__


def test_pyproject_reads_the_version_from_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"], "the version is written in abs_ray/__init__.py"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "abs_ray.__version__"}


def test_license_file_and_metadata_agree():
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    meta = importlib.metadata.metadata("abs-ray")
    assert meta["License-Expression"] == "Apache-2.0"


def test_changelog_has_this_version():
    text = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(abs_ray.__version__)}\] - \d{{4}}-\d\d-\d\d$", text, re.M)
