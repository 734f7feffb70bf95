"""abs_ray.cluster: settings from the environment (the head itself: tests/pipeline/test_jobs.py)."""

import pytest

from abs_ray.cluster import cluster_settings, stop
from abs_ray.errors import ConfigError


def test_ports_and_folder_come_from_the_environment(tmp_path):
    env = {"ABS_RAY_DASHBOARD_PORT": "18265", "ABS_RAY_PORT": "16379", "ABS_RAY_NUM_CPUS": "2"}
    settings = cluster_settings({**env, "ABS_RAY_CLUSTER_DIR": str(tmp_path)})
    assert settings["dashboard"] == "http://127.0.0.1:18265"
    assert settings["address"] == "127.0.0.1:16379" and settings["num_cpus"] == 2
    assert settings["ports"]["--ray-client-server-port"] == 10001
    assert settings["dir"] == str(tmp_path)
    with pytest.raises(ConfigError, match="ABS_RAY_PORT must be a port number, got 'x'"):
        cluster_settings({"ABS_RAY_PORT": "x"})


def test_stop_without_a_recorded_head_does_nothing(tmp_path):
    assert stop(cluster_settings({"ABS_RAY_CLUSTER_DIR": str(tmp_path)})) is False
