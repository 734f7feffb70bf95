"""Retraining the detector on the labels so far, one round at a time, in a background thread.

A round (:func:`run_round`): a stable hash of each image id holds out ``holdout_fraction`` of
the labels (:func:`holdout_split`), :func:`~abs_ray.models.detector_train.train_detector`
trains on the rest (its own 80/20 train/val split and early stopping), and the new detector is
measured on the held-out labels it never saw. Everything goes to ``<out>/round-NNNN/``, and
``<out>/latest.json`` names the round so that a restarted server picks it up
(:func:`read_latest`). :class:`Retrainer` runs one round at a time in a thread and reports its
:class:`TrainStatus`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from abs_ray.errors import ConfigError, StorageNotFoundError
from abs_ray.io import S3Options, join, read_text, write_text
from abs_ray.label.config import LabelConfig
from abs_ray.label.errors import NotEnoughLabelsError, TrainingBusyError
from abs_ray.label.store import mask_to_grid
from abs_ray.models.detector import Detector, load_detector
from abs_ray.models.detector_train import evaluate_detector, load_labelled_images, train_detector
from abs_ray.ops.label_csv import PatchLabel, format_patch_label_csv

logger = logging.getLogger(__name__)

__all__ = [
    "LatestRound",
    "Retrainer",
    "RoundResult",
    "TrainStatus",
    "holdout_split",
    "read_latest",
    "run_round",
]


def _unit_hash(text: str) -> float:
    return int(hashlib.sha1(text.encode("utf-8")).hexdigest()[:13], 16) / 16.0**13


def holdout_split(
    ids: Sequence[str], fraction: float, seed: int = 0, min_train: int = 2
) -> tuple[list[str], list[str]]:
    """Split labelled ids into (train, held-out) by a stable hash of ``(seed, id)``.

    An id is held out when its hash in ``[0, 1)`` is below ``fraction``, so as labels grow an
    image never moves between the two sides; at least one id is held out and at least
    ``min_train`` are kept for training (the lowest hashes go first).

    Args:
        ids: distinct image ids, at least ``min_train + 1``.
        fraction: share to hold out, in ``(0, 1)``.
        seed: changes the draw.
        min_train: ids always left for training.

    Returns:
        ``(train, held_out)``, each sorted.

    Raises:
        ConfigError: too few ids or ``fraction`` out of range.

    Example:
        >>> train, held = holdout_split([f"img{i}" for i in range(10)], 0.2)
        >>> held, len(train)
        (['img0', 'img6'], 8)
        >>> holdout_split([f"img{i}" for i in range(20)], 0.2)[1]  # more labels: still held out
        ['img0', 'img10', 'img13', 'img6']
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"fraction must be in (0, 1), got {fraction}")
    if len(set(ids)) != len(ids) or len(ids) < min_train + 1:
        raise ConfigError(f"need at least {min_train + 1} distinct ids to hold some out, got {ids}")
    ranked = sorted(ids, key=lambda i: (_unit_hash(f"{seed}:{i}"), i))
    n_held = sum(_unit_hash(f"{seed}:{i}") < fraction for i in ids)
    n_held = min(max(n_held, 1), len(ids) - min_train)
    return sorted(ranked[n_held:]), sorted(ranked[:n_held])


# --- the latest round on storage ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LatestRound:
    """What ``<out>/latest.json`` records: the last finished round.

    Attributes:
        round: its number (1 = first).
        checkpoint: its detector's URI.
        heldout_balanced_patch_accuracy: measured on its held-out labels, if recorded.
    """

    round: int
    checkpoint: str
    heldout_balanced_patch_accuracy: float | None = None


def read_latest(detector_out: str, s3: S3Options | None = None) -> LatestRound | None:
    """The last finished round under ``detector_out``; None when there is none yet.

    Raises:
        ConfigError: ``latest.json`` exists but is not such a record.
        StorageError: it cannot be read.
    """
    uri = join(detector_out, "latest.json")
    try:
        record = json.loads(read_text(uri, s3))
        return LatestRound(
            round=int(record["round"]),
            checkpoint=str(record["checkpoint"]),
            heldout_balanced_patch_accuracy=record.get("heldout", {}).get(
                "balanced_patch_accuracy"
            ),
        )
    except StorageNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"{uri} is not a record of the latest retraining round ({exc!r}); "
            "remove it or pass --detector_checkpoint"
        ) from exc


