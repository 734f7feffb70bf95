"""The pre-fill model slot: confidence helpers, swaps during a forward pass, one pass at a time."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from abs_ray.errors import ConfigError, ImageDecodeError
from abs_ray.label.predictor import Predictor, least_confident, patch_confidence
from abs_ray.models.detector import create_detector

GRID, SIZE = 4, 16


class Constant(nn.Module):
    """Logits ``value`` on every patch; ``forward`` waits for ``gate`` when one is set."""

    image_size = SIZE

    def __init__(self, value: float, gate: threading.Event | None = None) -> None:
        super().__init__()
        self.value, self.gate = value, gate
        self.entered = threading.Event()
        self.active = self.most_active = 0
        self._count = threading.Lock()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, SIZE, SIZE) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
        with self._count:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        time.sleep(0.02)
        with self._count:
            self.active -= 1
        return torch.full((x.shape[0], GRID, GRID), self.value)


def _read(image_id: str) -> np.ndarray:
    if image_id.startswith("bad"):
        raise ImageDecodeError(f"{image_id} is not an image")
    return np.full((24, 32, 3), 100, np.uint8)


def test_selection_helpers():
    prob = torch.tensor([[[0.5, 0.6]], [[0.0, 1.0]], [[0.9, 0.1]]])
    assert patch_confidence(prob).tolist() == pytest.approx([0.05, 0.5, 0.4])
    with pytest.raises(ConfigError, match=r"\(N, G, G\)"):
        patch_confidence(torch.zeros(2, 2))
    scores = dict(zip("abc", patch_confidence(prob).tolist(), strict=True))
    assert least_confident(scores, ["c", "b", "a"]) == "a"
    assert least_confident(scores, ["c", "b", "x"]) == "c"
    assert least_confident(scores, ["x"]) is None


def test_predictions_are_cached_per_model_and_unreadable_images_left_out():
    predictor = Predictor(_read, GRID)
    assert predictor.predict(["a"]) == {} and predictor.kind == "none"  # no model yet
    predictor.use(Constant(2.0), "detector", {"name": "c"}, tight=0.5)
    out = predictor.predict(["a", "bad1", "b"])
    assert set(out) == {"a", "b"} and out["a"].shape == (GRID, GRID)
    assert out["a"].min().item() == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item())
    kind, conf = predictor.scores()
    assert kind == "detector" and set(conf) == {"a", "b"}
    kind, prob, tight = predictor.cached("a")
    assert (kind, tight) == ("detector", 0.5) and torch.equal(prob, out["a"])
    assert predictor.cached("bad1")[1] is None
    assert predictor.describe() == {"kind": "detector", "name": "c"}
    predictor.use(Constant(-1.0), "prior", {}, tight=0.5)  # a swap empties the cache
    assert predictor.scores() == ("prior", {}) and predictor.cached("a")[1] is None
    with pytest.raises(ConfigError, match="kind must be one of"):
        predictor.use(Constant(0.0), "none", {}, tight=0.5)


def test_a_swap_during_a_forward_pass_does_not_cache_the_old_models_answer():
    predictor = Predictor(_read, GRID)
    gate = threading.Event()
    old = Constant(3.0, gate)
    predictor.use(old, "detector", {"name": "old"}, tight=0.5)
    answers = {}
    scoring = threading.Thread(target=lambda: answers.update(predictor.predict(["a", "b"])))
    scoring.start()
    assert old.entered.wait(30)  # the old model is mid-pass
    predictor.use(Constant(-3.0), "detector", {"name": "new"}, tight=0.5)
    gate.set()
    scoring.join(30)
    assert answers["a"].mean().item() > 0.9  # the caller gets the old model's answer ...
    assert predictor.scores() == ("detector", {})  # ... but it is not cached for the new one
    assert predictor.cached("a")[1] is None
    fresh = predictor.predict(["a"])
    assert fresh["a"].mean().item() < 0.1 and predictor.cached("a")[1] is not None


def test_one_forward_pass_at_a_time():
    predictor = Predictor(_read, GRID)
    model = Constant(0.0)
    predictor.use(model, "detector", {}, tight=0.5)
    threads = [threading.Thread(target=predictor.predict, args=([f"i{k}"],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(predictor.scores()[1]) == 4 and model.most_active == 1


def test_a_detector_with_another_grid_is_refused():
    predictor = Predictor(_read, grid=8)
    det = create_detector("test_tiny", grid=4, image_size=64, weights=None)
    with pytest.raises(ConfigError, match="has grid 4x4, the labels use 8x8"):
        predictor.use_detector(det, "s3://b/det.pt", "argument")
    assert predictor.kind == "none"
    predictor = Predictor(_read, grid=4)
    predictor.use_detector(det, "s3://b/det.pt", "argument", heldout_balanced_patch_accuracy=0.7)
    info = predictor.describe()
    assert (info["kind"], info["checkpoint"], info["source"]) == (
        "detector",
        "s3://b/det.pt",
        "argument",
    )
    assert info["heldout_balanced_patch_accuracy"] == 0.7 and info["image_size"] == 64
    assert predictor.predict(["a"])["a"].shape == (4, 4)
