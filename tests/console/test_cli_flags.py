"""Every CLI in the package takes --log-level, -q and -v."""

from __future__ import annotations

import pytest

from abs_ray.console import logging_kwargs


def _parsers():
    from abs_ray.cli import label, pipeline, serve, train, train_detector
    from abs_ray.data.birds.cli import get_args_parser as birds

    return {
        "label": (label.get_args_parser(), ["--data", "d", "--labels", "l.csv"]),
        "birds": (birds(), ["--out", "o"]),
        "pipeline": (pipeline.get_args_parser(), []),
        "train": (train.get_args_parser(), ["--data", "d"]),
        "train-detector": (train_detector.get_args_parser(), ["--data", "d"]),
        "serve": (serve.get_args_parser(), []),
    }


@pytest.mark.parametrize("name", ["label", "birds", "pipeline", "train", "train-detector", "serve"])
def test_cli_has_logging_flags(name):
    parser, required = _parsers()[name]
    assert logging_kwargs(parser.parse_args(required)) == {"level": None, "quiet": 0, "verbose": 0}
    args = parser.parse_args([*required, "-qq", "--log-level", "warning"])
    assert logging_kwargs(args) == {"level": "WARNING", "quiet": 2, "verbose": 0}
    assert parser.parse_args([*required, "-vv"]).verbose == 2
