"""Distributed classifier training on a disentangled data set: ``abs``, ``erm``, ``oracle``.

- :mod:`~abs_ray.train.config`: :class:`TrainConfig` (the paper's recipe as defaults)
- :mod:`~abs_ray.train.data`: scan the disentangled Parquet, Ray Data decode
- :mod:`~abs_ray.train.from_samples`: test sets from generated samples
  (:func:`write_disentangled_from_samples`)
- :mod:`~abs_ray.train.augment`: recent-backgrounds ring buffer, on-device swap, crop and flip
- :mod:`~abs_ray.train.evaluate`: per-group / worst-group accuracy of val and test
- :mod:`~abs_ray.train.swap_val`: label-free selection: val foregrounds on other val images'
  backgrounds (``swap_val_accuracy``)
- :mod:`~abs_ray.train.step`: the training step (swap or augmentation, crop, forward, backward)
- :mod:`~abs_ray.train.loop`: the Ray Train worker function, as named steps
- :mod:`~abs_ray.train.tracking`: MLflow logging from rank 0
- :mod:`~abs_ray.train.run`: :func:`run_training`, the driver (``jobs/train.py`` calls it)

Importing this package imports neither torch nor Ray: the Ray Data decoding tasks import
:mod:`abs_ray.train.data` (and so this package) in fresh worker processes, where torch costs
seconds. It exports the torch-free configuration and data functions; the torch-bound parts
(augmentation, evaluation, the loop) are imported from their modules, and
:func:`run_training` imports the driver when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from abs_ray.train.config import METHODS, SELECT_BY, TrainConfig
from abs_ray.train.data import DatasetInfo, scan_disentangled
from abs_ray.train.from_samples import write_disentangled_from_samples

if TYPE_CHECKING:
    from abs_ray.io import S3Options

__all__ = [
    "METHODS",
    "SELECT_BY",
    "DatasetInfo",
    "TrainConfig",
    "run_training",
    "scan_disentangled",
    "write_disentangled_from_samples",
]


def run_training(cfg: TrainConfig, s3: S3Options | None = None, **kwargs: Any) -> dict:
    """:func:`abs_ray.train.run.run_training` (imported here when called: it pulls in torch
    and Ray, which importing this package must not)."""
    from abs_ray.train.run import run_training as run

    return run(cfg, s3, **kwargs)
