"""The labelling app's settings and its command line."""

from __future__ import annotations

import pytest

from abs_ray.cli.label import config_from_args, get_args_parser
from abs_ray.errors import ConfigError
from abs_ray.label import LabelConfig


def test_config_validates_and_derives_the_detector_folder():
    cfg = LabelConfig(data="d", labels="/x/labels.csv")
    assert cfg.detector_out == "/x/labels-detector" and cfg.host == "127.0.0.1"
    assert LabelConfig(data="d", labels="l.csv", out="s3://b/det/").detector_out == "s3://b/det"
    for bad, match in [
        ({"grid": 0}, "grid must be an int >= 1"),
        ({"grid": 15}, "patch grid 15 must divide image size 224"),
        ({"target": 0}, "target must be an int >= 1"),
        ({"prior": "magic"}, "prior must be one of saliency, none, got 'magic'"),
        ({"holdout_fraction": 0.9}, r"holdout_fraction must be a number in \(0, 0.5\]"),
        ({"lease_seconds": 0}, "lease_seconds must be a number > 0"),
        ({"min_train_labels": 2}, "min_train_labels must be an int >= 3"),
        ({"labels": ""}, "labels must be a non-empty URI"),
        ({"port": 70000}, "port must be an int >= 0 and <= 65535"),
    ]:
        with pytest.raises(ConfigError, match=match):
            LabelConfig(**{"data": "d", "labels": "l.csv", **bad})


def test_command_line_fills_the_config():
    args = get_args_parser().parse_args(
        ["--data", "s3://b/wb", "--labels", "s3://b/l.csv", "--grid", "8", "--split", "null"]
        + ["--detector.image_size", "64", "--detector.backbone", "test_tiny", "--target", "50"]
    )
    cfg = config_from_args(args)
    assert (cfg.grid, cfg.split, cfg.target, cfg.port) == (8, None, 50, 8000)
    assert (cfg.detector.backbone, cfg.detector.image_size) == ("test_tiny", 64)
    assert cfg.detector.freeze_backbone and cfg.detector.eval_split is None
    bad = get_args_parser().parse_args(["--data", "d", "--labels", "l", "--grid", "15"])
    with pytest.raises(ConfigError, match="patch grid 15 must divide image size 224"):
        config_from_args(bad)


@pytest.mark.parametrize(
    "old", [["--train-detector", "test_tiny"], ["--unfreeze-backbone"], ["--train-epochs", "3"]]
)
def test_old_flag_names_are_refused(old):
    with pytest.raises(Exception, match="unrecognized|expected"):
        get_args_parser().parse_args(["--data", "d", "--labels", "l", *old])