# --- one round ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """What a finished round produced.

    Attributes:
        round: its number.
        detector: the new detector, loaded from ``checkpoint``.
        checkpoint: its URI.
        num_train: labels it trained on (train + val of ``train_detector``).
        num_heldout: labels held out to measure it.
        heldout_balanced_patch_accuracy: balanced patch accuracy on the held-out labels.
        val_balanced_patch_accuracy: on ``train_detector``'s own val part (used for early
            stopping, so optimistic).
    """

    round: int
    detector: Detector
    checkpoint: str
    num_train: int
    num_heldout: int
    heldout_balanced_patch_accuracy: float
    val_balanced_patch_accuracy: float


def _labels_csv(masks: Mapping[str, str], ids: Iterable[str], grid: int) -> str:
    return format_patch_label_csv(PatchLabel(i, mask_to_grid(masks[i], grid)) for i in ids)


def run_round(
    cfg: LabelConfig,
    pool: pd.DataFrame,
    k: int,
    masks: Mapping[str, str],
    s3: S3Options | None = None,
) -> RoundResult:
    """Round ``k``: hold out, train, measure, and write it all to ``<out>/round-k/``.

    Writes ``train_labels.csv``, ``heldout_labels.csv``, the detector and its training
    outputs, ``label_round.json`` (the report), then ``<out>/latest.json``.

    Args:
        cfg: the app's settings (``cfg.detector`` is the recipe; the rest is filled in).
        pool: manifest rows of the images being labelled.
        k: the round number, ``>= 1``.
        masks: ``image id -> mask string`` of the labels to use.
        s3: S3 settings; default from the environment.

    Returns:
        The new detector and its measures.

    Raises:
        ConfigError: too few labels to hold some out.
        AbsRayError: training, loading or writing fails.
    """
    t0 = time.monotonic()
    uri = join(cfg.detector_out, f"round-{k:04d}")
    train_ids, held_ids = holdout_split(sorted(masks), cfg.holdout_fraction, cfg.seed)
    train_csv = join(uri, "train_labels.csv")
    write_text(train_csv, _labels_csv(masks, train_ids, cfg.grid), s3)
    write_text(join(uri, "heldout_labels.csv"), _labels_csv(masks, held_ids, cfg.grid), s3)
    tcfg = dataclasses.replace(
        cfg.detector,
        out=uri,
        data=cfg.data,
        labels=train_csv,
        grid=cfg.grid,
        label_split=cfg.split,
        num_labelled=None,
        eval_split=None,
        seed=cfg.seed,
    )
    metrics = train_detector(tcfg, pool, s3)
    checkpoint = join(uri, "detector.pt")
    det = load_detector(checkpoint, s3=s3)
    rows = pool[pool["id"].astype(str).isin(held_ids)]
    grids = {i: mask_to_grid(masks[i], cfg.grid) for i in held_ids}
    held = load_labelled_images(
        rows, tcfg.image_size, cfg.grid, labels=grids, s3=s3, num_workers=tcfg.num_workers
    )
    held_metrics = evaluate_detector(det, held, batch_size=tcfg.eval_batch_size)
    report = {
        "round": k,
        "checkpoint": checkpoint,
        "num_labels": len(masks),
        "num_train": len(train_ids),
        "heldout": {**held_metrics, "ids": list(held.ids)},
        "val": metrics["val"],
        "seconds": time.monotonic() - t0,
    }
    write_text(join(uri, "label_round.json"), json.dumps(report, indent=2), s3)
    latest = {"round": k, "checkpoint": checkpoint, "heldout": held_metrics}
    write_text(join(cfg.detector_out, "latest.json"), json.dumps(latest, indent=2), s3)
    return RoundResult(
        round=k,
        detector=det,
        checkpoint=checkpoint,
        num_train=len(train_ids),
        num_heldout=len(held),
        heldout_balanced_patch_accuracy=held_metrics["balanced_patch_accuracy"],
        val_balanced_patch_accuracy=metrics["val"]["balanced_patch_accuracy"],
    )


# --- rounds in the background -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainStatus:
    """The current or last retraining round, as the page shows it.

    Attributes:
        state: ``idle``, ``running``, ``done`` or ``failed``.
        round: round number (0 before the first).
        uri: the round's output folder.
        num_labels: labels the round started from.
        num_train: labels it trained on (train + val of ``train_detector``).
        num_heldout: labels held out to measure it.
        heldout_balanced_patch_accuracy: balanced patch accuracy on the held-out labels.
        val_balanced_patch_accuracy: on ``train_detector``'s own val part (used for early
            stopping, so optimistic).
        seconds: wall time of the round so far or in all.
        error: ``Type: message`` of a failed round.
    """

    state: str = "idle"
    round: int = 0
    uri: str | None = None
    num_labels: int = 0
    num_train: int = 0
    num_heldout: int = 0
    heldout_balanced_patch_accuracy: float | None = None
    val_balanced_patch_accuracy: float | None = None
    seconds: float = 0.0
    error: str | None = None
    _started: float = 0.0

    def public(self) -> dict[str, Any]:
        """The fields without the private ones; ``seconds`` so far while running."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}
        if self.state == "running":
            out["seconds"] = time.monotonic() - self._started
        return out


