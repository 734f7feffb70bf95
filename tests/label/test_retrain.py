"""Retraining rounds without HTTP: the hold-out split, latest.json, and the round thread."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest

from abs_ray.errors import ConfigError
from abs_ray.io import write_text
from abs_ray.label import LabelConfig, NotEnoughLabelsError, TrainingBusyError
from abs_ray.label.retrain import LatestRound, Retrainer, RoundResult, holdout_split, read_latest
from abs_ray.models.detector import create_detector


def test_holdout_is_stable_as_labels_grow():
    ids = [f"images/{i:04d}.png" for i in range(300)]
    _, held_100 = holdout_split(ids[:100], 0.2, seed=1)
    train_300, held_300 = holdout_split(ids, 0.2, seed=1)
    assert set(held_100) <= set(held_300)  # once held out, always held out
    assert 0.1 < len(held_300) / 300 < 0.3 and not set(train_300) & set(held_300)
    assert holdout_split(ids[:3], 0.2)[1] and len(holdout_split(ids[:3], 0.49)[0]) == 2
    assert holdout_split(ids, 0.2, seed=2)[1] != held_300
    with pytest.raises(ConfigError, match="need at least 3 distinct ids"):
        holdout_split(ids[:2], 0.2)


def test_latest_round_is_read_back_and_a_bad_record_refused(tmp_path):
    out = str(tmp_path / "det")
    assert read_latest(out) is None
    record = {"round": 3, "checkpoint": f"{out}/round-0003/detector.pt", "heldout": {}}
    write_text(f"{out}/latest.json", json.dumps(record))
    assert read_latest(out) == LatestRound(3, record["checkpoint"], None)
    record["heldout"] = {"balanced_patch_accuracy": 0.8}
    write_text(f"{out}/latest.json", json.dumps(record))
    assert read_latest(out).heldout_balanced_patch_accuracy == 0.8
    write_text(f"{out}/latest.json", '{"checkpoint": "x"}')
    with pytest.raises(ConfigError, match="is not a record of the latest retraining round"):
        read_latest(out)


class StandIn:
    """A round that waits for ``gate``, then returns a result or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.gate, self.error = threading.Event(), error
        self.calls: list[tuple[int, dict[str, str]]] = []

    def __call__(self, cfg, pool, k, masks, s3) -> RoundResult:
        self.calls.append((k, dict(masks)))
        assert self.gate.wait(30)
        if self.error is not None:
            raise self.error
        det = create_detector("test_tiny", grid=cfg.grid, image_size=64, weights=None)
        return RoundResult(k, det, f"{cfg.detector_out}/round-{k:04d}/detector.pt", 4, 1, 0.7, 0.9)


def _wait_done(retrainer: Retrainer) -> dict:
    deadline = time.monotonic() + 30
    while (status := retrainer.status())["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return status


@pytest.fixture
def cfg(tmp_path) -> LabelConfig:
    return LabelConfig(data="d", labels=str(tmp_path / "l.csv"), grid=8, min_train_labels=5)


MASKS = {f"img{i}": "0" * 64 for i in range(5)}


def test_one_round_at_a_time_in_the_background(cfg):
    run, done = StandIn(), []
    retrainer = Retrainer(cfg, pd.DataFrame(), done.append, last_round=2, run=run)
    assert retrainer.status()["state"] == "idle" and retrainer.status()["round"] == 2
    with pytest.raises(
        NotEnoughLabelsError, match="need at least 5 labelled images to retrain, have 4"
    ):
        retrainer.start(dict(list(MASKS.items())[:4]))
    started = retrainer.start(MASKS)
    assert (started["state"], started["round"], started["num_labels"]) == ("running", 3, 5)
    assert started["uri"] == f"{cfg.detector_out}/round-0003"
    with pytest.raises(TrainingBusyError, match="round 3 is still running"):
        retrainer.start(MASKS)  # the round waits for its gate: it is running
    assert retrainer.status()["state"] == "running" and not done
    run.gate.set()
    status = _wait_done(retrainer)
    assert status["state"] == "done" and status["error"] is None
    assert (status["num_train"], status["num_heldout"]) == (4, 1)
    assert status["heldout_balanced_patch_accuracy"] == 0.7
    assert status["val_balanced_patch_accuracy"] == 0.9
    assert [r.round for r in done] == [3] and run.calls == [(3, MASKS)]
    assert retrainer.start(MASKS)["round"] == 4  # the next round may start
    retrainer.join(30)


def test_a_failed_round_is_reported_and_the_next_one_can_start(cfg):
    run = StandIn(error=RuntimeError("out of memory"))
    run.gate.set()
    retrainer = Retrainer(cfg, pd.DataFrame(), lambda result: None, run=run)
    retrainer.start(MASKS)
    status = _wait_done(retrainer)
    assert status["state"] == "failed" and status["error"] == "RuntimeError: out of memory"
    assert status["round"] == 1 and status["seconds"] >= 0
    # a callback that fails (e.g. the detector cannot be used) fails the round as well
    ready = StandIn()
    ready.gate.set()
    refusing = Retrainer(cfg, pd.DataFrame(), _refuse, run=ready)
    refusing.start(MASKS)
    assert _wait_done(refusing)["error"] == "ConfigError: grid differs"
    assert retrainer.start(MASKS)["round"] == 2
    retrainer.join(30)


def _refuse(result: RoundResult) -> None:
    raise ConfigError("grid differs")
