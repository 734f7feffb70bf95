"""The audited classifier: found and checked on the driver, loaded by torch alone anywhere.

A model is any callable ``(B, H, W, 3)`` uint8 RGB → ``(B, K)`` class scores (probabilities
or logits: the audit takes the arg-max), as :class:`abs_ray.train.mlflow_model.ServingClassifier`.
It may be given as

- a training run folder (local or ``s3://``) written by ``jobs/train.py``: its
  ``report.json`` names the MLflow model (``mlflow.model_uri``) and tracking URI;
- an MLflow model URI (``runs:/<run>/model``, ``models:/<name>/<version>``,
  ``models:/<model id>``): its artifacts are downloaded and its ``model.pt2`` (the
  ``torch.export`` program every abs-ray classifier is logged with) is loaded with torch only;
- a ``torch.export`` file (``.pt2``) or a TorchScript file (``.pt``, ``.pth``, ``.ts``,
  ``.jit``, ``.torchscript``).

:func:`resolve_model` does the finding on the driver and returns a :class:`ModelRef` (the
program's bytes and its identity), which travels to Ray actors; :func:`load_model` turns it
into a :class:`Predictor` on a device. Anything unknown or broken raises a typed error in
:func:`resolve_model`, before any data is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from abs_ray.devices import resolve_device
from abs_ray.errors import ConfigError, StorageError, StorageNotFoundError
from abs_ray.io import S3Options, exists, join, read_bytes, read_text

logger = logging.getLogger(__name__)

__all__ = ["ModelRef", "Predictor", "load_model", "resolve_model"]

#: File suffixes of TorchScript programs and of ``torch.export`` programs.
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")
EXPORT_SUFFIXES = (".pt2",)
_MLFLOW_SCHEMES = ("runs:/", "models:/")


@dataclasses.dataclass(frozen=True, eq=False)
class ModelRef:
    """A classifier ready to load anywhere: the program's bytes and where it came from.

    Attributes:
        kind: ``"export"`` (a ``torch.export`` program) or ``"torchscript"``.
        payload: the program file's bytes.
        identity: JSON-able provenance: ``source``, ``kind``, ``sha256`` of the payload, and
            for MLflow models ``model_uri``, ``tracking_uri``, ``run_id`` (None when unknown).
    """

    kind: str
    payload: bytes = dataclasses.field(repr=False)
    identity: dict[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in ("export", "torchscript"):
            raise ConfigError(f"model kind must be export or torchscript, got {self.kind!r}")


class Predictor:
    """A loaded classifier: ``(B, H, W, 3)`` uint8 on its device → ``(B, K)`` float scores.

    Args:
        module: the loaded program (on ``device``).
        device: where it runs.
    """

    def __init__(self, module: Any, device: torch.device) -> None:
        self.module = module
        self.device = device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Scores of a batch.

        Raises:
            ConfigError: the images are not ``(B, H, W, 3)`` uint8, or the model's output is
                not ``(B, K)``.
        """
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ConfigError(
                f"a model takes (B, H, W, 3) uint8 images, got {tuple(images.shape)} {images.dtype}"
            )
        with torch.inference_mode():
            out = self.module(images.to(self.device))
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(
                f"a model must return (B, K) scores for B={images.shape[0]}, got {got}"
            )
        return out.float()


