"""Options shared by the Ray jobs that are not settings of the run itself."""

from __future__ import annotations

from jsonargparse import ArgumentParser

__all__ = ["add_address"]


def add_address(parser: ArgumentParser) -> None:
    """``--address``: where Ray is (see :func:`abs_ray.env.ray_init_address`)."""
    parser.add_argument(
        "--address",
        type=str | None,
        default=None,
        help="Ray address: 'auto' joins the local cluster `ray start` (make cluster) started; "
        "default: the job's cluster under `ray job submit` (or $RAY_ADDRESS), else a new local one",
    )
