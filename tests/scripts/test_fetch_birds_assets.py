"""``scripts/fetch-birds-assets.sh`` (``make assets``) with stand-ins for python, apt-get and
dpkg on PATH: which commands it runs, in which order, for which packages."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "fetch-birds-assets.sh"


def _fake(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


@pytest.fixture
def fakes(tmp_path):
    """``run(missing, install_ok) -> (returncode, calls)``: the script against stand-ins.

    The python stand-in prints ``missing`` for ``--missing-packages`` and logs ``--check``;
    apt-get fails ``install`` unless ``install_ok`` and writes one ``.deb`` a package for
    ``download``; dpkg logs ``-x``.
    """
    log, bin_dir = tmp_path / "calls", tmp_path / "bin"
    bin_dir.mkdir()
    _fake(
        bin_dir / "python",
        f'echo "python $*" >> {log}\n'
        'if [[ " $* " == *" --missing-packages "* ]]; then printf "%s\\n" $MISSING; fi\n',
    )
    _fake(
        bin_dir / "apt-get",
        f'echo "apt-get $*" >> {log}\n'
        'case "$1" in\n'
        '  install) [ -n "$INSTALL_OK" ] ;;\n'
        '  download) shift; for p in "$@"; do touch "${p}_1_all.deb"; done ;;\n'
        "esac\n",
    )
    _fake(bin_dir / "dpkg", f'echo "dpkg $*" >> {log}\n')

    def run(missing: list[str], install_ok: bool = False) -> tuple[int, list[str]]:
        env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHON": str(bin_dir / "python"),
            "MISSING": " ".join(missing),
            "INSTALL_OK": "1" if install_ok else "",
        }
        cache = tmp_path / "cache"
        proc = subprocess.run(
            ["bash", str(SCRIPT), str(cache)], env=env, capture_output=True, text=True
        )
        calls = log.read_text().replace(str(cache), "CACHE").splitlines() if log.exists() else []
        return proc.returncode, calls

    return run


def test_nothing_missing_runs_no_apt(fakes):
    code, calls = fakes([])
    assert code == 0
    assert calls == [
        "python -m abs_ray.data.birds --missing-packages --cache-dir CACHE",
        "python -m abs_ray.data.birds --check --cache-dir CACHE",
    ]


def test_missing_packages_are_extracted_into_the_cache_when_not_installed(fakes):
    code, calls = fakes(["tuxpaint-data", "mate-backgrounds"])
    assert code == 0
    fetched = [c for c in calls if not c.startswith(("apt-get install", "apt-get update"))]
    assert fetched == [
        "python -m abs_ray.data.birds --missing-packages --cache-dir CACHE",
        "apt-get download tuxpaint-data mate-backgrounds",
        "dpkg -x CACHE/debs/mate-backgrounds_1_all.deb CACHE/root",
        "dpkg -x CACHE/debs/tuxpaint-data_1_all.deb CACHE/root",
        "python -m abs_ray.data.birds --check --cache-dir CACHE",
    ]
    if os.geteuid() == 0:  # root tries apt-get install first, once more after an update
        install = "apt-get install -y -qq --no-install-recommends tuxpaint-data mate-backgrounds"
        assert calls[1:4] == [install, "apt-get update -qq", install]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root installs with apt-get")
def test_root_installs_and_extracts_nothing(fakes):
    code, calls = fakes(["tuxpaint-data"], install_ok=True)
    assert code == 0
    assert calls[1:] == [
        "apt-get install -y -qq --no-install-recommends tuxpaint-data",
        "python -m abs_ray.data.birds --check --cache-dir CACHE",
    ]
