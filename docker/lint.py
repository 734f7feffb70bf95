"""Check ``docker/Dockerfile`` without a container builder.

What a build would find out late, or not at all:

- the base image is ``rayproject/ray:<ray>-py<XY>-<variant>`` with ``<ray>`` the pin in
  ``pyproject.toml`` and ``py<XY>`` its ``requires-python``, for both variants (gpu, cpu);
- ``ray``, ``torch`` and ``torchvision`` are pinned exactly (``==``) in ``pyproject.toml``,
  from which the image installs its dependencies;
- every ``COPY`` source exists in the build context (the repository root) and is not left
  out by ``.dockerignore`` (a build fails on either); no ``ADD``;
- the image runs as a non-root user; ``WORKDIR`` is absolute; pip keeps no cache;
  no credentials in ``ENV``/``ARG``.

::

    python docker/lint.py        # exit 1 on any error
"""

from __future__ import annotations

import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BASE_REPO = "rayproject/ray"
VARIANTS = ("gpu", "cpu")
ROOT_USERS = frozenset({"root", "0"})
SENSITIVE = frozenset(
    {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "RAY_AUTH_TOKEN"}
)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its first line number, keyword (upper case), arguments."""

    line: int
    cmd: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile, with line continuations joined and comments dropped.

    >>> [(i.cmd, i.args) for i in parse("FROM a\\n# c\\nRUN x \\\\\\n  # c\\n  && y\\n")]
    [('FROM', 'a'), ('RUN', 'x  && y')]
    """
    out: list[Instruction] = []
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        cmd, _, args = buf.partition(" ")
        out.append(Instruction(start, cmd.upper(), args.strip()))
        buf = ""
    return out


def substitute(text: str, values: dict[str, str]) -> str:
    """``$VAR``, ``${VAR}`` and ``${VAR:-default}`` replaced from ``values``.

    >>> substitute("a:${V}-${W:-x}-$V", {"V": "1"})
    'a:1-x-1'
    """

    def one(m: re.Match) -> str:
        name = m["braced"] or m["plain"]
        return values.get(name) or (m["default"] or "")

    pattern = r"\$\{(?P<braced>\w+)(?::-(?P<default>[^}]*))?\}|\$(?P<plain>\w+)"
    return re.sub(pattern, one, text)


def _arg(args: str) -> tuple[str, str | None]:
    name, eq, default = args.partition("=")
    return name.strip(), default.strip().strip("\"'") if eq else None


def build_args(instructions: list[Instruction]) -> dict[str, str | None]:
    """Every ``ARG`` and its default (None when it has none).

    A stage's bare ``ARG NAME`` keeps the default given before ``FROM``, as in Docker.
    """
    out: dict[str, str | None] = {}
    for i in instructions:
        if i.cmd == "ARG":
            name, default = _arg(i.args)
            if default is not None or name not in out:
                out[name] = default
    return out


def base_image(instructions: list[Instruction], overrides: dict[str, str] | None = None) -> str:
    """The ``FROM`` image with the ARGs before it resolved (defaults, then ``overrides``)."""
    values: dict[str, str] = {}
    for i in instructions:
        if i.cmd == "ARG":
            name, default = _arg(i.args)
            values[name] = default or ""
        elif i.cmd == "FROM":
            values.update(overrides or {})
            return substitute(i.args.split()[0], values)
    raise ValueError("no FROM instruction")


def stage_env(instructions: list[Instruction]) -> dict[str, str]:
    """``ENV`` values of the image (``KEY=VALUE`` forms; several per instruction)."""
    env: dict[str, str] = {}
    for i in instructions:
        if i.cmd == "ENV":
            for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", i.args):
                env[key] = value.strip('"')
    return env


def workdir(instructions: list[Instruction]) -> str | None:
    """The final ``WORKDIR``."""
    dirs = [i.args for i in instructions if i.cmd == "WORKDIR"]
    return dirs[-1] if dirs else None


