"""A patch-labelling page: a person labels a few hundred images in the browser.

``abs-ray label --data <data set URI> --labels <labels CSV URI>`` starts a small
FastAPI app (uvicorn, ``127.0.0.1:8000`` by default) that shows the images of a data set with a
``G x G`` grid over them. Click or drag toggles patches; the grid starts pre-filled from the
current detector (or from the zero-shot saliency prior while there is none); "next" picks the
image the detector is least sure about; labels are saved to the published ``info,mask`` CSV
(:mod:`abs_ray.ops.label_csv`) that detector training reads; a button retrains the detector on
the labels so far and reports its balanced patch accuracy on held-out labels.

- :mod:`~abs_ray.label.config`: :class:`LabelConfig`, the app's settings;
- :mod:`~abs_ray.label.store`: :class:`LabelStore`, the shared CSV (merge per image, atomic
  writes);
- :mod:`~abs_ray.label.pool`: :class:`ImagePool`, the images of one split in a seeded order;
- :mod:`~abs_ray.label.leases`: :class:`LeaseBook`, which page holds which image;
- :mod:`~abs_ray.label.predictor`: :class:`Predictor`, the detector or prior that pre-fills,
  swapped while in use;
- :mod:`~abs_ray.label.scorer`: :class:`Scorer`, the thread that scores unlabelled images for
  active selection;
- :mod:`~abs_ray.label.retrain`: :class:`Retrainer`, retraining rounds in a thread;
- :mod:`~abs_ray.label.session`: :class:`LabelSession`, which wires those together and answers
  the API (no HTTP);
- :mod:`~abs_ray.label.app`: :func:`create_app`, the HTTP API and the page
  (``static/index.html``, self-contained: no CDN, no network fetches).

Concurrency model: one server process owns the labels CSV; any number of browsers may label
through it at once. Every save re-reads the CSV under a process lock, changes that one image's
record and writes the whole file back atomically, so saves to different images never lose each
other and a reader never sees a half-written file. Two *servers* writing one CSV are not
supported (object storage has no cross-process lock here): run one per labels file.
"""

from abs_ray.label.config import LabelConfig
from abs_ray.label.errors import (
    NotEnoughLabelsError,
    TrainingBusyError,
    UnknownImageError,
)

__all__ = [
    "LabelConfig",
    "NotEnoughLabelsError",
    "TrainingBusyError",
    "UnknownImageError",
]
