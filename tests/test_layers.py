"""One-way layers: no module of abs_ray/, jobs/ or deployments/ imports from a higher layer.

Every import counts, including those inside functions (a function-level import is how an
upward dependency hides) and those under ``if TYPE_CHECKING``. A module may import from its
own layer and any lower one. The layers, lowest first, are written down in the README's
Development section.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Lowest first. A module belongs to the layer of the longest name prefix listed here.
LAYERS: tuple[tuple[str, ...], ...] = (
    # foundations: no abs_ray imports beyond this layer
    ("abs_ray", "abs_ray.errors", "abs_ray._checks", "abs_ray.version", "abs_ray.devices",
     "abs_ray.faults"),
    # storage and image bytes; pure tensor functions; logging and progress (every CLI and
    # stage may report to a person)
    ("abs_ray.io", "abs_ray.ops", "abs_ray.console", "abs_ray.web"),
    # data set layouts; nn.Modules and registries; a run's committed outputs (read by the
    # service too); the process and Ray set-up every job shares (logging included)
    ("abs_ray.data", "abs_ray.models", "abs_ray.staging", "abs_ray.env", "abs_ray.cluster"),
    ("abs_ray.stages",),  # Ray Data per-batch callables
    ("abs_ray.train", "abs_ray.serve", "abs_ray.label", "abs_ray.audit"),  # applications
    ("abs_ray.pipeline", "abs_ray.preflight"),  # the main job
    ("abs_ray.cli",),  # options and --config from the config classes
    ("jobs", "deployments"),  # entrypoints
)  # fmt: skip


def layer_of(module: str) -> int | None:
    """The layer index of a dotted module name (None: not ours, e.g. torch)."""
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """``(line, dotted name)`` of every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:  # ``from abs_ray import pipeline`` imports a module
                candidate = f"{base}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                    ROOT / Path(*candidate.split("."))
                ).is_dir()
                found.append((node.lineno, candidate if is_module else base))
    return found


def sources() -> list[Path]:
    files = [*(ROOT / "abs_ray").rglob("*.py"), *(ROOT / "jobs").rglob("*.py")]
    files += (ROOT / "deployments").rglob("*.py")
    return sorted(files)


def upward_imports() -> list[str]:
    problems = set()
    for path in sources():
        name = module_name(path)
        # ``python -m abs_ray.label`` is an entrypoint like ``jobs/``, wherever it lives.
        own = len(LAYERS) - 1 if name.endswith(".__main__") else layer_of(name)
        assert own is not None, f"{path}: in no layer; add it to LAYERS"
        for line, name in imported_modules(path):
            target = layer_of(name)
            if target is not None and target > own:
                problems.add(
                    f"{path.relative_to(ROOT)}:{line} (layer {own}) imports {name} (layer {target})"
                )
    return sorted(problems)


def test_no_module_imports_from_a_higher_layer():
    problems = upward_imports()
    assert not problems, "upward imports:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "layer"),
    [("abs_ray.errors", 0), ("abs_ray.ops.convert", 1), ("abs_ray.models.detector", 2),
     ("abs_ray.pipeline.run", 5), ("jobs.pipeline", 7), ("abs_ray.cli.train", 6), ("torch.nn", None)],
)  # fmt: skip
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_the_check_sees_function_level_and_relative_imports(tmp_path, monkeypatch):
    """The check itself: an upward import hidden in a function is found."""
    fake = ROOT / "abs_ray" / "ops" / "convert.py"
    source = "def f():\n    from abs_ray.pipeline import run\n    from . import masks\n"
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: source)
    assert imported_modules(fake) == [(2, "abs_ray.pipeline.run"), (3, "abs_ray.ops.masks")]
