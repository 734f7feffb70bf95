"""Hand-made disentangled data whose class is in the foreground's colour and, in val, also
in the background's; and two TorchScript models that each read only one of them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from abs_ray.data.layouts import Sample
from abs_ray.train import write_disentangled_from_samples

SIZE = 32
#: Background colours per place (never pure red or green: the fg reader ignores them).
PLACE_COLOURS = {0: (30, 30, 160), 1: (160, 160, 30)}
#: Foreground colours per class.
CLASS_COLOURS = {0: (230, 20, 20), 1: (20, 230, 20)}


def make_sample(split: str, index: int, y: int, place: int, rng: np.random.Generator) -> Sample:
    """A 10 px square of the class's colour on a noisy background of the place's colour;
    the 4 px border (so the corners) is always background."""
    noise = rng.integers(-10, 11, (SIZE, SIZE, 3))
    background = np.clip(np.array(PLACE_COLOURS[place]) + noise, 0, 255).astype(np.uint8)
    x, y0 = rng.integers(4, SIZE - 14, 2)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y0 : y0 + 10, x : x + 10] = 255
    image = np.where(mask[..., None] == 255, np.array(CLASS_COLOURS[y], np.uint8), background)
    return Sample(f"{split}_{index:03d}", split, y, place, image.astype(np.uint8), mask, background)


def make_samples(n_val_per_class: int = 8, n_test: int = 8, seed: int = 0) -> list[Sample]:
    """train: 4 rows; val: place == class (backgrounds predict the class); test: the four
    groups equally (backgrounds say nothing)."""
    rng = np.random.default_rng(seed)
    out = [make_sample("train", i, i % 2, i % 2, rng) for i in range(4)]
    out += [make_sample("val", i, i % 2, i % 2, rng) for i in range(2 * n_val_per_class)]
    out += [make_sample("test", i, i % 2, (i // 2) % 2, rng) for i in range(n_test)]
    return out


class BackgroundReader(nn.Module):
    """Class from the mean colour of the four 2 x 2 corners: blue → 0, yellow → 1."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float()
        corners = torch.cat(
            [x[:, :2, :2], x[:, :2, -2:], x[:, -2:, :2], x[:, -2:, -2:]], dim=1
        ).mean(dim=(1, 2))
        blue = (corners[:, 2] - corners[:, 0]) / 255.0
        return torch.stack([blue, -blue], dim=1).softmax(dim=1)


class ForegroundReader(nn.Module):
    """Class from counting pure red (0) and pure green (1) pixels, wherever they are."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.int()
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        red = ((r > 200) & (g < 60) & (b < 60)).sum(dim=(1, 2))
        green = ((g > 200) & (r < 60) & (b < 60)).sum(dim=(1, 2))
        return torch.stack([red, green], dim=1).float()


@pytest.fixture(scope="session")
def samples():
    """:func:`make_samples` with its defaults."""
    return make_samples()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory, samples):
    """A local disentangled data set of :func:`make_samples`."""
    out = tmp_path_factory.mktemp("audit-data")
    write_disentangled_from_samples(samples, str(out))
    return str(out)


@pytest.fixture(scope="session")
def readers(tmp_path_factory):
    """``{"bg": path, "fg": path}`` of the two readers as TorchScript files."""
    folder = tmp_path_factory.mktemp("audit-models")
    paths = {}
    for name, module in (("bg", BackgroundReader()), ("fg", ForegroundReader())):
        path = folder / f"{name}_reader.pt"
        torch.jit.save(torch.jit.script(module.eval()), str(path))
        paths[name] = str(path)
    return paths


def tiny_classifier():
    """The tiny test classifier, seeded."""
    from abs_ray.models.classifier import create_classifier

    torch.manual_seed(0)
    return create_classifier("test_tiny", num_classes=2, weights=None).eval()


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    """A sqlite MLflow store with one run holding a logged tiny classifier (registered), and a
    training run folder whose report.json names it."""
    import mlflow

    from abs_ray.train.mlflow_model import log_classifier, register_model

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    exp = mlflow.create_experiment("clf", artifact_location=str(root / "mlartifacts"))
    model = tiny_classifier()
    with mlflow.start_run(experiment_id=exp) as run:
        info = log_classifier(model, SIZE, class_names=["a", "b"])
    register_model(info.model_uri, "audit-tiny")
    folder = root / "train" / "abs-test_tiny-s0"
    folder.mkdir(parents=True)
    report = {
        "run_name": "abs-test_tiny-s0",
        "method": "abs",
        "mlflow": {"tracking_uri": uri, "run_id": run.info.run_id, "model_uri": info.model_uri},
    }
    (folder / "report.json").write_text(json.dumps(report))
    return {
        "uri": uri,
        "run_id": run.info.run_id,
        "model": model,
        "folder": str(folder),
        "model_uri": info.model_uri,
    }