def pins(pyproject: Path) -> dict[str, str]:
    """``ray``, ``torch``, ``torchvision`` (exact ``==`` pins) and ``python_tag`` (``py311``).

    Raises:
        ValueError: one of them is not pinned with ``==``.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    out = {}
    for dep in project["dependencies"]:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*==\s*([^\s;,]+)", dep)
        if m:
            out[m[1].lower()] = m[3]
    missing = [k for k in ("ray", "torch", "torchvision") if k not in out]
    if missing:
        raise ValueError(f"pyproject.toml pins no exact version of {', '.join(missing)}")
    m = re.search(r">=\s*3\.(\d+)", project["requires-python"])
    out["python_tag"] = f"py3{m[1]}" if m else ""
    return out


# --- .dockerignore ---------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go ``filepath.Match`` plus ``**``) as an anchored regex."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif c == "*":
            out, i = out + "[^/]*", i + 1
        elif c == "?":
            out, i = out + "[^/]", i + 1
        elif c == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1 : end].replace("^", "\\^", 1) + "]", end + 1
        else:
            out, i = out + re.escape(c), i + 1
    return re.compile(out + r"\Z")


def ignore_patterns(text: str) -> list[tuple[bool, re.Pattern]]:
    """``(negated, regex)`` for each line of a .dockerignore, in order."""
    patterns = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        line = line.lstrip("!").strip().lstrip("/").rstrip("/")
        patterns.append((negated, _pattern_regex(line)))
    return patterns


def is_ignored(path: str, patterns: list[tuple[bool, re.Pattern]]) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out of the build context.

    As Docker does: a pattern matches a path or any folder above it, and the last matching
    pattern decides (``!`` puts back).

    >>> p = ignore_patterns("*\\n!abs_ray\\n**/__pycache__\\n")
    >>> [is_ignored(x, p) for x in ("data/a.png", "abs_ray/env.py", "abs_ray/x/__pycache__/y")]
    [True, False, True]
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    ignored = False
    for negated, regex in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not negated
    return ignored


# --- the checks ----------------------------------------------------------------------------


def _copy_parts(args: str) -> tuple[dict[str, str], list[str]]:
    """Flags (``--chown=...``) and paths (sources then destination) of a COPY/ADD."""
    flags, paths = {}, []
    for tok in args.split():
        if tok.startswith("--"):
            key, _, value = tok[2:].partition("=")
            flags[key] = value
        else:
            paths.append(tok)
    return flags, paths


def lint(
    dockerfile: Path = DOCKERFILE, context: Path = ROOT, pyproject: Path | None = None
) -> list[str]:
    """Every problem found in ``dockerfile`` (built from ``context``), one line each."""
    pyproject = pyproject or context / "pyproject.toml"
    want = pins(pyproject)
    instructions = parse(dockerfile.read_text())
    ignore_file = context / ".dockerignore"
    ignored = ignore_patterns(ignore_file.read_text()) if ignore_file.exists() else []
    args = build_args(instructions)
    errors = []

    if [i.cmd for i in instructions].count("FROM") != 1:
        errors.append("expected one FROM (a single-stage build)")
    if "VARIANT" not in args:
        errors.append("no VARIANT build arg: the CPU variant cannot be built")
    default = base_image(instructions)
    if not default.endswith("-gpu"):
        errors.append(f"the default build (no --build-arg) is on {default}, not the GPU image")
    for variant in VARIANTS:
        image = base_image(instructions, {"VARIANT": variant})
        expected = f"{BASE_REPO}:{want['ray']}-{want['python_tag']}-{variant}"
        if image != expected:
            errors.append(f"base image for VARIANT={variant} is {image}, expected {expected}")
    if args.get("RAY_VERSION") != want["ray"]:
        errors.append(
            f"ARG RAY_VERSION={args.get('RAY_VERSION')} but pyproject.toml pins ray=={want['ray']}"
        )

    users = []
    for i in instructions:
        where = f"{dockerfile.name}:{i.line} {i.cmd}"
        if i.cmd == "ADD":
            errors.append(f"{where}: use COPY (ADD fetches URLs and unpacks archives)")
        if i.cmd in ("COPY", "ADD"):
            flags, paths = _copy_parts(i.args)
            if "from" in flags:
                continue
            owner = flags.get("chown", "").split(":")[0]
            if owner in ROOT_USERS:
                errors.append(f"{where}: --chown={flags['chown']} gives the files to root")
            for src in paths[:-1]:
                if not list(context.glob(src)):
                    errors.append(f"{where}: {src} does not exist in the build context")
                elif is_ignored(src, ignored):
                    errors.append(f"{where}: {src} is left out by .dockerignore")
        elif i.cmd == "USER":
            users.append(i.args.split(":")[0])
        elif i.cmd == "WORKDIR" and not i.args.startswith("/"):
            errors.append(f"{where}: {i.args} is not an absolute path")
        elif i.cmd == "RUN":
            commands = re.split(r"&&|\|\||;", i.args)
            if any("pip install" in c and "--no-cache-dir" not in c for c in commands):
                errors.append(f"{where}: pip install without --no-cache-dir")
        elif i.cmd in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", i.args) or [i.args.split()[0]]
            errors += [f"{where}: {n} does not belong in an image" for n in names if n in SENSITIVE]
    if not users:
        errors.append("no USER: the image would run as the base image's user, unchecked")
    elif users[-1] in ROOT_USERS:
        errors.append(f"the image runs as {users[-1]} (USER): use the base image's ray user")
    return errors


def main() -> int:
    errors = lint()
    for line in errors:
        print(line)
    print(f"{DOCKERFILE.relative_to(ROOT)}: {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
