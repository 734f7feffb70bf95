"""Progress: a bar on a terminal, one plain line per interval per stage otherwise."""

from __future__ import annotations

import io
import re

import pytest

from abs_ray.console import NULL_PROGRESS, Progress, ProgressBoard, ProgressSink, setup_logging
from abs_ray.console.progress import default_interval
from abs_ray.errors import ConfigError

LINE = re.compile(
    r"INFO abs_ray\.progress: (?P<name>\w+): (?P<n>\d+)/(?P<total>\d+) \((?P<pct>\d+) %\) "
    r"(?P<rate>[\d.]+)/s ETA (?P<eta>.+)$"
)


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_redirected_one_line_per_interval_per_stage(clock):
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    board = ProgressBoard(interval=10, clock=clock)
    board.set_total("detect", 400)
    board.set_total("inpaint", 400)
    for _ in range(80):  # 80 s: 4 images/s through both stages, one update a second
        clock.advance(1)
        board.add("detect", 4)
        board.add("inpaint", 4)
    board.close()
    lines = _lines(out)
    assert not any("\x1b[" in line for line in lines)
    progress_lines = [m for m in map(LINE.search, lines) if m]
    for stage in ("detect", "inpaint"):
        mine = [m for m in progress_lines if m["name"] == stage]
        # t = 10, 20, ..., 80: one line per interval, none in between.
        assert [int(m["n"]) for m in mine] == [40 * k for k in range(1, 9)]
        assert all(float(m["rate"]) == pytest.approx(4.0) for m in mine)
        assert mine[0]["eta"] == "1 min 30 s"  # (400 - 40) / 4
        assert mine[0]["pct"] == "10"
    done = [line for line in lines if "done in" in line]
    assert len(done) == 2
    assert done[0].endswith("detect: 320/400 (80 %) done in 1 min 20 s, 4/s")
    assert len(lines) == 2 * 8 + 2


def test_no_line_while_nothing_moves(clock):
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    p = Progress("write", total=None, interval=5, clock=clock)
    for _ in range(12):
        clock.advance(5)
        p.tick()
    assert out.getvalue() == ""
    p.update(7)
    clock.advance(5)
    p.tick()
    assert _lines(out)[-1].endswith("write: 7 0.117/s")  # 7 in 65 s, no total: no ETA


def test_rate_follows_the_current_pace(clock):
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    p = Progress("train", total=1000, interval=10, clock=clock)
    for _ in range(60):  # slow start: 1/s for a minute
        clock.advance(1)
        p.update(1)
    for _ in range(60):  # then 10/s
        clock.advance(1)
        p.update(10)
    assert p.rate() == pytest.approx(10.0)
    last = LINE.search(_lines(out)[-1])
    assert float(last["rate"]) == pytest.approx(10.0)
    assert last["eta"] == "34 s"  # (1000 - 660) / 10


def test_unit_and_failure(clock):
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    with pytest.raises(RuntimeError), Progress("decode", 10, unit="img", clock=clock) as p:
        clock.advance(2)
        p.update(4)
        raise RuntimeError("boom")
    assert _lines(out)[-1].endswith("decode: 4/10 (40 %) stopped in 2 s, 2 img/s")


def test_terminal_draws_a_bar(make_tty):
    setup_logging(stream=io.StringIO(), ray=False)
    tty = make_tty()
    with Progress("disentangle", total=20, stream=tty) as p:
        assert p.mode == "bar"
        for _ in range(4):
            p.update(5)
    text = tty.getvalue()
    assert "disentangle" in text and "20/20" in text and "100%" in text
    assert re.search(r"\|[#█]{10}\|", text)  # the bar itself (ASCII on a non-UTF-8 stream)
    assert "\r" in text  # redrawn in place, not one line per update


def test_log_lines_print_above_a_live_bar(make_tty):
    tty = make_tty()
    setup_logging(stream=tty, ray=False)
    import logging

    with Progress("epochs", total=3, stream=tty) as p:
        p.update(1)
        logging.getLogger("abs_ray.x").info("epoch 0: loss 0.5")
        p.update(2)
    assert "epoch 0: loss 0.5" in tty.getvalue()


def test_quiet_shows_no_progress(clock, make_tty):
    out = io.StringIO()
    setup_logging(quiet=1, stream=out, ray=False)
    p = Progress("detect", total=10, interval=1, clock=clock, stream=make_tty())
    assert p.mode == "off"
    clock.advance(5)
    p.update(10)
    p.close()
    assert out.getvalue() == ""


def test_board_is_a_sink_and_ignores_a_finished_stage(clock):
    board = ProgressBoard(mode="off", clock=clock)
    assert isinstance(board, ProgressSink) and isinstance(NULL_PROGRESS, ProgressSink)
    board.add("a", 2)
    board.finish("a")
    board.add("a", 5)
    board.set_total("a", 99)
    assert (board["a"].n, board["a"].total, board["a"].closed) == (2, None, True)
    assert board.stages == ["a"]
    NULL_PROGRESS.add("a", 3)  # does nothing, raises nothing


def test_bad_arguments(monkeypatch):
    with pytest.raises(ConfigError, match="total"):
        Progress("x", total=-1)
    with pytest.raises(ConfigError, match="interval"):
        Progress("x", interval=0)
    with pytest.raises(ConfigError, match="mode"):
        Progress("x", mode="fancy")
    monkeypatch.setenv("ABS_RAY_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ConfigError, match="ABS_RAY_PROGRESS_INTERVAL"):
        default_interval()
    monkeypatch.setenv("ABS_RAY_PROGRESS_INTERVAL", "2.5")
    assert default_interval() == 2.5


def test_a_finished_count_is_said_once(clock):
    """A periodic "320/320 (100 %) ... ETA 0.0 s" line right before the closing "done in"
    line said the same thing twice, for every stage of every redirected run."""
    out = io.StringIO()
    setup_logging(stream=out, ray=False)
    p = Progress("load", total=8, interval=5, clock=clock)
    for _ in range(4):
        clock.advance(5)
        p.update(2)
    clock.advance(5)
    p.close()
    lines = _lines(out)
    assert [line.split("load: ", 1)[1].split(" (")[0] for line in lines] == [
        "2/8",
        "4/8",
        "6/8",
        "8/8",
    ]
    assert lines[-1].endswith("done in 25 s, 0.32/s") and sum("8/8" in x for x in lines) == 1
