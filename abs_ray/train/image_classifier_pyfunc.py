"""The MLflow pyfunc of a logged abs-ray classifier: image bytes in, class probabilities out.

This file travels with every logged model (MLflow "models from code") and is all the code
that loading one runs: it imports only the standard library, numpy, pandas, Pillow, torch and
mlflow, never ``abs_ray``, so a model loads wherever those are installed.

Input: a DataFrame with a column ``image`` holding one encoded image per row (PNG, JPEG,
WebP, BMP, ... anything Pillow opens), as ``bytes`` in Python, or as base64 text (the scoring
server of ``mlflow models serve`` decodes base64 for this binary column:
``{"dataframe_split": {"columns": ["image"], "data": [["iVBORw0..."]]}}``).

Output: a DataFrame, one row per image: ``prob_<class>`` for every class (float, summing to
1) and ``label``, the most probable class's name.

Each image is converted to RGB and resized to the training size with Pillow's bilinear
filter, exactly as the training data were, then goes through ``model.pt2`` (a
``torch.export`` program: ``(B, H, W, 3)`` uint8 → ``(B, K)`` probabilities, the classifier's
normalisation inside). Settings come from ``settings.json`` (``image_size``, ``class_names``,
``max_pixels``, ``batch_size``).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

INPUT_COLUMN = "image"


def _bad_input(message: str) -> MlflowException:
    # INVALID_PARAMETER_VALUE: the scoring server answers 400, not 500.
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _image_bytes(value: Any, row: int) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad_input(f"row {row}: `image` text is not base64") from None
    raise _bad_input(f"row {row}: `image` must be bytes or base64 text, got {type(value).__name__}")


def decode_image(data: bytes, size: int, max_pixels: int, row: int = 0) -> np.ndarray:
    """Encoded image → ``(size, size, 3)`` uint8 RGB (Pillow, bilinear, as in training).

    Raises:
        MlflowException: empty, not an image, too many pixels, or truncated (HTTP 400).
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise _bad_input(f"row {row}: empty image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise _bad_input(
                    f"row {row}: image has {img.width}x{img.height} pixels, more than the "
                    f"limit of {max_pixels}"
                )
            rgb = img.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except MlflowException:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise _bad_input(f"row {row}: not a readable image ({exc})") from None


class ImageClassifier(mlflow.pyfunc.PythonModel):
    """Pyfunc around the exported classifier (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        import torch

        with open(context.artifacts["settings"]) as f:
            self.settings = json.load(f)
        self.program = torch.export.load(context.artifacts["model"]).module()
        self.image_size = int(self.settings["image_size"])
        self.class_names = list(self.settings["class_names"])
        self.max_pixels = int(self.settings.get("max_pixels", 40_000_000))
        self.batch_size = int(self.settings.get("batch_size", 32))

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        import torch

        if not isinstance(model_input, pd.DataFrame) or INPUT_COLUMN not in model_input:
            raise _bad_input(f"input must be a DataFrame with an `{INPUT_COLUMN}` column")
        values = list(model_input[INPUT_COLUMN])
        pixels = [
            decode_image(_image_bytes(v, i), self.image_size, self.max_pixels, i)
            for i, v in enumerate(values)
        ]
        probs = []
        with torch.inference_mode():
            for start in range(0, len(pixels), self.batch_size):
                batch = torch.from_numpy(np.stack(pixels[start : start + self.batch_size]))
                probs.append(self.program(batch).float().numpy())
        k = len(self.class_names)
        p = np.concatenate(probs) if probs else np.zeros((0, k), dtype=np.float32)
        out = pd.DataFrame(
            {f"prob_{c}": p[:, j].astype(np.float64) for j, c in enumerate(self.class_names)}
        )
        out["label"] = [self.class_names[j] for j in p.argmax(axis=1)] if len(p) else []
        return out


mlflow.models.set_model(ImageClassifier())
