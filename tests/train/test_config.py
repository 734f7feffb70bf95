"""TrainConfig validation, the job's CLI, and the checks made against the data before training."""

import dataclasses
import os
import pathlib

import pytest

from abs_ray.errors import ConfigError, DatasetError
from abs_ray.train import TrainConfig, scan_disentangled
from abs_ray.train.config import RESUMABLE_CHANGES
from abs_ray.train.run import resolve_config
from abs_ray.train.tracking import resolve_artifact_location


def _job():
    """``abs-ray train``, which ``jobs/train.py`` runs."""
    path = pathlib.Path(__file__).parents[2] / "jobs" / "train.py"
    assert "from abs_ray.cli.train import main" in path.read_text()
    import abs_ray.cli.train

    return abs_ray.cli.train


def test_defaults_are_the_paper_recipe():
    cfg = TrainConfig(data="d")
    assert (cfg.batch_size, cfg.epochs, cfg.lr, cfg.weight_decay, cfg.momentum) == (
        32,
        50,
        1e-3,
        1e-3,
        0.9,
    )
    assert (cfg.label_smoothing, cfg.swap_prob, cfg.crop_scale) == (0.1, 1.0, (0.7, 1.0))
    assert (cfg.swap_scale, cfg.swap_degrees, cfg.translate_pixels(224)) == ((0.5, 1.5), 30.0, 32)
    assert cfg.translate_pixels(112) == 16 and cfg.select_by == "val_accuracy"
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"method": "mixup"}, "unknown method 'mixup'; known: abs, erm, erm_aug, oracle"),
        ({"backbone": "vgg16"}, "unknown classifier 'vgg16'; known"),
        ({"backbone": "test_tiny", "weights": "imagenet"}, "test_tiny has no pretrained weights"),
        ({"select_by": "test_accuracy"}, "unknown select_by"),
        ({"batch_size": 30, "num_workers": 4}, "multiple of num_workers"),
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"lr": -1.0}, "lr must be a number in"),
        ({"swap_prob": 1.5}, "swap_prob must be a number in"),
        ({"crop_scale": (0.9, 0.5)}, "low <= high"),
        ({"swap_scale": (0.0, 1.0)}, "swap_scale"),
        ({"swap_degrees": 270.0}, "swap_degrees"),
        ({"run_name": "a/b"}, "run_name must be"),
        ({"data": ""}, "data must be a non-empty string"),
        ({"use_gpu": "yes"}, "use_gpu"),
        ({"cpus_per_worker": 0}, "cpus_per_worker"),
        ({"lr_schedule": "step"}, "lr_schedule"),
    ],
)
def test_bad_config_is_a_config_error(change, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{"data": "d", **change})


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown training settings: colour"):
        TrainConfig.from_dict({"data": "d", "colour": "red"})


def test_resume_compatibility():
    cfg = TrainConfig(data="d", epochs=5)
    stored = cfg.to_dict()
    assert dataclasses.replace(cfg, epochs=9, num_workers=4).changes_from(stored) == {}
    assert dataclasses.replace(cfg, lr=0.1).changes_from(stored) == {"lr": (1e-3, 0.1)}
    assert "epochs" in RESUMABLE_CHANGES and "method" not in RESUMABLE_CHANGES


def test_cli_builds_the_config(tmp_path):
    job = _job()
    args = job.get_args_parser().parse_args(
        [
            "--data", "s3://b/runs/wb1", "--out", str(tmp_path), "--method", "oracle",
            "--backbone", "resnet18", "--weights", "null", "--freeze_backbone", "true",
            "--epochs", "3", "--batch_size", "8", "--crop_scale", "[0.5, 1.0]",
            "--swap_translate", "64", "--use_gpu", "false", "--num_workers", "4",
            "--select_by", "val_worst_group_accuracy", "--hflip", "false",
        ]
    )  # fmt: skip
    cfg = job.config_from_args(args)
    assert (cfg.method, cfg.backbone, cfg.weights, cfg.freeze_backbone) == (
        "oracle",
        "resnet18",
        None,
        True,
    )
    assert (cfg.epochs, cfg.batch_size, cfg.crop_scale, cfg.swap_translate) == (
        3,
        8,
        (0.5, 1.0),
        64,
    )
    assert (cfg.use_gpu, cfg.num_workers, cfg.hflip) == (False, 4, False)
    assert cfg.select_by == "val_worst_group_accuracy"
    bad = job.get_args_parser().parse_args(
        ["--data", "d", "--batch_size", "6", "--num_workers", "4"]
    )
    with pytest.raises(ConfigError, match="multiple of num_workers"):
        job.config_from_args(bad)


