"""The one way a job's configuration becomes a command line and a YAML file.

Every job's settings are one frozen dataclass (its fields, types, defaults and the
``Attributes:`` section of its docstring). :func:`config_parser` hands that class to
jsonargparse, which makes one option per field (``--epochs``; nested configs as
``--detector.epochs``), shows each default, type and help text in ``--help``, and reads
``--config run.yaml`` (the same keys, nested the same way; unknown keys are refused).
A new field is therefore one line in the dataclass and nothing here.

Option names are the field names, underscores included (``--freeze_backbone true``), so a flag,
a YAML key and the Python attribute are spelled alike. The dataclass's own ``__post_init__``
validates values and registry names when the config is built, before Ray starts; what it
rejects surfaces as :class:`~abs_ray.errors.ConfigError`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from abs_ray.console import add_logging_args
from abs_ray.errors import AbsRayError, ConfigError

__all__ = ["build_config", "config_parser", "parse", "run_cli"]


def config_parser(
    config_class: type,
    prog: str,
    description: str,
    *,
    skip: set[str] | None = None,
    extra: Callable[[ArgumentParser], None] | None = None,
) -> ArgumentParser:
    """A parser with ``--config FILE``, one option per field of ``config_class`` and logging.

    Args:
        config_class: the job's config dataclass.
        prog: program name shown in usage (``abs-ray train``).
        description: the first line of ``--help``.
        skip: fields not offered (set by the job itself).
        extra: adds the job's options that are not settings of the run (``--address``).
    """
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    skip = set(skip or ())
    top = {name for name in skip if "." not in name}
    parser.add_class_arguments(config_class, None, fail_untyped=True, skip=top)
    _hide(parser, skip - top)
    parser.abs_ray_config_class = config_class  # read back by build_config
    if extra is not None:
        extra(parser)
    add_logging_args(parser)
    return parser


def _hide(parser: ArgumentParser, dests: set[str]) -> None:
    """Hide nested options (``train.data``) that the job sets itself from ``--help``.

    jsonargparse's ``skip`` takes only top-level names; a hidden nested field keeps the
    default of its config's default factory (and is overwritten by the job).
    """
    for action in parser._actions:
        if action.dest in dests:
            action.help = argparse.SUPPRESS
            action.required = False


def build_config(parser: ArgumentParser, args: Namespace) -> Any:
    """The config dataclass of parsed ``args`` (its ``__post_init__`` validates it).

    Raises:
        ConfigError: a value the config rejects.
    """
    config_class = parser.abs_ray_config_class
    names = [f.name for f in dataclasses.fields(config_class)]
    try:
        values = parser.instantiate(args)
        return config_class(**{k: values[k] for k in names if k in values})
    except AbsRayError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from exc


def parse(parser: ArgumentParser, argv: Sequence[str] | None) -> Namespace:
    """``parser.parse_args(argv)``; a bad option or value ends the process with status 2."""
    try:
        return parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except Exception as exc:  # jsonargparse's ArgumentError and friends: one line, exit 2
        sys.stderr.write(f"{parser.prog}: error: {exc}\n(see {parser.prog} --help)\n")
        raise SystemExit(2) from None


def run_cli(main: Callable[[], Any]) -> Any:
    """Run ``main()``; a typed error ends the process with ``error: Type: message``, status 1."""
    try:
        return main()
    except AbsRayError as exc:
        sys.exit(f"error: {type(exc).__name__}: {exc}")