RoundRunner = Callable[
    [LabelConfig, pd.DataFrame, int, Mapping[str, str], S3Options | None], RoundResult
]


class Retrainer:
    """Runs retraining rounds one at a time in a daemon thread and keeps their status.

    Its lock guards the status and the thread handle only; it is never held while a round
    runs or while ``on_done`` is called, so status polls answer at once.

    Args:
        cfg: the app's settings.
        pool: manifest rows of the images being labelled.
        on_done: called in the round's thread with its :class:`RoundResult` before the
            status says ``done`` (the session swaps the detector in); an exception fails the
            round.
        last_round: the last round already on storage (the next one is ``last_round + 1``).
        s3: S3 settings; default from the environment.
        run: the round itself; :func:`run_round` (tests pass a stand-in).
    """

    def __init__(
        self,
        cfg: LabelConfig,
        pool: pd.DataFrame,
        on_done: Callable[[RoundResult], None],
        last_round: int = 0,
        s3: S3Options | None = None,
        run: RoundRunner = run_round,
    ) -> None:
        self._cfg, self._pool, self._s3 = cfg, pool, s3
        self._on_done, self._run = on_done, run
        self._lock = threading.Lock()
        self._status = TrainStatus(round=last_round)
        self._thread: threading.Thread | None = None

    def start(self, masks: Mapping[str, str]) -> dict[str, Any]:
        """Start the next round on ``masks`` (``image id -> mask string``) in a thread.

        Returns:
            The round's status (``state = "running"``).

        Raises:
            TrainingBusyError: a round is running.
            NotEnoughLabelsError: fewer than ``cfg.min_train_labels`` labels.
        """
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                raise TrainingBusyError(
                    f"retraining round {self._status.round} is still running; "
                    "poll GET /api/train until it is done"
                )
            if len(masks) < self._cfg.min_train_labels:
                raise NotEnoughLabelsError(
                    f"need at least {self._cfg.min_train_labels} labelled images to retrain, "
                    f"have {len(masks)}"
                )
            k = self._status.round + 1
            self._status = TrainStatus(
                state="running",
                round=k,
                uri=join(self._cfg.detector_out, f"round-{k:04d}"),
                num_labels=len(masks),
                _started=time.monotonic(),
            )
            self._thread = threading.Thread(
                target=self._round, args=(k, dict(masks)), name="label-train", daemon=True
            )
            self._thread.start()
            return self._status.public()

    def status(self) -> dict[str, Any]:
        """The current or last round's :class:`TrainStatus` as a dict."""
        with self._lock:
            return self._status.public()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a running round."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _finish(self, t0: float, **changes: Any) -> None:
        with self._lock:
            self._status = dataclasses.replace(
                self._status, seconds=time.monotonic() - t0, **changes
            )

    def _round(self, k: int, masks: dict[str, str]) -> None:
        t0 = time.monotonic()
        try:
            result = self._run(self._cfg, self._pool, k, masks, self._s3)
            self._on_done(result)
        except Exception as exc:  # the round fails, the server goes on; reported to the page
            logger.exception("retraining round %d failed", k)
            self._finish(t0, state="failed", error=f"{type(exc).__name__}: {exc}")
            return
        self._finish(
            t0,
            state="done",
            num_train=result.num_train,
            num_heldout=result.num_heldout,
            heldout_balanced_patch_accuracy=result.heldout_balanced_patch_accuracy,
            val_balanced_patch_accuracy=result.val_balanced_patch_accuracy,
        )
        logger.info(
            "round %d: held-out balanced patch accuracy %.3f on %d images (%.0f s)",
            k,
            result.heldout_balanced_patch_accuracy,
            result.num_heldout,
            time.monotonic() - t0,
        )
