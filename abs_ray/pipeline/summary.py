"""What a run reports: mask shares, stage rates, errors by type, and the warning thresholds."""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

WEAK_DETECTOR = 0.55
#: Share of images without any foreground above which the pipeline warns.
EMPTY_MASK_WARNING = 0.25


def mask_summary(fractions: list[float]) -> dict:
    """Foreground share of the written rows; warns when many masks are empty.

    An image whose tight mask is empty gives ``abs`` training nothing to paste: the swap shows
    a background alone under the image's label. A detector that finds nothing (too few labels,
    a grid too fine for the image size) turns ``abs`` into training on backgrounds.

    >>> mask_summary([0.0, 0.2, 0.4, 0.0])["empty_share"]
    0.5
    """
    if not fractions:
        return {"rows": 0, "mean_foreground_fraction": None, "empty_share": None}
    values = np.asarray(fractions, np.float64)
    empty = float((values <= 0).mean())
    out = {
        "rows": len(values),
        "mean_foreground_fraction": round(float(values.mean()), 4),
        "empty_share": round(empty, 4),
    }
    if empty > EMPTY_MASK_WARNING:
        logger.warning(
            "%.0f %% of the images have an empty foreground mask: swaps would paste nothing "
            "there. Check the detector's held-out metrics (detector/metrics.json, "
            "mask_sheet.png); label more images, use a coarser grid or a lower tight threshold.",
            100 * empty,
        )
    return out


#: Stage times below this (seconds, summed over rows) give no rate: a stage that did almost
#: nothing (every row failed before it) would otherwise report absurd images/s.
MIN_TIMED_SECONDS = 0.05


def stage_rates(seconds: dict[str, float], rows: dict[str, int]) -> dict[str, float | None]:
    """Images/s per stage over the rows that went through it (None when not measurable).

    >>> stage_rates({"load": 2.0, "detect": 1e-5}, {"load": 10, "detect": 0})
    {'load': 5.0, 'detect': None}
    """
    out: dict[str, float | None] = {}
    for stage, s in seconds.items():
        n = rows.get(stage, 0)
        out[stage] = round(n / s, 1) if n and s >= MIN_TIMED_SECONDS else None
    return out


def errors_by_type(error_types: list[str]) -> dict[str, int]:
    """Counts per ``error_type``, most frequent first.

    >>> errors_by_type(["NotAnImageError", "EmptyImageError", "NotAnImageError"])
    {'NotAnImageError': 2, 'EmptyImageError': 1}
    """
    counts: dict[str, int] = {}
    for t in error_types:
        counts[str(t)] = counts.get(str(t), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _by_type_text(by_type: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(by_type.items(), key=lambda kv: -kv[1]))
