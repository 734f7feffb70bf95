"""bench/report.py: the quality plots' titles fit inside the figure."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_report"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_report", None)


def _result(mode: str, ablations: dict | None = None) -> dict:
    methods = {
        m: {"worst_group": {"mean": 0.6, "std": 0.05}, "accuracy": {"mean": 0.8, "std": 0.02}}
        for m in ("erm", "erm_aug", "abs", "oracle")
    }
    return {"mode": mode, "main": methods, "ablations": ablations or {}}


def _texts_outside(fig) -> list[str]:
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    titles = [fig._suptitle] + [ax.title for ax in fig.axes if ax.get_visible()]
    out = []
    for t in titles:
        if t is None or not t.get_text():
            continue
        e = t.get_window_extent(renderer)
        if e.x0 < box.x0 - 0.5 or e.x1 > box.x1 + 0.5 or e.y1 > box.y1 + 0.5:
            out.append(t.get_text())
    return out


@pytest.mark.parametrize(
    "result",
    [
        _result("small + size=224 grid=16 detector_seconds=720 bird_split=shared"),
        _result("small", {"swap_prob": {"0.5": {}, "1.0": {}}}),
        _result("full + " + " ".join(f"setting_{i}=value_{i}" for i in range(12))),
    ],
    ids=["one-panel-long-mode", "two-panels", "very-long-mode"],
)
def test_quality_titles_fit_the_figure(report, result):
    fig = report.quality_figure(result)
    assert _texts_outside(fig) == []


def test_committed_quality_results_plot_with_titles_inside(report):
    files = sorted((REPO / "bench" / "results").glob("quality*.json"))
    assert files
    for f in files:
        fig = report.quality_figure(json.loads(f.read_text()))
        assert _texts_outside(fig) == [], f.name
