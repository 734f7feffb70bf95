"""Where MLflow puts a training run's artifacts (real sqlite stores), and the per-group chart."""

import io
import math

import numpy as np
import pytest

from abs_ray.errors import ConfigError
from abs_ray.train.tracking import (
    group_accuracy_figure,
    prepare_experiment,
    resolve_artifact_location,
)


def test_a_tracking_server_chooses_the_artifact_location():
    assert resolve_artifact_location(None, "s3://b/out", "http://mlflow:5000") is None
    assert resolve_artifact_location(None, "s3://b/out", "https://mlflow.example") is None
    assert resolve_artifact_location("s3://art", "s3://b/out", "http://mlflow:5000") == "s3://art"
    assert resolve_artifact_location(None, "/o", "sqlite:////o/mlflow.db") == "/o/mlartifacts"


def test_a_new_sqlite_store_has_no_default_experiment_in_the_working_directory(
    tmp_path, monkeypatch
):
    from mlflow import MlflowClient

    elsewhere = tmp_path / "ray-worker-cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # what MLflow's ./mlruns default would resolve against
    uri = f"sqlite:///{tmp_path}/out/mlflow.db"
    (tmp_path / "out").mkdir()
    exp_id = prepare_experiment(uri, "abs-ray", f"{tmp_path}/out/mlartifacts", configured=False)
    client = MlflowClient(uri)
    locations = {e.name: e.artifact_location for e in client.search_experiments()}
    assert set(locations) == {"Default", "abs-ray"}
    assert all(str(elsewhere) not in loc for loc in locations.values()), locations
    assert "/out/mlartifacts" in locations["Default"]
    assert client.get_experiment(exp_id).artifact_location.endswith("/out/mlartifacts")
    # Again: the same experiment, nothing new.
    again = prepare_experiment(uri, "abs-ray", f"{tmp_path}/out/mlartifacts", configured=False)
    assert again == exp_id


def test_an_existing_experiment_is_not_silently_used_for_another_configured_location(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    first = prepare_experiment(uri, "abs-ray", f"{tmp_path}/a", configured=True)
    # The default location of another output: the experiment keeps its own (noted only).
    assert prepare_experiment(uri, "abs-ray", f"{tmp_path}/b", configured=False) == first
    with pytest.raises(ConfigError, match="keeps its artifacts in .*/a.*another experiment"):
        prepare_experiment(uri, "abs-ray", f"{tmp_path}/b", configured=True)
    # Another experiment name takes the new location.
    other = prepare_experiment(uri, "abs-ray-b", f"{tmp_path}/b", configured=True)
    from mlflow import MlflowClient

    assert MlflowClient(uri).get_experiment(other).artifact_location.endswith("/b")


def _report(groups_test, epochs=7):
    per = {str(g): 0.5 + 0.1 * g for g in groups_test}
    history = [
        {"epoch": e, "val": {"worst_group_accuracy": 0.4}, "test": {"worst_group_accuracy": 0.5}}
        for e in range(epochs)
    ]
    return {
        "best": {
            "epoch": 3,
            "val": {"per_group": {"0": 0.9, "3": 0.7}},
            "test": {"per_group": per},
        },
        "history": history,
        "config": {"method": "abs", "backbone": "test_tiny"},
    }


def test_group_chart_has_integer_epochs_no_empty_slots_and_a_legend_off_the_bars():
    fig = group_accuracy_figure(_report([0, 1, 3]))  # val has groups 0 and 3 only
    ax_bar, ax_line = fig.axes[:2]
    labels = [t.get_text() for t in ax_bar.get_xticklabels()]
    assert labels == ["group 0", "group 1", "group 3"]  # group 2 absent: no slot for it
    assert len(ax_bar.patches) == 5  # val: 2 bars, test: 3; no empty bar for val's group 1
    # Each bar carries its value, so a 0.00 bar is told apart from an absent group.
    values = sorted(t.get_text() for t in ax_bar.texts)
    assert values == sorted(["0.90", "0.70", "0.50", "0.60", "0.80"]), values
    # Every bar drawn has a height (no NaN placeholder bars).
    heights = [p.get_height() for p in ax_bar.patches]
    assert heights and all(math.isfinite(h) for h in heights)
    ticks = ax_line.get_xticks()
    lo, hi = ax_line.get_xlim()
    shown = [t for t in ticks if lo <= t <= hi]
    assert shown and all(float(t).is_integer() for t in shown), shown
    # The legend sits outside the bars' axes (below or beside), never over a bar.
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax_bar.get_legend() or fig.legends[0]
    box = legend.get_window_extent(renderer)
    for bar in ax_bar.patches:
        assert not box.overlaps(bar.get_window_extent(renderer))
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_group_chart_with_one_epoch():
    fig = group_accuracy_figure(_report([0, 1, 2, 3], epochs=1))
    ticks = [t for t in fig.axes[1].get_xticks()]
    assert all(float(t).is_integer() for t in ticks)
    assert np.isfinite([p.get_height() for p in fig.axes[0].patches]).all()


def test_group_chart_without_group_labels_says_so_and_warns_nothing():
    """Class folders have no groups: worst-group accuracy is NaN every epoch (a stranger's
    run printed matplotlib's "No artists with labels found to put in legend")."""
    import warnings

    report = _report([], epochs=2)
    report["best"]["val"]["per_group"] = {}
    for entry in report["history"]:
        entry["val"]["worst_group_accuracy"] = entry["test"]["worst_group_accuracy"] = math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig = group_accuracy_figure(report)
    ax_line = fig.axes[1]
    assert not ax_line.lines and ax_line.get_legend() is None
    assert [t.get_text() for t in ax_line.texts] == ["no group labels"]


def test_register_model_flag_reaches_the_config():
    from abs_ray.cli import train as job
    from abs_ray.cli._parser import build_config

    parser = job.get_args_parser()
    args = parser.parse_args(["--data", "d", "--out", "/o", "--register_model", "birds-clf"])
    assert build_config(parser, args).register_model == "birds-clf"
    plain = parser.parse_args(["--data", "d", "--out", "/o"])
    assert build_config(parser, plain).register_model is None
    with pytest.raises(ConfigError, match="register_model"):
        build_config(
            parser, parser.parse_args(["--data", "d", "--out", "/o", "--register_model", " "])
        )
