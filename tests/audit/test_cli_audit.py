"""``abs-ray audit`` and ``jobs/audit.py``: flags to config, typed errors before Ray, and a
whole run from the command line on the session's Ray cluster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from abs_ray.cli import audit as audit_cli

REPO = Path(__file__).resolve().parents[2]


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_flags_become_the_config():
    args = audit_cli.get_args_parser().parse_args(
        ["--data", "d", "--model", "m.pt", "--out", "o", "--splits", "[val]", "--n_boot", "50"]
    )
    cfg = audit_cli.config_from_args(args)
    assert (cfg.splits, cfg.n_boot, cfg.in_process) == (("val",), 50, False)


def test_bad_values_and_inputs_end_before_ray(dataset, tmp_path):
    script = str(Path(sys.executable).parent / "abs-ray")
    proc = _run(script, "audit", "--data", "d", "--model", "m.pt", "--out", "o", "--n_boot", "0")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: ConfigError: n_boot must be an int >= 1, got 0"
    )
    missing = str(tmp_path / "missing.pt")
    proc = _run(sys.executable, "jobs/audit.py", "--data", dataset, "--model", missing,
                "--out", str(tmp_path / "out"))  # fmt: skip
    assert proc.returncode == 1 and "StorageNotFoundError" in proc.stderr
    assert "Ray:" not in proc.stderr and not (tmp_path / "out" / "audit.json").exists()


def test_a_whole_audit_from_the_command_line(ray_cluster, dataset, readers, tmp_path):
    out = tmp_path / "audit"
    proc = _run(sys.executable, "jobs/audit.py", "--data", dataset, "--model", readers["fg"],
                "--out", str(out), "--address", ray_cluster["address"], "--n_boot", "100",
                "--splits", "[val]", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["splits"]["val"]["accuracy"]["mixed_rand"] == 1.0
    saved = json.loads((out / "audit.json").read_text())
    assert saved["config"]["splits"] == ["val"] and saved["splits"]["val"]["bg_gap"]["gap"] == 0.0
