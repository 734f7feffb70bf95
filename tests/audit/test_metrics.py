"""Accuracy per variant and class, and the paired bootstrap of bg_gap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from abs_ray.audit.metrics import audit_metrics, bg_gap, variant_accuracy
from abs_ray.audit.variants import VARIANTS
from abs_ray.errors import ConfigError


def test_accuracy_counts_only_valid_rows_per_class():
    out = variant_accuracy(
        np.array([1, 1, 0, 0], bool), np.array([1, 1, 1, 0], bool), np.array([0, 1, 1, 1])
    )
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert (out["n"], out["n_invalid"]) == (3, 1)
    assert out["per_class"]["1"] == {"accuracy": 0.5, "n": 2}
    assert math.isnan(variant_accuracy([True], [False], [0])["accuracy"])


def test_bg_gap_is_the_paired_difference_with_a_reproducible_interval():
    rng = np.random.default_rng(0)
    same, rand = rng.random(200) < 0.9, rng.random(200) < 0.6
    valid = np.ones(200, bool)
    a = bg_gap(same, rand, valid, n_boot=500, seed=3)
    assert a["gap"] == pytest.approx(same.mean() - rand.mean())
    assert a["ci_low"] < a["gap"] < a["ci_high"]
    assert a == bg_gap(same, rand, valid, n_boot=500, seed=3)
    assert a["ci_low"] != bg_gap(same, rand, valid, n_boot=500, seed=4)["ci_low"]
    # Paired: identical columns give a zero-width interval at 0 whatever the rows.
    tie = bg_gap(same, same, valid, n_boot=100)
    assert (tie["gap"], tie["ci_low"], tie["ci_high"]) == (0.0, 0.0, 0.0)
    assert math.isnan(bg_gap(same, rand, ~valid)["gap"])


def test_bad_metric_inputs_raise_typed_errors():
    with pytest.raises(ConfigError, match="n_boot"):
        bg_gap([True], [True], [True], n_boot=0)
    with pytest.raises(ConfigError, match="of 1 rows"):
        bg_gap([True], [True, False], [True])
    with pytest.raises(ConfigError, match="lack column"):
        audit_metrics({"label": [0], "split": ["val"]}, ["val"], 2)


def test_audit_metrics_per_split():
    n = 6
    rows = {"label": np.array([0, 1] * 3), "split": np.array(["val"] * 4 + ["test"] * 2)}
    for v in VARIANTS:
        rows[f"pred_{v}"] = rows["label"] if v != "mixed_rand" else 1 - rows["label"]
        rows[f"valid_{v}"] = np.ones(n, bool)
    out = audit_metrics(rows, ["val", "test"], 2, n_boot=50)
    assert out["val"]["n"] == 4 and out["test"]["n"] == 2 and out["val"]["chance"] == 0.5
    assert out["val"]["variants"]["mixed_rand"]["accuracy"] == 0.0
    assert out["test"]["bg_gap"]["gap"] == 1.0
    with pytest.raises(ConfigError, match="no rows"):
        audit_metrics(rows, ["train"], 2)
