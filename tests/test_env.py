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


def test_ray_address_for_every_job():
    from abs_ray.env import ray_init_address

    # No address: a new local cluster, never whatever /tmp/ray/ray_current_cluster names.
    assert ray_init_address(None, environ={}) == "local"
    # Inside `ray job submit` (the supervisor sets both): the job's cluster.
    job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "RAY_ADDRESS": "10.0.0.5:6379"}
    assert ray_init_address(None, environ=job) is None
    assert ray_init_address(None, environ={"RAY_ADDRESS": "10.0.0.5:6379"}) is None
    assert ray_init_address("auto", environ={}) == "auto"
    assert ray_init_address("ray://head:10001", environ=job) == "ray://head:10001"


def test_an_unusable_mlflow_folder_is_a_typed_error(tmp_path):
    import pytest

    from abs_ray.env import mlflow_tracking_uri
    from abs_ray.errors import StorageError

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="cannot create"):
        mlflow_tracking_uri(str(blocker / "run"))