def load_model(ref: ModelRef, device: str | torch.device = "cpu") -> Predictor:
    """Load ``ref``'s program on ``device`` (``"auto"``: a GPU when this process sees one).

    Raises:
        ConfigError: the bytes are not a program of ``ref.kind`` (or not loadable here).

    Example:
        >>> m = torch.jit.script(torch.nn.Flatten())
        >>> buf = io.BytesIO(); torch.jit.save(m, buf)
        >>> p = load_model(ModelRef("torchscript", buf.getvalue(), {}))
        >>> p(torch.zeros(2, 1, 1, 3, dtype=torch.uint8)).shape
        torch.Size([2, 3])
    """
    where = resolve_device(device)
    source = ref.identity.get("source", "<bytes>")
    try:
        if ref.kind == "torchscript":
            with warnings.catch_warnings():  # torch 2.9+ calls TorchScript deprecated
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)
                module = torch.jit.load(io.BytesIO(ref.payload), map_location=where).eval()
        else:  # an exported program is already in inference form (no .eval())
            module = torch.export.load(io.BytesIO(ref.payload)).module().to(where)
    except (RuntimeError, ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ConfigError(f"{source} is not a loadable {ref.kind} program: {exc}") from exc
    return Predictor(module, where)


def _file_ref(source: str, s3: S3Options | None) -> ModelRef:
    kind = "export" if source.lower().endswith(EXPORT_SUFFIXES) else "torchscript"
    payload = read_bytes(source, s3)
    identity = {"source": source, "kind": kind, "sha256": hashlib.sha256(payload).hexdigest()}
    return ModelRef(kind, payload, identity)


def _mlmodel_field(folder: Path, name: str) -> str | None:
    """A top-level ``name: value`` of the downloaded ``MLmodel`` file (None when absent)."""
    for mlmodel in folder.rglob("MLmodel"):
        for line in mlmodel.read_text(encoding="utf-8").splitlines():
            if line.startswith(f"{name}:"):
                value = line.split(":", 1)[1].strip().strip("'\"")
                return value or None
    return None


@contextlib.contextmanager
def _tracking(uri: str | None) -> Iterator[None]:
    """Make ``uri`` MLflow's tracking URI for the block, then restore exactly what was set.

    ``download_artifacts(tracking_uri=...)`` is not enough for ``runs:/`` URIs of MLflow 3
    logged models: the run's model is looked up in the global store. The module-level
    ``_tracking_uri`` is private (tests/conftest.py restores it the same way); the public
    setter would leave ``MLFLOW_TRACKING_URI`` changed or unset.
    """
    if uri is None:
        yield
        return
    import mlflow
    from mlflow.tracking._tracking_service import utils

    saved, env = utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        utils._tracking_uri = saved
        if env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _mlflow_ref(model_uri: str, tracking_uri: str | None, source: str) -> ModelRef:
    """Download an MLflow model's artifacts and take its ``model.pt2``."""
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="abs-ray-audit-") as tmp, _tracking(tracking_uri):
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model_uri, dst_path=tmp, tracking_uri=tracking_uri
            )
        except MlflowException as exc:
            raise StorageNotFoundError(
                f"MLflow model {model_uri} (tracking {tracking_uri or 'default'}): {exc}"
            ) from exc
        except OSError as exc:
            raise StorageError(f"MLflow model {model_uri}: cannot download: {exc}") from exc
        folder = Path(local)
        programs = sorted(folder.rglob("*.pt2"))
        if not programs:
            raise ConfigError(
                f"MLflow model {model_uri} has no torch.export program (model.pt2): only "
                "classifiers logged by abs-ray (abs_ray.train.mlflow_model.log_classifier) "
                "can be audited from MLflow"
            )
        payload = programs[0].read_bytes()
        run_id = _mlmodel_field(folder, "run_id")
    if run_id is None and model_uri.startswith("runs:/"):
        run_id = model_uri[len("runs:/") :].split("/", 1)[0]
    identity = {
        "source": source,
        "kind": "export",
        "sha256": hashlib.sha256(payload).hexdigest(),
        "model_uri": model_uri,
        "tracking_uri": tracking_uri,
        "run_id": run_id,
    }
    return ModelRef("export", payload, identity)


def _run_folder_ref(source: str, tracking_uri: str | None, s3: S3Options | None) -> ModelRef:
    """A training run folder: the MLflow model its ``report.json`` names."""
    try:
        report = json.loads(read_text(join(source, "report.json"), s3))
        model_uri = report["mlflow"]["model_uri"]
        run_tracking = report["mlflow"].get("tracking_uri")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{source}/report.json is not a training report with mlflow.model_uri: {exc}"
        ) from exc
    ref = _mlflow_ref(model_uri, tracking_uri or run_tracking, source)
    ref.identity["run_name"] = report.get("run_name")
    ref.identity["method"] = report.get("method")
    return ref


def resolve_model(
    source: str, *, tracking_uri: str | None = None, s3: S3Options | None = None
) -> ModelRef:
    """Find the classifier ``source`` names and read its program (see the module docstring).

    Args:
        source: a training run folder, an MLflow model URI, or a ``.pt2`` / TorchScript file
            (local or ``s3://``).
        tracking_uri: MLflow tracking URI for model URIs (default: the run folder's, else
            MLflow's default: ``MLFLOW_TRACKING_URI``).
        s3: S3 settings.

    Returns:
        A :class:`ModelRef` (checked: it loads with :func:`load_model`).

    Raises:
        ConfigError: an empty source, a folder without ``report.json``, a file of another
            kind, an MLflow model without ``model.pt2``, or bytes that do not load.
        StorageNotFoundError: nothing at ``source`` (or an unknown MLflow model / run).
        StorageError: the storage or tracking server cannot be read.
    """
    if not isinstance(source, str) or not source.strip():
        raise ConfigError(f"a model source must be a non-empty string, got {source!r}")
    if source.startswith(_MLFLOW_SCHEMES):
        ref = _mlflow_ref(source, tracking_uri, source)
    elif source.lower().endswith(EXPORT_SUFFIXES + TORCHSCRIPT_SUFFIXES):
        ref = _file_ref(source, s3)
    elif exists(join(source, "report.json"), s3):
        ref = _run_folder_ref(source, tracking_uri, s3)
    elif exists(source, s3):
        raise ConfigError(
            f"{source} is neither a training run folder (with report.json) nor a model file "
            f"({', '.join(EXPORT_SUFFIXES + TORCHSCRIPT_SUFFIXES)})"
        )
    else:
        raise StorageNotFoundError(f"no model at {source}")
    load_model(ref, "cpu")  # refuse broken bytes now, not in an actor after the data is read
    logger.info("model %s: %s program, sha256 %s", source, ref.kind, ref.identity["sha256"][:12])
    return ref
