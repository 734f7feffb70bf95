"""``abs-ray``: one console script, one subcommand per job.

``abs-ray pipeline | train | train-detector | label | serve | audit``, each the same code as the
``ray job submit`` entrypoint ``jobs/<job>.py`` (which only calls it). Every subcommand's
options are its config dataclass's fields (see :mod:`abs_ray.cli._parser`), takes
``--config run.yaml``, ``--log-level``, ``-q`` and ``-v``; ``abs-ray <command> --help``
shows every default.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

#: Subcommand → (module with ``main(argv)``, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "pipeline": ("abs_ray.cli.pipeline", "the main job: detector → disentangle → train"),
    "train": ("abs_ray.cli.train", "train a classifier (abs, erm, erm_aug, oracle) on Ray Train"),
    "train-detector": ("abs_ray.cli.train_detector", "train the patch detector from labels"),
    "label": ("abs_ray.cli.label", "the patch-labelling page (browser, active learning)"),
    "serve": ("abs_ray.cli.serve", "run the swap service on Ray Serve"),
    "audit": ("abs_ray.cli.audit", "how much a classifier relies on backgrounds (issue 18)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return (
        "usage: abs-ray <command> [options]   (abs-ray <command> --help: every option)\n\n"
        "AutoBackSwap on Ray.\n\ncommands:\n" + "\n".join(lines) + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a subcommand; its exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from abs_ray import __version__

        print(f"abs-ray {__version__}")
        return 0
    if args[0] not in COMMANDS:
        sys.stderr.write(f"abs-ray: error: unknown command {args[0]!r}\n\n{_usage()}")
        return 2
    module = importlib.import_module(COMMANDS[args[0]][0])
    module.main(args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
