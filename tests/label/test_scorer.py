"""The scoring thread: how many unlabelled images it keeps scored, swaps, failures, stopping."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.label.predictor import Predictor
from abs_ray.label.scorer import Scorer

GRID, SIZE = 2, 8


class Logits(nn.Module):
    """Logits ``value`` on every patch; raises on its first ``fail`` calls."""

    image_size = SIZE

    def __init__(self, value: float, fail: int = 0) -> None:
        super().__init__()
        self.value, self.fail, self.calls = value, fail, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls <= self.fail:
            raise RuntimeError("scoring broke")
        return torch.full((x.shape[0], GRID, GRID), self.value)


def _until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture
def parts():
    """``(predictor, pending ids (a list the test edits), make_scorer)``; scorers are closed."""
    predictor = Predictor(lambda image_id: np.zeros((SIZE, SIZE, 3), np.uint8), GRID)
    pending = [f"img{i:02d}" for i in range(12)]
    scorers = []

    def make(score_max: int, score_batch: int = 2) -> Scorer:
        scorer = Scorer(predictor, lambda: list(pending), score_max, score_batch)
        scorers.append(scorer)
        return scorer

    yield predictor, pending, make
    for scorer in scorers:
        scorer.close(timeout=10)


def test_keeps_score_max_unlabelled_images_scored_as_labels_come(parts):
    predictor, pending, make = parts
    predictor.use(Logits(1.0), "detector", {}, tight=0.5)
    scorer = make(score_max=5)
    assert scorer.progress() == (0, 5) and scorer.next_batch() == pending[:2]
    scorer.start()
    _until(lambda: scorer.progress() == (5, 5))
    assert set(predictor.scores()[1]) == set(pending[:5])
    del pending[:2]  # two of them get labelled: two more unlabelled images are scored
    scorer.wake()
    _until(lambda: scorer.progress() == (5, 5) and len(predictor.scores()[1]) == 7)
    assert set(predictor.scores()[1]) == {f"img{i:02d}" for i in range(7)}
    assert scorer.next_batch() == []


def test_a_swapped_in_detector_is_scored_afresh(parts):
    predictor, pending, make = parts
    predictor.use(Logits(4.0), "detector", {}, tight=0.5)
    scorer = make(score_max=4)
    scorer.start()
    _until(lambda: scorer.progress() == (4, 4))
    assert min(predictor.scores()[1].values()) > 0.4  # sure of every patch
    predictor.use(Logits(0.0), "detector", {}, tight=0.5)
    scorer.wake()
    _until(lambda: scorer.progress() == (4, 4))
    assert set(predictor.scores()[1].values()) == {0.0}  # the new model's coin flips


def test_nothing_is_scored_without_a_detector(parts):
    predictor, pending, make = parts
    scorer = make(score_max=5)
    assert scorer.progress() == (0, 0) and scorer.next_batch() == []
    predictor.use(Logits(1.0), "prior", {}, tight=0.5)
    assert scorer.progress() == (0, 0) and scorer.next_batch() == []
    with pytest.raises(ConfigError, match="score_batch >= 1"):
        make(score_max=5, score_batch=0)


def test_a_failing_pass_is_logged_and_scoring_goes_on(parts, caplog):
    predictor, pending, make = parts
    predictor.use(Logits(1.0, fail=1), "detector", {}, tight=0.5)
    scorer = make(score_max=2)
    with caplog.at_level(logging.ERROR, logger="abs_ray.label.scorer"):
        scorer.start()
        _until(lambda: "scoring 2 images failed" in caplog.text)
    assert scorer.alive and scorer.progress() == (0, 2)
    _until(lambda: scorer.progress() == (2, 2))  # it waits a few seconds, then tries again
    scorer.close(timeout=10)
    assert not scorer.alive
