"""Size limits of the house rules: no module under abs_ray/, jobs/ or deployments/ over 600
lines, no function over 100 lines (docstring included)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 100


def sources() -> list[Path]:
    return sorted(
        p for folder in ("abs_ray", "jobs", "deployments") for p in (ROOT / folder).rglob("*.py")
    )


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES, root: Path = ROOT) -> list[str]:
    """``file:line name (n lines)`` of every function or method longer than ``limit`` lines,
    decorators excluded, docstring included."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_module_is_over_600_lines():
    long = [
        f"{p.relative_to(ROOT)} ({n} lines)"
        for p in sources()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, "modules over 600 lines:\n" + "\n".join(long)


def test_no_function_is_over_100_lines():
    long = [f for p in sources() for f in long_functions(p)]
    assert not long, "functions over 100 lines:\n" + "\n".join(long)


def test_the_function_check_counts_the_docstring(tmp_path):
    def write(statements: int) -> Path:
        body = "".join(f"    x{i} = {i}\n" for i in range(statements))
        src = tmp_path / f"m{statements}.py"
        src.write_text(f'@staticmethod\ndef f():\n    """Doc."""\n{body}    return 0\n')
        return src

    assert long_functions(write(97), root=tmp_path) == []  # def + doc + 97 + return = 100
    assert long_functions(write(98), root=tmp_path) == ["m98.py:2 f (101 lines)"]
