"""Ray Data callables: thin per-batch functions and classes that call ``ops`` and ``models``.

Each takes and returns ``dict[str, np.ndarray]`` batches and can be called on a hand-made batch
without Ray, which is how the unit tests exercise them.

- :mod:`~abs_ray.stages.load`: :class:`LoadImages` (read + safe decode + resize)
- :mod:`~abs_ray.stages.disentangle`: :class:`DetectPatches`, :func:`masks_from_truth`,
  :class:`InpaintBackgrounds`, :func:`encode_outputs`
- :mod:`~abs_ray.stages.sink`: :class:`~abs_ray.stages.sink.SplitParquetSink` and the readers
  of what it wrote (imported from there: it needs Ray)

Importing this package imports neither torch nor Ray (decode tasks pay for neither); model
stages import torch when they are built.
"""

from abs_ray.stages.disentangle import (
    SALIENCY_DETECTOR,
    DetectPatches,
    InpaintBackgrounds,
    encode_outputs,
    masks_from_truth,
)
from abs_ray.stages.load import ERROR_COLUMNS, LoadImages

__all__ = [
    "ERROR_COLUMNS",
    "SALIENCY_DETECTOR",
    "DetectPatches",
    "InpaintBackgrounds",
    "LoadImages",
    "encode_outputs",
    "masks_from_truth",
]
