import os

from abs_ray.env import DEFAULTS, configure_environment


def test_fills_only_unset_variables(monkeypatch, tmp_path):
    for key in DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    applied = configure_environment(output_dir=str(tmp_path / "run"))
    assert os.environ["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_MODE" not in applied
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0"
    assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    assert (tmp_path / "run").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert "MLFLOW_TRACKING_URI" not in configure_environment(output_dir=str(tmp_path / "x"))
