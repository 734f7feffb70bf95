"""``abs-ray serve``: run the swap service (Ray Serve) in the foreground.

``abs-ray serve --bank runs/demo --detector_checkpoint runs/demo/detector/detector.pt``
serves on http://127.0.0.1:8000 until interrupted. Every option is a
:class:`~abs_ray.serve.ServiceConfig` field, the same keys as the ``args:`` block of
``deployments/serve_config.yaml`` (which ``serve run`` / ``serve deploy`` and the RayService
use, with the autoscaling settings); ``--config args.yaml`` takes such a block. It runs
``deployments.augment:build_app``, so start it from the repository root (or the image).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence

from jsonargparse import ArgumentParser, Namespace

from abs_ray.cli._common import add_address
from abs_ray.cli._parser import build_config, config_parser, parse, run_cli
from abs_ray.errors import ConfigError
from abs_ray.serve.config import ServiceConfig

__all__ = ["config_from_args", "get_args_parser", "main"]


def _http(parser: ArgumentParser) -> None:
    add_address(parser)
    parser.add_argument("--host", type=str, default="127.0.0.1", help="HTTP bind address")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port")


def get_args_parser() -> ArgumentParser:
    """The command's options: :class:`ServiceConfig`'s fields, ``--host``, ``--port``."""
    return config_parser(
        ServiceConfig, "abs-ray serve", "run the background-swap service", extra=_http
    )


def config_from_args(args: Namespace) -> ServiceConfig:
    """The :class:`ServiceConfig` of parsed arguments (validated).

    Raises:
        ConfigError: a value the config rejects.
    """
    return build_config(get_args_parser(), args)


def _serve(cfg: ServiceConfig, args: Namespace) -> None:
    try:
        builder = importlib.import_module("deployments.augment").build_app
    except ImportError as exc:
        raise ConfigError(
            f"deployments.augment is not importable ({exc}); run from the repository root"
        ) from exc
    import ray
    from ray import serve

    from abs_ray.env import ray_init_address

    ray.init(address=ray_init_address(args.address))
    serve.start(http_options={"host": args.host, "port": args.port})
    logging.getLogger(__name__).info("serving on http://%s:%d/", args.host, args.port)
    try:
        serve.run(builder(cfg.to_dict()), name="abs-swap", route_prefix="/", blocking=True)
    finally:
        serve.shutdown()
        ray.shutdown()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse, validate, serve until interrupted; a typed error exits with status 1."""
    from abs_ray.console import logging_kwargs, setup_logging
    from abs_ray.env import configure_environment

    configure_environment()
    args = parse(get_args_parser(), argv)
    setup_logging(**logging_kwargs(args))
    run_cli(lambda: _serve(config_from_args(args), args))
