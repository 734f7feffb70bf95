"""A trained classifier as MLflow users expect it: self-contained, registered, with its inputs.

- :func:`log_classifier` logs a model that loads where ``abs_ray`` is not installed: the
  classifier with its preprocessing exported by ``torch.export`` (``model.pt2``), and a pyfunc
  whose code travels with the model (:mod:`abs_ray.train.image_classifier_pyfunc`, MLflow
  "models from code"; it imports only torch, numpy, pandas, Pillow and mlflow), with a
  signature and an input example. Input: a DataFrame column ``image`` of encoded images
  (bytes; base64 text over HTTP); output: ``prob_<class>`` columns and ``label``::

      model = mlflow.pyfunc.load_model(uri)
      model.predict(pd.DataFrame({"image": [open("bird.jpg", "rb").read()]}))

      mlflow models serve -m models:/abs-ray-classifier/1 --env-manager local -p 5001
      curl -H 'Content-Type: application/json' localhost:5001/invocations \\
          -d '{"dataframe_split": {"columns": ["image"], "data": [["<base64 of bird.jpg>"]]}}'

- :func:`register_model` registers a logged model as a new version with tags;
  :func:`version_tags` derives the usual ones (method, data digest, detector, test
  worst-group accuracy) from a training report.
- :func:`log_inputs` logs the train/val/test splits as MLflow dataset inputs with digests;
  :func:`split_frames` reads their light columns (id, label, split, group) from the Parquet
  files, never the images.
- :func:`system_metrics` samples CPU, memory, disk and network into a run (psutil).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abs_ray.errors import ConfigError, DatasetError
from abs_ray.io import S3Options, resolve

logger = logging.getLogger(__name__)

__all__ = [
    "INPUT_COLUMN",
    "PYFUNC_FILE",
    "ServingClassifier",
    "export_classifier",
    "frame_digest",
    "log_classifier",
    "log_inputs",
    "register_model",
    "split_frames",
    "start_system_metrics",
    "system_metrics",
    "version_tags",
]

#: The file whose code every logged model carries (and runs when loaded).
PYFUNC_FILE = Path(__file__).with_name("image_classifier_pyfunc.py")
INPUT_COLUMN = "image"
#: Decompression-bomb guard of the served model (pixels per image).
DEFAULT_MAX_PIXELS = 40_000_000
_SPLIT_COLUMNS = ("id", "label", "split", "group")


class ServingClassifier(nn.Module):
    """A classifier with its preprocessing: uint8 RGB images in, probabilities out.

    Args:
        classifier: takes ``(B, 3, S, S)`` float RGB in ``[0, 1]`` (normalises inside, as
            every :func:`~abs_ray.models.classifier.create_classifier` model) and returns
            ``(B, K)`` logits.
        image_size: ``S``, the side the classifier was trained and evaluated at.

    Forward:
        ``(B, H, W, 3)`` uint8 RGB (any ``H, W``) → ``(B, K)`` float probabilities (softmax).
        Images not ``S x S`` are resized (bilinear, antialiased); the pyfunc resizes with
        Pillow first, as the training data were, so that this step is then the identity.

    Raises:
        ConfigError: ``image_size`` below 8.

    Example:
        >>> from abs_ray.models.classifier import create_classifier
        >>> m = ServingClassifier(create_classifier("test_tiny", 2, weights=None), 32).eval()
        >>> p = m(torch.zeros(3, 40, 50, 3, dtype=torch.uint8))
        >>> p.shape, bool(torch.allclose(p.sum(dim=1), torch.ones(3)))
        (torch.Size([3, 2]), True)
    """

    def __init__(self, classifier: nn.Module, image_size: int) -> None:
        super().__init__()
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ConfigError(f"image_size must be an int >= 8, got {image_size!r}")
        self.classifier = classifier
        self.image_size = image_size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).float().div(255.0)
        # Always resized (identity at S x S), so the exported graph has no shape branch.
        x = F.interpolate(
            x,
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        return self.classifier(x).float().softmax(dim=1)


def export_classifier(classifier: nn.Module, image_size: int, path: str | os.PathLike) -> Path:
    """Export ``ServingClassifier(classifier, image_size)`` with ``torch.export`` to ``path``.

    The program takes any batch size and image size (``(B, H, W, 3)`` uint8, ``H, W`` in
    ``[8, 8192]``) and loads with ``torch.export.load(path).module()``, torch only. The
    classifier is copied to the CPU in eval mode; the original is not changed.

    Returns:
        ``path``.
    """
    module = ServingClassifier(copy.deepcopy(classifier).cpu().eval(), image_size).eval()
    example = torch.zeros(2, image_size, image_size, 3, dtype=torch.uint8)
    dims = {
        "images": {
            0: torch.export.Dim("batch", min=1, max=4096),
            1: torch.export.Dim("height", min=8, max=8192),
            2: torch.export.Dim("width", min=8, max=8192),
        }
    }
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=dims)
    torch.export.save(program, str(path))
    return Path(path)


def _load_pyfunc_module() -> Any:
    """The pyfunc file as a module (to run it here exactly as a loaded model will)."""
    spec = importlib.util.spec_from_file_location("_abs_ray_image_classifier_pyfunc", PYFUNC_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _requirements() -> list[str]:
    out = []
    for dist in ("torch", "numpy", "pandas", "pillow", "mlflow"):
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
        except importlib.metadata.PackageNotFoundError:
            out.append(dist)
    return out


@contextlib.contextmanager
def _in_run(run_id: str | None) -> Iterator[None]:
    """Make ``run_id`` the active run for the block (nothing to do if it already is)."""
    import mlflow

    active = mlflow.active_run()
    if run_id is None or (active is not None and active.info.run_id == run_id):
        yield
        return
    with mlflow.start_run(run_id=run_id, nested=active is not None):
        yield


def log_classifier(
    classifier: nn.Module,
    image_size: int,
    *,
    class_names: Sequence[str] | None = None,
    name: str = "model",
    run_id: str | None = None,
    example_images: Sequence[bytes] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    batch_size: int = 32,
    tags: Mapping[str, str] | None = None,
) -> Any:
    """Log ``classifier`` as a self-contained pyfunc model (see the module docstring).

    Args:
        classifier: the trained model (any device; copied to the CPU for export).
        image_size: the side it was trained at (images are resized to it).
        class_names: one per output; default ``class_0``, ``class_1``, ...
        name: the model's name in the run.
        run_id: log into this run (default: the active run, or none: a model without run).
        example_images: encoded images for the input example (default: one grey PNG).
        max_pixels: the served model refuses larger images (HTTP 400).
        batch_size: images per forward pass when predicting.
        tags: tags of the logged model.

    Returns:
        MLflow's ``ModelInfo`` (``.model_uri`` loads it).

    Raises:
        ConfigError: class names not matching the classifier's outputs, or bad sizes.
    """
    import mlflow
    from mlflow.models import infer_signature

    k = getattr(classifier, "num_classes", None)
    names = list(class_names) if class_names is not None else None
    if names is None:
        if not isinstance(k, int):
            raise ConfigError("class_names are required for a classifier without num_classes")
        names = [f"class_{i}" for i in range(k)]
    if isinstance(k, int) and len(names) != k:
        raise ConfigError(f"{len(names)} class names for a classifier with {k} outputs")
    if len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"class names must be distinct non-empty strings, got {names}")
    if max_pixels < image_size * image_size or batch_size < 1:
        raise ConfigError(
            f"max_pixels must be >= image_size², batch_size >= 1, got {max_pixels}, {batch_size}"
        )
    import pandas as pd

    examples = list(example_images or [_png(np.full((image_size, image_size, 3), 128, np.uint8))])
    example_df = pd.DataFrame({INPUT_COLUMN: examples})
    settings = {
        "format": "abs_ray.image_classifier/1",
        "image_size": int(image_size),
        "class_names": names,
        "max_pixels": int(max_pixels),
        "batch_size": int(batch_size),
        "input": f"DataFrame column `{INPUT_COLUMN}`: encoded images (bytes, or base64 text)",
        "output": "prob_<class> per class (sums to 1), label (the most probable class)",
    }
    with tempfile.TemporaryDirectory() as folder:
        program = export_classifier(classifier, int(image_size), Path(folder, "model.pt2"))
        settings_file = Path(folder, "settings.json")
        settings_file.write_text(json.dumps(settings, indent=2))
        artifacts = {"model": str(program), "settings": str(settings_file)}
        # The signature's output comes from running the pyfunc file here, as a load would.
        pyfunc = _load_pyfunc_module().ImageClassifier()
        pyfunc.load_context(type("Context", (), {"artifacts": artifacts})())
        output = pyfunc.predict(None, example_df)
        with _in_run(run_id), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
            info = mlflow.pyfunc.log_model(
                name=name,
                python_model=str(PYFUNC_FILE),
                artifacts=artifacts,
                signature=infer_signature(example_df, output),
                input_example=example_df,
                # Listed, not inferred (inference loads the model in a subprocess: slow).
                pip_requirements=_requirements(),
                tags=dict(tags or {}),
            )
    logger.info("logged classifier %s (%d classes, %d px)", info.model_uri, len(names), image_size)
    return info


def register_model(
    model_uri: str,
    name: str,
    tags: Mapping[str, Any] | None = None,
    *,
    description: str | None = None,
    alias: str | None = None,
) -> Any:
    """Register ``model_uri`` as a new version of registered model ``name``, with tags.

    Args:
        model_uri: e.g. ``ModelInfo.model_uri`` (``models:/m-...``) or ``runs:/<run>/model``.
        name: registered model name (created if new).
        tags: version tags (values become strings), e.g. :func:`version_tags`.
        description: the version's description.
        alias: also point this alias (e.g. ``candidate``) at the new version.

    Returns:
        The ``ModelVersion`` (``.version``, ``.tags``).

    Raises:
        ConfigError: empty name.
    """
    import mlflow
    from mlflow import MlflowClient

    if not name or not name.strip():
        raise ConfigError("a registered model name must not be empty")
    str_tags = {k: str(v) for k, v in (tags or {}).items()}
    version = mlflow.register_model(model_uri, name, tags=str_tags)
    client = MlflowClient()
    if description:
        client.update_model_version(name, version.version, description=description)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    logger.info("registered %s version %s (%s)", name, version.version, model_uri)
    return client.get_model_version(name, version.version)


def version_tags(report: Mapping[str, Any]) -> dict[str, str]:
    """Version tags from a training report (``report.json``: method, best, tags, ...).

    >>> version_tags({"method": "abs", "run_name": "r1", "best": {"epoch": 3, "test":
    ...     {"worst_group_accuracy": 0.8125}}, "tags": {"abs_ray.data_rows_sha256": "ab12",
    ...     "abs_ray.detector_checkpoint": "out/detector/detector.pt"}})["test_worst_group_accuracy"]
    '0.8125'
    """
    tags = report.get("tags", {}) or {}
    best = report.get("best", {}) or {}
    out = {
        "method": report.get("method") or tags.get("abs_ray.method"),
        "run_name": report.get("run_name"),
        "backbone": (report.get("config") or {}).get("backbone") or tags.get("abs_ray.backbone"),
        "data_digest": tags.get("abs_ray.data_rows_sha256"),
        "data": tags.get("abs_ray.data"),
        "detector": tags.get("abs_ray.detector_checkpoint"),
        "code_version": tags.get("abs_ray.code_version"),
        "best_epoch": best.get("epoch"),
    }
    for split in ("val", "test"):
        metrics = best.get(split) or {}
        for key in ("worst_group_accuracy", "overall_accuracy"):
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[f"{split}_{key}"] = f"{value:.4f}"
    return {k: str(v) for k, v in out.items() if v is not None}


# --- inputs --------------------------------------------------------------------------------


def split_frames(files: Sequence[str], s3: S3Options | None = None) -> dict[str, Any]:
    """The light columns of a disentangled data set, one DataFrame per split.

    Args:
        files: its Parquet file URIs (local or ``s3://``), e.g. ``DatasetInfo.files``.
        s3: S3 settings.

    Returns:
        ``{split: DataFrame[id, label, split, group?]}`` sorted by id (group where present).

    Raises:
        DatasetError: no files, or a file without ``id``, ``label`` or ``split``.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    if not files:
        raise DatasetError("no Parquet files to read the splits from")
    frames = []
    for uri in files:
        fs, path = resolve(uri, s3)
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            present = [c for c in _SPLIT_COLUMNS if c in parquet.schema_arrow.names]
            missing = {"id", "label", "split"} - set(present)
            if missing:
                raise DatasetError(f"{uri}: missing column(s) {', '.join(sorted(missing))}")
            frames.append(parquet.read(columns=present).to_pandas())
    table = pd.concat(frames, ignore_index=True)
    table["id"] = table["id"].astype(str)
    return {
        str(split): part.sort_values("id").reset_index(drop=True)
        for split, part in table.groupby("split", sort=True)
    }


def frame_digest(frame: Any) -> str:
    """A short content digest of a split's rows (independent of row order).

    >>> import pandas as pd
    >>> a = pd.DataFrame({"id": ["b", "a"], "label": [1, 0]})
    >>> frame_digest(a) == frame_digest(a.iloc[::-1]), len(frame_digest(a))
    (True, 16)
    """
    cols = sorted(frame.columns)
    rows = sorted("\t".join(str(v) for v in row) for row in frame[cols].itertuples(index=False))
    text = "\t".join(cols) + "\n" + "\n".join(rows)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def log_inputs(
    splits: Mapping[str, Any],
    source: str,
    *,
    name: str = "disentangled",
    run_id: str | None = None,
    targets: str = "label",
) -> dict[str, str]:
    """Log each split as an MLflow dataset input of the run (context = the split name).

    Args:
        splits: ``{split: DataFrame}`` of its rows' light columns (:func:`split_frames`).
        source: where the data set lives (its URI), recorded as the dataset's source.
        name: dataset name prefix (``<name>-<split>``).
        run_id: the run (default: the active run).
        targets: the label column.

    Returns:
        ``{split: digest}`` (:func:`frame_digest`).
    """
    import mlflow

    digests = {}
    with _in_run(run_id), warnings.catch_warnings():
        # Advice about guessing a local path's source type and about integer columns with
        # missing values: ours is a named URI and the columns have no missing values.
        warnings.filterwarnings("ignore", "The specified dataset source", UserWarning)
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        for split, frame in splits.items():
            digest = frame_digest(frame)
            dataset = mlflow.data.from_pandas(
                frame, source=source, targets=targets, name=f"{name}-{split}", digest=digest
            )
            mlflow.log_input(dataset, context=split)
            digests[split] = digest
    return digests


# --- system metrics ---------------------------------------------------------------------------


def start_system_metrics(run_id: str, interval_s: float = 10.0) -> Any | None:
    """Start sampling CPU, memory, disk and network (``system/...`` metrics) into ``run_id``.

    Returns:
        The monitor (call ``.finish()`` at the end of the run), or None where psutil is
        missing.
    """
    if importlib.util.find_spec("psutil") is None:
        logger.debug("psutil is not installed: no system metrics")
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=interval_s, samples_before_logging=1, resume_logging=True
    )
    monitor.start()
    return monitor


@contextlib.contextmanager
def system_metrics(run_id: str, interval_s: float = 10.0) -> Iterator[bool]:
    """:func:`start_system_metrics` for a block; yields whether sampling runs."""
    monitor = start_system_metrics(run_id, interval_s)
    try:
        yield monitor is not None
    finally:
        if monitor is not None:
            monitor.finish()
