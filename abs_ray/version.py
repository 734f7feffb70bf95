"""The code version recorded with every output: package version plus git commit.

Below both :mod:`abs_ray.train` and :mod:`abs_ray.pipeline`, which record it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from abs_ray import __version__

__all__ = ["code_version"]


def code_version() -> str:
    """Package version plus the git commit when run from a checkout."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return f"{__version__}+g{rev}" if rev else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__