def test_checks_against_the_data(tiny_set, tmp_path, monkeypatch):
    info = scan_disentangled(tiny_set)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = resolve_config(TrainConfig(data=tiny_set, out=str(tmp_path), batch_size=8), info)
    assert (cfg.num_classes, cfg.image_size, cfg.use_gpu) == (2, 32, False)
    assert cfg.run_name == "abs-efficientnet_lite0-s0"
    assert cfg.mlflow_tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    # Left as configured (None): the tracking server's choice, else <out>/mlartifacts.
    assert cfg.mlflow_artifact_location is None
    assert resolve_artifact_location(None, cfg.out, cfg.mlflow_tracking_uri) == str(
        tmp_path / "mlartifacts"
    )

    with pytest.raises(ConfigError, match="fewer than one batch"):
        resolve_config(TrainConfig(data=tiny_set, out=str(tmp_path), batch_size=64), info)
    no_masks = dataclasses.replace(info, true_mask_column=None)
    with pytest.raises(ConfigError, match="'oracle' needs true masks"):
        resolve_config(TrainConfig(data=tiny_set, method="oracle", batch_size=8), no_masks)
    no_groups = dataclasses.replace(info, groups={s: {} for s in info.groups})
    worst = TrainConfig(data=tiny_set, select_by="val_worst_group_accuracy", batch_size=8)
    with pytest.raises(ConfigError, match="needs a group label"):
        resolve_config(worst, no_groups)
    assert resolve_config(worst, info).select_by == "val_worst_group_accuracy"
    # Relative local paths become absolute: Ray Train workers run in another directory.
    monkeypatch.chdir(tmp_path)
    rel = resolve_config(TrainConfig(data=tiny_set, out="runs/t", batch_size=8), info)
    assert rel.out == str(tmp_path / "runs" / "t") and os.path.isabs(rel.data)
    assert rel.mlflow_tracking_uri == f"sqlite:///{tmp_path}/runs/t/mlflow.db"
    remote = TrainConfig(data=tiny_set, out="s3://b/t", batch_size=8, mlflow_tracking_uri="x")
    s3_out = resolve_config(remote, info)
    assert s3_out.out == "s3://b/t"
    with pytest.raises(DatasetError, match="no val rows"):
        resolve_config(cfg, dataclasses.replace(info, counts={"train": 32}))
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI"):
        resolve_config(TrainConfig(data=tiny_set, out="s3://b/train", batch_size=8), info)


def test_a_run_stored_with_relative_paths_still_resumes(tiny_set, tmp_path, monkeypatch):
    import json

    from abs_ray.io import S3Options
    from abs_ray.train.run import _check_resume

    monkeypatch.chdir(tmp_path)
    info = scan_disentangled(tiny_set)
    cfg = resolve_config(
        TrainConfig(data=tiny_set, out="runs/t", batch_size=8, mlflow_tracking_uri="x"), info
    )
    stored = {**cfg.to_dict(), "out": "runs/t"}  # as written before paths were made absolute
    run_dir = tmp_path / "runs" / "t" / cfg.run_name
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(stored))
    assert _check_resume(cfg, str(run_dir), S3Options()) is None
    (run_dir / "config.json").write_text(json.dumps({**stored, "out": "runs/other"}))
    with pytest.raises(ConfigError, match="exists with other settings"):
        _check_resume(cfg, str(run_dir), S3Options())


def test_swap_val_selection_is_a_known_value_and_a_flag():
    """``swap_val_accuracy`` (label-free) is validated like the other values and reaches the
    job's CLI from the config field."""
    from abs_ray.train.config import SELECT_BY, SELECTION_METRICS

    assert SELECT_BY == ("val_accuracy", "val_worst_group_accuracy", "swap_val_accuracy")
    assert SELECTION_METRICS["swap_val_accuracy"] == ("swap_val", "overall_accuracy")
    cfg = TrainConfig(data="d", select_by="swap_val_accuracy")
    assert TrainConfig.from_dict(cfg.to_dict()).select_by == "swap_val_accuracy"
    with pytest.raises(ConfigError, match="unknown select_by 'swap_val'; known: .*swap_val_acc"):
        TrainConfig(data="d", select_by="swap_val")
    job = _job()
    args = job.get_args_parser().parse_args(["--data", "d", "--select_by", "swap_val_accuracy"])
    assert job.config_from_args(args).select_by == "swap_val_accuracy"
    assert "swap_val_accuracy" in job.get_args_parser().format_help()


def test_the_default_run_fits_a_two_cpu_machine():
    """Two workers at 1 CPU each took both CPUs of a 2-core machine: `jobs/train.py` with its
    defaults waited forever for a CPU to decode the data on."""
    from abs_ray.train.config import cpu_request

    assert cpu_request(TrainConfig(data="d", out="o")) <= 2 - 0.5
    assert cpu_request(TrainConfig(data="d", out="o", num_workers=4, cpus_per_worker=1)) == 4.25


def test_a_run_short_of_cpus_says_so(monkeypatch, caplog):
    from abs_ray.train import run

    monkeypatch.setattr(run, "cluster_cpus", lambda: 2.0)
    with caplog.at_level("WARNING", logger="abs_ray.train.run"):
        run._warn_if_short_of_cpus(TrainConfig(data="d", out="o"))
        assert not caplog.records
        run._warn_if_short_of_cpus(TrainConfig(data="d", out="o", cpus_per_worker=1))
    assert "waits until more join" in caplog.text and "2.25 CPUs" in caplog.text
