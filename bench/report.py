"""Turn ``bench/results/*.json`` into ``bench/results/README.md`` and PNG plots.

Reads whatever results exist (a suite without a result file is listed as "not run"; missing
keys show as "—") and writes:

- ``README.md``: a summary table (each speed figure against its goal, with machine, device,
  date and code version), then one section per suite;
- ``speed.png``: the measured speed ratios against their goals, one panel per suite;
- ``quality.png`` (only when ``quality.json`` exists): worst-group accuracy mean ± std per
  method, and one panel per ablation.

Usage:
    python bench/report.py [--results bench/results]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench.report")

DASH = "—"
METHOD_ORDER = ("erm", "erm_aug", "abs", "oracle")
PARTS_ORDER = (
    "uint8_to_float",
    "sample_swap_params",
    "gather_backgrounds",
    "warp_foreground",
    "paste_foregrounds",
    "swap_backgrounds",
    "grid_sample_alone",
)


def get(d: Any, *keys: str | int, default: Any = None) -> Any:
    """``d[k0][k1]...`` or ``default`` when any level is missing or of the wrong type."""
    for key in keys:
        try:
            d = d[key]
        except (KeyError, IndexError, TypeError):
            return default
    return d


def fmt(x: Any, digits: int = 2, suffix: str = "") -> str:
    if isinstance(x, bool) or x is None:
        return DASH if x is None else str(x)
    if isinstance(x, int):
        return f"{x}{suffix}"
    if isinstance(x, float):
        return f"{x:.{digits}f}{suffix}" if math.isfinite(x) else DASH
    return str(x)


def mean_std(entry: Any, digits: int = 3) -> str:
    mean, std = get(entry, "mean"), get(entry, "std")
    if mean is None:
        return DASH
    values = get(entry, "values")
    if std is None or (isinstance(values, list) and len(values) == 1):  # one seed: no spread
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def load_results(folder: Path) -> dict[str, dict]:
    """Every ``*.json`` in ``folder`` by stem; unreadable files are skipped with a warning."""
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            logger.warning("skipping %s: %s", path, err)
            continue
        if isinstance(data, dict):
            data.setdefault(
                "when",
                time.strftime("%Y-%m-%dT%H:%M:%SZ (file time)", time.gmtime(path.stat().st_mtime)),
            )
            out[path.stem] = data
    return out


def machine_line(r: dict, device: str | None = None) -> str:
    m = r.get("machine") or {}
    parts = [str(m.get("cpu", DASH))]
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if m.get("gpu"):
        parts.append(str(m["gpu"]))
    text = ", ".join(parts)
    return f"{text}; ran on {device}" if device else text


# --- speed suites: headline ratio against its goal ----------------------------------------


@dataclass
class Speed:
    """One speed suite: where its file is, how to read its headline and its bars."""

    key: str  # results file stem
    title: str
    script: str
    goal: float
    higher_is_better: bool
    what: str  # what the ratio is
    headline: Callable[[dict], float | None]
    bars: Callable[[dict], list[tuple[str, float, bool]]]  # (label, ratio, goal applies)
    device: Callable[[dict], str | None]


def _composite_bars(r: dict) -> list[tuple[str, float, bool]]:
    head = str(get(r, "headline", "torch_threads", default=1))
    return [
        (f"{t} thread{'s' if t != '1' else ''}", get(v, "ratio"), t == head)
        for t, v in sorted((get(r, "by_threads") or {}).items(), key=lambda kv: int(kv[0]))
        if get(v, "ratio") is not None
    ]


def _pipeline_bars(r: dict) -> list[tuple[str, float, bool]]:
    return [
        (f"{c} CPU{'s' if c != '1' else ''}", get(v, "ratio_vs_loop"), c == "2")
        for c, v in sorted((get(r, "ray") or {}).items(), key=lambda kv: int(kv[0]))
        if get(v, "ratio_vs_loop") is not None
    ]


def _train_ratio(setup: dict) -> float | None:
    # On a CPU the process-CPU-time ratio is the reliable one on a shared box (train_step.py).
    clock = "cpu" if get(setup, "cpu") else "wall"
    return get(setup, clock, "ratio_abs_over_erm_median")


def _train_bars(r: dict) -> list[tuple[str, float, bool]]:
    bars = []
    for s in get(r, "results") or []:
        if _train_ratio(s) is not None:
            bars.append((f"{get(s, 'backbone', default='?')}", _train_ratio(s), True))
    return bars


def _train_headline(r: dict) -> float | None:
    ratios = [v for _, v, _ in _train_bars(r)]
    return max(ratios) if ratios else None  # the worst setup


def _serve_bars(r: dict) -> list[tuple[str, float, bool]]:
    speedup = get(r, "speedup_on_vs_off") or {}
    return [
        (f"{c} client{'s' if c != '1' else ''}", v, c == "32")
        for c, v in sorted(speedup.items(), key=lambda kv: int(kv[0]))
    ]


SPEED = [
    Speed(
        key="composite",
        title="Compositing",
        script="bench/composite.py",
        goal=10.0,
        higher_is_better=True,
        what="batched swap images/s ÷ per-sample PIL loop images/s (224², batch 64)",
        headline=lambda r: get(r, "headline", "ratio"),
        bars=_composite_bars,
        device=lambda r: get(r, "config", "device_name") or get(r, "config", "device"),
    ),
    Speed(
        key="pipeline",
        title="Pipeline (disentangle)",
        script="bench/pipeline.py",
        goal=1.6,
        higher_is_better=True,
        what="Ray Data images/s ÷ plain loop images/s at 2 CPUs",
        headline=lambda r: get(r, "ray", "2", "ratio_vs_loop"),
        bars=_pipeline_bars,
        device=lambda r: "cpu",
    ),
    Speed(
        key="train_step",
        title="Training step",
        script="bench/train_step.py",
        goal=1.15,
        higher_is_better=False,
        what="abs (swap) step time ÷ erm step time (worst setup)",
        headline=_train_headline,
        bars=_train_bars,
        device=lambda r: get(r, "results", 0, "device"),
    ),
    Speed(
        key="serve",
        title="Service batching",
        script="bench/serve_load.py",
        goal=2.0,
        higher_is_better=True,
        what="requests/s with dynamic batching ÷ without, 32 clients",
        headline=lambda r: get(r, "speedup_on_vs_off", "32"),
        bars=_serve_bars,
        device=lambda r: get(r, "device"),
    ),
]


def goal_text(s: Speed) -> str:
    return f"{'≥' if s.higher_is_better else '≤'} {s.goal:g}×"


def met(s: Speed, value: float | None) -> str:
    if value is None:
        return DASH
    ok = value >= s.goal if s.higher_is_better else value <= s.goal
    return "yes" if ok else "**no**"


def summary_section(results: dict[str, dict]) -> list[str]:
    rows = []
    for s in SPEED:
        r = results.get(s.key)
        if r is None:
            rows.append([s.title, s.what, "not run", goal_text(s), DASH, DASH, DASH, DASH])
            continue
        value = s.headline(r)
        rows.append(
            [
                s.title,
                s.what,
                fmt(value, 2, "×") if value is not None else DASH,
                goal_text(s),
                met(s, value),
                machine_line(r, s.device(r)),
                str(r.get("when", DASH))[:10],
                r.get("code_version", DASH),
            ]
        )
    return ["## Speed: headline ratios", ""] + table(
        ["suite", "ratio", "measured", "goal", "met", "machine", "date", "code"], rows
    )


def composite_section(r: dict) -> list[str]:
    lines = [
        f"Per-sample PIL/torchvision loop vs `abs_ray` batched swap (`swap_batch`), "
        f"{get(r, 'config', 'size', default='?')}², batch {get(r, 'config', 'batch', default='?')}, "
        f"{get(r, 'config', 'rounds', default='?')} rounds per side ({r.get('mode', '?')} mode), "
        f"device `{get(r, 'config', 'device', default='?')}`. Same parameters on both sides; "
        f"mean |difference| of the outputs {fmt(get(r, 'check', 'mean_abs_diff'), 5)} "
        f"(an untransformed paste: {fmt(get(r, 'check', 'mean_abs_diff_vs_untransformed_paste'), 5)}).",
        "",
    ]
    rows = []
    for t, v in sorted((get(r, "by_threads") or {}).items(), key=lambda kv: int(kv[0])):
        rows.append(
            [
                t,
                fmt(get(v, "baseline", "images_per_s"), 1),
                fmt(get(v, "abs_ray", "images_per_s"), 1),
                fmt(get(v, "ratio"), 2, "×"),
            ]
        )
    lines += table(["torch threads", "loop images/s", "abs_ray images/s", "ratio"], rows)
    parts = get(
        r, "by_threads", str(get(r, "headline", "torch_threads", default=1)), "abs_ray_parts_ms"
    )
    if parts:
        lines += [
            "Where the batched side's time goes (ms per batch, each part timed alone; "
            "`paste_foregrounds` includes `warp_foreground`; `grid_sample_alone` is torch's "
            "bilinear resampling of the batch by itself, the kernel any batched warp runs):",
            "",
        ]
        order = [k for k in PARTS_ORDER if k in parts] + [k for k in parts if k not in PARTS_ORDER]
        lines += table(order, [[fmt(parts[k], 1) for k in order]])
        budget = get(r, "by_threads", str(get(r, "headline", "torch_threads", default=1)),
                     "goal_ms_per_batch")  # fmt: skip
        if budget is not None:
            lines += [
                f"The goal allows {fmt(budget, 1)} ms per batch against this loop.",
                "",
            ]
    return lines


def pipeline_section(r: dict) -> list[str]:
    lines = [
        f"{r.get('images', '?')} images at {r.get('size', '?')}², inpainter "
        f"`{r.get('inpainter', '?')}`, masks: {r.get('mask_source', '?')}.",
        "",
    ]
    rows = [
        [
            "plain loop",
            fmt(get(r, "loop", "images_per_s")),
            fmt(get(r, "loop", "seconds"), 1),
            "1.00×",
        ]
    ]
    for c, v in sorted((get(r, "ray") or {}).items(), key=lambda kv: int(kv[0])):
        rows.append(
            [
                f"Ray Data, {c} CPU{'s' if c != '1' else ''}",
                fmt(get(v, "images_per_s")),
                fmt(get(v, "seconds"), 1),
                fmt(get(v, "ratio_vs_loop"), 2, "×"),
            ]
        )
    return lines + table(["run", "images/s", "seconds", "vs loop"], rows)


def train_section(r: dict) -> list[str]:
    rows = []
    for s in get(r, "results") or []:
        clock = "cpu" if get(s, "cpu") else "wall"
        rows.append(
            [
                get(s, "backbone"),
                f"{get(s, 'image_size', default='?')}² × {get(s, 'batch', default='?')}",
                get(s, "device"),
                clock,
                fmt(get(s, clock, "median_s", "erm"), 3),
                fmt(get(s, clock, "median_s", "abs"), 3),
                fmt(get(s, clock, "median_s", "swap"), 3),
                fmt(get(s, clock, "ratio_abs_over_erm_median"), 3),
            ]
        )
    return [
        f"Median seconds per step, {get(r, 'results', 0, 'steps', default='?')} interleaved steps "
        f"each, torch threads {r.get('torch_threads', '?')}.",
        "",
    ] + table(
        ["backbone", "input", "device", "clock", "erm s", "abs s", "swap alone s", "abs/erm"], rows
    )


def serve_section(r: dict) -> list[str]:
    lines = [
        f"`{r.get('endpoint', '?')}`, {r.get('image_size', '?')}², "
        f"{r.get('requests_per_level', '?')} requests per level, masks: {r.get('mask_source', '?')}, "
        f"device `{r.get('device', '?')}`.",
        "",
    ]
    rows = []
    for mode in ("batching_on", "batching_off"):
        for level in get(r, "modes", mode, "levels") or []:
            rows.append(
                [
                    mode.replace("_", " "),
                    get(level, "clients"),
                    fmt(get(level, "req_per_s"), 1),
                    fmt(get(level, "p50_ms"), 0),
                    fmt(get(level, "p95_ms"), 0),
                    fmt(get(level, "mean_batch_size"), 2),
                ]
            )
    lines += table(["mode", "clients", "req/s", "p50 ms", "p95 ms", "mean batch"], rows)
    model = get(r, "model_only")
    if model:
        rates = ", ".join(
            f"batch {k}: {fmt(v, 1)} jobs/s" for k, v in (get(model, "jobs_per_s") or {}).items()
        )
        lines += [
            f"The model replica's work alone (no HTTP, device `{get(model, 'device', default='?')}`): "
            f"{rates or DASH}; batched ÷ single = {fmt(get(model, 'batched_vs_single'), 2, '×')}.",
            "",
        ]
    return lines


def inpainters_section(r: dict) -> list[str]:
    rows = []
    for name, v in (get(r, "results") or {}).items():
        rows.append(
            [
                name,
                fmt(1000 * get(v, "seconds_per_image", default=math.nan), 1),
                fmt(get(v, "ratio_vs_telea"), 2, "×"),
            ]
        )
    return [f"Per 224² image, {r.get('threads', '?')} thread(s).", ""] + table(
        ["inpainter", "ms/image", "vs telea"], rows
    )


def _methods(block: Any) -> list[str]:
    names = list(block or {})
    return sorted(
        names, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m)
    )


def quality_section(r: dict) -> list[str]:
    main = get(r, "main") or {}
    lines = [
        f"Mode `{r.get('mode', '?')}`, {machine_line(r)}, {str(r.get('when', DASH))[:10]}. "
        "Test accuracy, mean ± std over seeds.",
        "",
    ]
    rows = []
    groups: list[str] = []
    for m in _methods(main):
        for g in get(main, m, "per_group") or {}:
            if g not in groups:
                groups.append(g)
    for m in _methods(main):
        e = main[m]
        rows.append(
            [
                m,
                len(get(e, "seeds") or []) or DASH,
                mean_std(get(e, "worst_group")),
                mean_std(get(e, "accuracy")),
            ]
            + [mean_std(get(e, "per_group", g)) for g in groups]
        )
    lines += table(["method", "seeds", "worst-group", "accuracy", *groups], rows)
    for name, block in (get(r, "ablations") or {}).items():
        if not block:
            continue
        lines += [f"Ablation: `{name}` (abs)", ""]
        lines += table(
            [name, "seeds", "worst-group", "accuracy"],
            [
                [
                    k,
                    len(get(block, k, "seeds") or []) or DASH,
                    mean_std(get(block, k, "worst_group")),
                    mean_std(get(block, k, "accuracy")),
                ]
                for k in _keys(block)
            ],
        )
    detectors = get(r, "detectors") or {}
    if detectors:
        lines += ["Detectors", ""]
        lines += table(
            ["detector", "balanced patch accuracy", "mask IoU", "seconds"],
            [
                [
                    k,
                    fmt(get(v, "balanced_patch_accuracy"), 3),
                    fmt(get(v, "iou"), 3),
                    fmt(get(v, "seconds"), 0),
                ]
                for k, v in detectors.items()
            ],
        )
    for note in get(r, "notes") or []:
        lines.append(f"- {note}")
    return lines + ([""] if get(r, "notes") else [])


# --- plots --------------------------------------------------------------------------------


def plot_speed(results: dict[str, dict], path: Path) -> None:
    """One panel per speed suite: its ratios as bars, the goal as a dashed line. The bars the
    goal applies to are green (met) or red (missed); the others are context, in grey."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 2
    rows = math.ceil(len(SPEED) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[len(SPEED) :]:
        ax.set_visible(False)
    for ax, s in zip(flat, SPEED, strict=False):
        r = results.get(s.key)
        bars = s.bars(r) if r else []
        ax.set_title(f"{s.title}: goal {goal_text(s)}", fontsize=11)
        ax.axhline(1.0, color="0.5", lw=0.8)
        ax.axhline(s.goal, color="tab:blue", ls="--", lw=1.2)
        ax.set_ylabel("ratio")
        if not bars:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_ylim(0, s.goal * 1.3)
            ax.set_xlabel(s.what, fontsize=8)
            continue
        labels = [b[0] for b in bars]
        values = [b[1] for b in bars]
        colors = []
        for _, v, applies in bars:
            ok = v >= s.goal if s.higher_is_better else v <= s.goal
            colors.append(("tab:green" if ok else "tab:red") if applies else "0.75")
        x = list(range(len(values)))
        ax.bar(x, values, color=colors, width=0.6)
        top = max(max(values), s.goal) * 1.22
        for i, v in zip(x, values, strict=True):
            ax.text(i, v + top * 0.01, f"{v:.2f}×", ha="center", va="bottom", fontsize=9)
        ax.set_xticks(x, labels, fontsize=9)
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_ylim(0, top)
        ax.set_xlabel(f"{s.what}\n{machine_line(r, s.device(r))}", fontsize=8)
    fig.suptitle(
        "Speed ratios vs their goals (dashed). Green/red: the figure the goal is about, "
        "met/missed; grey: context",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _keys(block: dict) -> list[str]:
    """Ablation keys in numeric order when they are all numbers, else as written."""
    keys = list(block)
    try:
        return sorted(keys, key=float)
    except (TypeError, ValueError):
        return keys


def fit_text(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped at spaces to lines that fit ``width_in`` inches at ``fontsize``.

    Matplotlib centres a figure title and cuts it on both sides when it is wider than the
    figure (a one-panel quality plot with the run's settings in its mode did).

    >>> fit_text("Method quality (small + size=224 grid=16 detector_seconds=720 mode)",
    ...          5.4, 12).splitlines()
    ['Method quality (small + size=224 grid=16', 'detector_seconds=720 mode)']
    """
    import textwrap

    # Average glyph width of DejaVu Sans is about 0.6 em; keep a margin of 0.4 inch.
    chars = max(10, int((width_in - 0.4) * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars, break_on_hyphens=False)) or text


def quality_figure(r: dict) -> Any:
    """Worst-group and overall test accuracy (mean ± std over seeds): per method, then per
    value of each ablation. Returns the matplotlib figure (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = get(r, "main") or {}
    ablations = {k: v for k, v in (get(r, "ablations") or {}).items() if v}
    n = 1 + len(ablations)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.8 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)

    def panel(ax, block: dict, title: str, keys: list[str]) -> None:
        x = list(range(len(keys)))
        for offset, metric, label, color in (
            (-0.2, "worst_group", "worst-group", "tab:orange"),
            (0.2, "accuracy", "accuracy", "0.6"),
        ):
            means = [get(block, k, metric, "mean", default=math.nan) for k in keys]
            stds = [get(block, k, metric, "std", default=0.0) or 0.0 for k in keys]
            ax.bar(
                [i + offset for i in x], means, 0.4, yerr=stds, capsize=3, label=label, color=color
            )
            if metric == "worst_group":
                for i, m, sd in zip(x, means, stds, strict=True):
                    if math.isfinite(m):
                        ax.text(i + offset, m + sd + 0.02, f"{m:.2f}", ha="center", fontsize=8)
        ax.set_xticks(x, keys, fontsize=9, rotation=15 if len(keys) > 4 else 0)
        ax.set_ylim(0, 1.12)
        ax.set_ylabel("test accuracy")
        ax.set_title(fit_text(title, ax.get_figure().get_figwidth() / cols, 11), fontsize=11)

    if main:
        panel(flat[0], main, "By method (mean ± std over seeds)", _methods(main))
        flat[0].legend(fontsize=8, loc="upper left")
    else:
        flat[0].text(
            0.5, 0.5, "no main results", ha="center", va="center", transform=flat[0].transAxes
        )
    for ax, (name, block) in zip(flat[1:], ablations.items(), strict=False):
        panel(ax, block, f"abs, ablation: {name}", _keys(block))
    title = f"Method quality ({r.get('mode', '?')} mode)"
    fig.suptitle(fit_text(title, fig.get_figwidth(), 12), fontsize=12)
    fig.tight_layout()
    return fig


def plot_quality(r: dict, path: Path) -> None:
    """Write :func:`quality_figure` to ``path``."""
    import matplotlib.pyplot as plt

    fig = quality_figure(r)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- main ---------------------------------------------------------------------------------


def build(folder: Path) -> list[Path]:
    """Write the markdown and plots for the results in ``folder``; returns what was written."""
    results = load_results(folder)
    written = []
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `bench/report.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        "from the JSON files in this folder (machine, versions, config and raw figures are in "
        "each). Every ratio is against a baseline run in the same process on the same machine. "
        "Regenerate with `make bench-report`.",
        "",
        "![speed](speed.png)",
        "",
    ]
    lines += summary_section(results)
    sections = {
        "composite": composite_section,
        "pipeline": pipeline_section,
        "train_step": train_section,
        "serve": serve_section,
    }
    for s in SPEED:
        lines += [f"### {s.title} (`{s.script}`)", ""]
        r = results.get(s.key)
        if r is None:
            lines += ["not run", ""]
            continue
        lines += [f"Machine: {machine_line(r, s.device(r))}; {str(r.get('when', DASH))[:19]}.", ""]
        lines += sections[s.key](r)
    lines += ["### Inpainters (`bench/inpainters.py`)", ""]
    lines += (
        inpainters_section(results["inpainters"]) if "inpainters" in results else ["not run", ""]
    )
    lines += ["## Quality (`bench/quality.py`)", ""]
    quality = sorted(k for k in results if k == "quality" or k.startswith("quality-"))
    for key in quality:
        if key != "quality":
            lines += [f"### `{key}.json`", ""]
        lines += [f"![{key}]({key}.png)", ""] + quality_section(results[key])
        plot_quality(results[key], folder / f"{key}.png")
        written.append(folder / f"{key}.png")
    if not quality:
        lines += ["not run", ""]
    lines += ["## Detector (`bench/detector.py`)", ""]
    if "detector" in results:
        from detector_report import detector_section, plot_detector

        lines += ["![detector](detector.png)", ""] + detector_section(results["detector"])
        plot_detector(results["detector"], folder / "detector.png")
        written.append(folder / "detector.png")
    else:
        lines += ["not run", ""]
    plot_speed(results, folder / "speed.png")
    written.append(folder / "speed.png")
    (folder / "README.md").write_text("\n".join(lines).rstrip() + "\n")
    written.append(folder / "README.md")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default="bench/results", help="folder of the result JSON files")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for path in build(Path(args.results)):
        logger.info("wrote %s", path)


if __name__ == "__main__":
    main()
