"""Distributed classifier training on a disentangled data set: ``abs``, ``erm``, ``oracle``.

- :mod:`~abs_ray.train.config`: :class:`TrainConfig` (the paper's recipe as defaults)
- :mod:`~abs_ray.train.data`: scan the disentangled Parquet, Ray Data decode, test sets from
  generated samples (:func:`write_disentangled_from_samples`)
- :mod:`~abs_ray.train.augment`: background bank, on-device swap, crop and flip
- :mod:`~abs_ray.train.models`: classifier registry (``resnet50``, ``resnet18``,
  ``efficientnet_lite0``, ``test_tiny``)
- :mod:`~abs_ray.train.evaluate`: per-group / worst-group accuracy of val and test
- :mod:`~abs_ray.train.loop`: the Ray Train worker function and the training step
- :mod:`~abs_ray.train.tracking`: MLflow logging from rank 0
- :mod:`~abs_ray.train.run`: :func:`run_training`, the driver (``jobs/train.py`` calls it)

Names are imported on first use, so that the Ray Data decoding tasks, which import
:mod:`abs_ray.train.data`, do not pay for torch (seconds per fresh worker process). Importing
this package never imports Ray; :func:`run_training` does when called.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BackgroundBank": "augment",
    "CropParams": "augment",
    "apply_crop": "augment",
    "sample_crop_params": "augment",
    "sample_grid": "augment",
    "swap_batch": "augment",
    "METHODS": "config",
    "SELECT_BY": "config",
    "TrainConfig": "config",
    "DatasetInfo": "data",
    "scan_disentangled": "data",
    "write_disentangled_from_samples": "data",
    "split_metrics": "evaluate",
    "Classifier": "models",
    "classifier_names": "models",
    "create_classifier": "models",
    "run_training": "run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"abs_ray.train.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'abs_ray.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
