"""The detector section of ``bench/results/README.md`` and ``detector.png`` (from
``bench/results/detector.json``, written by ``bench/detector.py``); called by
``bench/report.py``."""

from __future__ import annotations

import statistics
from pathlib import Path

HEADS = ("dense", "pooled", "saliency")


def _groups(runs: list[dict]) -> dict[tuple[str, str, int], list[dict]]:
    """Runs by ``(head, split, num_labelled)``."""
    out: dict[tuple[str, str, int], list[dict]] = {}
    for r in runs:
        out.setdefault((r["head"], r["split"], r["num_labelled"]), []).append(r)
    return out


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _cpu(group: list[dict]) -> str:
    cpu = [g["cpu_seconds"] for g in group if g.get("cpu_seconds") is not None]
    return f"{statistics.mean(cpu):.0f}" if cpu else "—"


def detector_section(r: dict) -> list[str]:
    """Markdown: one row per (head, split, labelled), mean ± std over seeds."""
    runs = r.get("runs", [])
    machine = r.get("machine", {})
    lines = [
        f"Machine: {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores, shared with "
        f"other jobs), torch {machine.get('torch', '?')}; {str(r.get('when', '?'))[:19]}. "
        "224 px, G = 16, frozen EfficientNet-Lite0, 200 test images per split; IoU of the "
        "tight mask (P(background) < 0.5) and balanced patch accuracy on those test images; "
        "seconds = wall time of feature caching + training (the prior: inference), image loading "
        "apart; on this shared box it mostly measures the other jobs' load, CPU seconds (the "
        "process's CPU time, both threads) much less.",
        "",
        "| head | split | labelled | seeds | mask IoU | IoU @ 0.33 | balanced patch acc. "
        "| seconds | CPU seconds |",
        "| --- | --- | ---: | ---: | --- | --- | --- | ---: | ---: |",
    ]
    order = {h: i for i, h in enumerate(HEADS)}
    for (head, split, n), group in sorted(
        _groups(runs).items(), key=lambda kv: (kv[0][1] != "shared", kv[0][2], order[kv[0][0]])
    ):
        lines.append(
            f"| {head} | {split} | {n} | {len(group)} "
            f"| {_ms([g['mask_iou'] for g in group])} "
            f"| {_ms([g['mask_iou_at_0.33'] for g in group])} "
            f"| {_ms([g['balanced_patch_accuracy'] for g in group])} "
            f"| {statistics.mean(g['seconds'] for g in group):.0f} | {_cpu(group)} |"
        )
    perfect = [g["perfect_patch_mask_iou"] for g in runs if "perfect_patch_mask_iou" in g]
    if perfect:
        lines += ["", f"A perfect 16 × 16 patch mask reaches IoU {max(perfect):.2f}."]
    return lines + [""]


def plot_detector(r: dict, path: Path) -> None:
    """Mask IoU against labelled images per head (shared split; seeds averaged, the prior as a
    line), and mask IoU per head and split at 200 labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = _groups(r.get("runs", []))
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for head, style in (("dense", "o-"), ("pooled", "s--")):
        pts = sorted((n, statistics.mean(g["mask_iou"] for g in grp))
                     for (h, split, n), grp in groups.items() if h == head and split == "shared")  # fmt: skip
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{head} head")
    for (h, split, _n), grp in groups.items():
        if h == "saliency" and split == "shared":
            left.axhline(grp[0]["mask_iou"], color="gray", ls=":", label="zero-shot saliency")
    left.set(
        xlabel="labelled images", ylabel="held-out mask IoU", title="shared birds, 224 px, G 16"
    )
    left.set_ylim(0, 0.8)
    left.legend(fontsize=8)
    splits = ("shared", "held_out")
    width = 0.25
    for i, head in enumerate(HEADS):
        for j, split in enumerate(splits):
            grp = groups.get((head, split, 0 if head == "saliency" else 200), [])
            if not grp:
                continue
            vals = [g["mask_iou"] for g in grp]
            err = statistics.stdev(vals) if len(vals) > 1 else 0.0
            right.bar(j + (i - 1) * width, statistics.mean(vals), width, yerr=err,
                      color=f"C{i}", label=head)  # fmt: skip
    right.set_xticks(range(len(splits)), splits)
    right.set(ylabel="held-out mask IoU", title="200 labelled images (saliency: none)")
    right.set_ylim(0, 0.8)
    handles, labels = right.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=False))
    right.legend(uniq.values(), uniq.keys(), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
