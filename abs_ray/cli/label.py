"""``abs-ray label`` (= ``python -m abs_ray.label``): the patch-labelling page.

Then open http://127.0.0.1:8000 (the address is printed). Examples::

    abs-ray label --data data/birds --labels data/birds/patch_labels.csv --grid 16
    abs-ray label --data s3://bucket/waterbirds --labels s3://bucket/labels/wb.csv \\
        --detector_checkpoint s3://bucket/runs/wb1/detector/detector.pt --target 200

Every option is a :class:`~abs_ray.label.LabelConfig` field; the retraining recipe is
``--detector.*`` (``--detector.backbone``, ``--detector.epochs``, ``--detector.freeze_backbone``).
The server binds 127.0.0.1 unless ``--host`` says otherwise; it has no login, so expose it
only on a trusted network. Run one server per labels file (see :mod:`abs_ray.label`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from abs_ray.cli._parser import build_config, config_parser, parse, run_cli
from abs_ray.label.config import LabelConfig

__all__ = ["config_from_args", "get_args_parser", "main", "serve"]

#: Retraining settings each round sets itself (:func:`abs_ray.label.retrain.run_round`).
_SET_PER_ROUND = (
    "out",
    "data",
    "labels",
    "grid",
    "label_split",
    "num_labelled",
    "eval_split",
    "seed",
)


def get_args_parser() -> ArgumentParser:
    """The command's options: :class:`LabelConfig`'s fields."""
    return config_parser(
        LabelConfig,
        "abs-ray label",
        "label G x G foreground patches in the browser",
        skip={f"detector.{name}" for name in _SET_PER_ROUND},
    )


def config_from_args(args: Namespace) -> LabelConfig:
    """The :class:`LabelConfig` of parsed arguments (validated).

    Raises:
        ConfigError: a value out of range.
    """
    return build_config(get_args_parser(), args)


def serve(cfg: LabelConfig) -> None:
    """Load the session and serve the page until interrupted."""
    import uvicorn

    from abs_ray.label.app import create_app
    from abs_ray.label.session import LabelSession

    session = LabelSession(cfg)
    logging.getLogger(__name__).info(
        "labelling page: http://%s:%d/ (%d of %d images labelled)",
        cfg.host,
        cfg.port,
        session.counts()["labelled"],
        session.counts()["total"],
    )
    try:
        uvicorn.run(create_app(session), host=cfg.host, port=cfg.port, log_level="warning")
    finally:
        session.close(timeout=5.0)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse, validate, serve; a typed error exits with status 1."""
    from abs_ray.console import logging_kwargs, setup_logging
    from abs_ray.env import configure_environment

    configure_environment()
    args = parse(get_args_parser(), argv)
    setup_logging(**logging_kwargs(args), ray=False)
    run_cli(lambda: serve(config_from_args(args)))
