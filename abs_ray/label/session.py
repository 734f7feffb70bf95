"""The labelling session behind the page: images, pre-fill, active selection, retraining.

No HTTP here (see :mod:`abs_ray.label.app`); every method is callable from tests and threads.

- **Pool**: the images of ``cfg.split`` in a seeded random order (the paper draws its labelled
  images at random; "next" without a detector walks this order).
- **Pre-fill**: an image without a label starts from the current model's tight foreground
  (``P(background) < tight``): the detector's when there is one, else the zero-shot
  border-contrast saliency prior (``prior="saliency"``), else an empty grid.
- **Active selection**: with a detector, a background thread scores up to ``score_max``
  unlabelled images (:func:`patch_confidence`, mean ``|p - 0.5|`` over patches) and "next"
  hands out the least confident one that nobody else holds. Until any are scored, and with
  the saliency prior or no model, "next" follows the pool order: the prior's confidence says
  nothing about what a detector would get wrong.
- **Leases**: an image handed out by "next" is kept from other people for ``lease_seconds``
  or until it is saved; a person who skips an image is not offered it again in this run.
- **Retraining**: :meth:`LabelSession.start_training` runs in a background thread: a stable
  hash of each image id holds out ``holdout_fraction`` of the labels (:func:`holdout_split`),
  :func:`~abs_ray.models.detector_train.train_detector` trains on the rest (its own 80/20
  train/val split and early stopping), and the new detector is measured on the held-out labels
  it never saw, written to ``<out>/round-NNNN/`` and used for pre-fill and selection from then
  on (``<out>/latest.json`` makes a restarted server pick it up).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from abs_ray.data import load_dataset
from abs_ray.errors import ConfigError, ImageDecodeError, StorageError, StorageNotFoundError
from abs_ray.io import S3Options, decode_image, encode_png, join, read_bytes, read_text, write_text
from abs_ray.label.config import LabelConfig
from abs_ray.label.errors import NotEnoughLabelsError, TrainingBusyError, UnknownImageError
from abs_ray.label.store import LabelStore, check_mask_string, mask_to_grid
from abs_ray.models.detector import Detector, load_detector
from abs_ray.models.detector_train import (
    evaluate_detector,
    load_labelled_images,
    train_detector,
)
from abs_ray.ops.label_csv import PatchLabel, format_patch_label_csv
from abs_ray.serve.errors import InvalidRequestError
from abs_ray.serve.saliency import BorderContrastSaliency

logger = logging.getLogger(__name__)

__all__ = ["LabelSession", "holdout_split", "least_confident", "patch_confidence"]

#: Tight threshold used to pre-fill from the saliency prior (its logits put 0.5 at z0).
_PRIOR_TIGHT = 0.5
_CLIENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


# --- pure helpers -----------------------------------------------------------------------------


def patch_confidence(prob: torch.Tensor) -> torch.Tensor:
    """How sure a detector is about each image: mean ``|p - 0.5|`` over its patches.

    Args:
        prob: ``(N, G, G)`` float ``P(background)`` in ``[0, 1]``.

    Returns:
        ``(N,)`` float in ``[0, 0.5]``; 0 = every patch a coin flip, 0.5 = every patch certain.

    Raises:
        ConfigError: ``prob`` is not a 3-D floating tensor.

    Example:
        >>> patch_confidence(torch.tensor([[[0.5, 0.5]], [[0.0, 1.0]]]))
        tensor([0.0000, 0.5000])
    """
    if not isinstance(prob, torch.Tensor) or prob.ndim != 3 or not prob.is_floating_point():
        shape = tuple(prob.shape) if isinstance(prob, torch.Tensor) else type(prob).__name__
        raise ConfigError(f"prob must be an (N, G, G) float tensor, got {shape}")
    return (prob - 0.5).abs().flatten(1).mean(dim=1)


def least_confident(confidence: Mapping[str, float], candidates: Iterable[str]) -> str | None:
    """The candidate with the lowest confidence; ties go to the earlier candidate.

    Candidates without a confidence are ignored; None when none has one.

    Example:
        >>> least_confident({"a": 0.3, "b": 0.1, "c": 0.1}, ["a", "c", "b", "d"])
        'c'
        >>> least_confident({}, ["a"]) is None
        True
    """
    best, best_score = None, float("inf")
    for candidate in candidates:
        score = confidence.get(candidate)
        if score is not None and score < best_score:
            best, best_score = candidate, score
    return best


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


def _resize_u8(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> ``(3, size, size)`` uint8, bilinear + antialias, as in training."""
    x = image.float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return x.round().clamp(0, 255).to(torch.uint8)


def _check_client(client: object) -> str:
    if (
        not isinstance(client, str)
        or not 1 <= len(client) <= 64
        or not set(client) <= _CLIENT_CHARS
    ):
        raise InvalidRequestError(
            f"client must be 1-64 characters from A-Z a-z 0-9 - _, got {client!r}"
        )
    return client


# --- status records ---------------------------------------------------------------------------


@dataclasses.dataclass
class TrainStatus:
    """The last retraining round (mutated by the training thread under the session lock).

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
        out = {k: v for k, v in dataclasses.asdict(self).items() if not k.startswith("_")}
        if self.state == "running":
            out["seconds"] = time.monotonic() - self._started
        return out


# --- the session ------------------------------------------------------------------------------


class LabelSession:
    """State shared by every browser labelling one data set into one labels file.

    Args:
        cfg: the app's settings.
        s3: S3 settings; default from the environment.

    Raises:
        ConfigError: no images in the split, a detector or labels file whose grid differs from
            ``cfg.grid``.
        LayoutError, StorageError: the data set cannot be read.
        LabelFormatError: the existing labels file is malformed.
    """

    def __init__(self, cfg: LabelConfig, s3: S3Options | None = None) -> None:
        if not isinstance(cfg, LabelConfig):
            raise ConfigError(f"cfg must be a LabelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._s3 = s3
        manifest = load_dataset(cfg.data, s3)
        pool = manifest if cfg.split is None else manifest[manifest["split"] == cfg.split]
        if len(pool) == 0:
            splits = sorted(manifest["split"].astype(str).unique())
            raise ConfigError(
                f"no images in split {cfg.split!r} of {cfg.data} (splits there: {splits})"
            )
        order = np.random.default_rng(cfg.seed).permutation(len(pool))
        self._pool: pd.DataFrame = pool.iloc[order].reset_index(drop=True)
        self._ids: list[str] = [str(i) for i in self._pool["id"]]
        self._pos = {image_id: k for k, image_id in enumerate(self._ids)}
        self._uris = dict(zip(self._ids, self._pool["image_uri"].astype(str), strict=True))
        self._classes = dict(zip(self._ids, self._pool["label"].astype(int), strict=True))
        self._by_name: dict[str, list[str]] = {}
        for image_id, uri in self._uris.items():
            self._by_name.setdefault(os.path.basename(uri.replace("\\", "/")), []).append(image_id)
        self.store = LabelStore(cfg.labels, cfg.grid, s3)
        self.session_key = hashlib.sha1(f"{cfg.data}\n{cfg.labels}".encode()).hexdigest()[:12]

        self._lock = threading.RLock()
        self._model_lock = threading.Lock()  # one forward pass at a time (2 shared cores)
        self._model: nn.Module | None = None
        self._model_kind = "none"
        self._model_info: dict[str, Any] = {}
        self._tight = _PRIOR_TIGHT
        self._generation = 0
        self._prob: dict[str, torch.Tensor] = {}
        self._conf: dict[str, float] = {}
        self._unreadable: dict[str, str] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._skipped: dict[str, set[str]] = {}
        self._train = TrainStatus()
        self._train_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._load_initial_model()
        self._scorer = threading.Thread(target=self._score_loop, name="label-scorer", daemon=True)
        self._scorer.start()
        logger.info(
            "labelling %d images of %s (split %s) into %s; model: %s",
            len(self._ids),
            cfg.data,
            cfg.split,
            cfg.labels,
            self._model_kind,
        )

    # --- models -------------------------------------------------------------------------------

    def _load_initial_model(self) -> None:
        cfg = self.cfg
        uri, source, extra = cfg.detector, "argument", {}
        latest = join(cfg.detector_out, "latest.json")
        try:
            record = json.loads(read_text(latest, self._s3))
            self._train.round = int(record["round"])
            if uri is None:
                uri, source = str(record["checkpoint"]), latest
                acc = record.get("heldout", {}).get("balanced_patch_accuracy")
                extra = {} if acc is None else {"heldout_balanced_patch_accuracy": acc}
        except StorageNotFoundError:
            pass
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{latest} is not a record of the latest retraining round ({exc!r}); "
                "remove it or pass --detector"
            ) from exc
        if uri is not None:
            self._set_detector(load_detector(uri, s3=self._s3), uri, source, **extra)
        elif cfg.prior == "saliency":
            prior = BorderContrastSaliency(grid=cfg.grid, image_size=cfg.train.image_size)
            self._set_model(prior, "prior", dict(prior.config), _PRIOR_TIGHT)

    def _set_detector(self, det: Detector, uri: str, source: str, **extra: Any) -> None:
        if det.config.grid != self.cfg.grid:
            raise ConfigError(
                f"detector {uri} has grid {det.config.grid}x{det.config.grid}, the labels use "
                f"{self.cfg.grid}x{self.cfg.grid} (--grid)"
            )
        info = {
            "name": det.config.name,
            "image_size": det.config.image_size,
            "checkpoint": uri,
            "source": source,
            **extra,
        }
        self._set_model(det, "detector", info, det.config.tight)

    def _set_model(self, model: nn.Module, kind: str, info: dict[str, Any], tight: float) -> None:
        with self._lock:
            self._model = model.eval()
            self._model_kind, self._model_info, self._tight = kind, info, tight
            self._generation += 1
            self._prob.clear()
            self._conf.clear()
        self._wake.set()

    def _image_size(self, model: nn.Module) -> int:
        return model.config.image_size if isinstance(model, Detector) else model.image_size

    # --- images -------------------------------------------------------------------------------

    def check_id(self, image_id: str) -> str:
        """Return ``image_id`` if it is in the pool, else raise :class:`UnknownImageError`."""
        if image_id not in self._pos:
            split = "every split" if self.cfg.split is None else f"split {self.cfg.split!r}"
            raise UnknownImageError(
                f"unknown image id {image_id!r}: not among the {len(self._ids)} images of "
                f"{split} of {self.cfg.data}"
            )
        return image_id

    def _read_rgb(self, image_id: str) -> np.ndarray:
        try:
            return decode_image(read_bytes(self._uris[image_id], self._s3))
        except (ImageDecodeError, StorageError) as exc:
            with self._lock:
                self._unreadable[image_id] = f"{type(exc).__name__}: {exc}"
            logger.warning("image %s cannot be read: %s", image_id, exc)
            raise

    def image_png(self, image_id: str) -> bytes:
        """The image as PNG for the page, shrunk to ``display_max`` on its longest side.

        Raises:
            UnknownImageError: not in the pool.
            ImageDecodeError, StorageError: it cannot be read (it is then never handed out).
        """
        rgb = self._read_rgb(self.check_id(image_id))
        if max(rgb.shape[:2]) > self.cfg.display_max:
            img = Image.fromarray(rgb)
            img.thumbnail((self.cfg.display_max, self.cfg.display_max), Image.Resampling.BILINEAR)
            rgb = np.asarray(img)
        return encode_png(rgb)

    def _predict(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """``P(background)`` ``(G, G)`` of the current model for the readable ``ids``; cached."""
        with self._lock:
            model, generation = self._model, self._generation
        if model is None or not ids:
            return {}
        size = self._image_size(model)
        images, kept = [], []
        for image_id in ids:
            try:
                rgb = self._read_rgb(image_id)
            except (ImageDecodeError, StorageError):
                continue
            images.append(_resize_u8(torch.from_numpy(rgb).permute(2, 0, 1), size))
            kept.append(image_id)
        if not kept:
            return {}
        x = torch.stack(images).float() / 255.0
        with self._model_lock, torch.inference_mode():
            prob = torch.sigmoid(model(x)).float()
        conf = patch_confidence(prob).tolist()
        out = dict(zip(kept, prob, strict=True))
        with self._lock:
            if generation == self._generation:
                self._prob.update(out)
                self._conf.update(zip(kept, conf, strict=True))
        return out

    # --- labels -------------------------------------------------------------------------------

    def _match(self, info: str) -> str | None:
        if info in self._pos:
            return info
        hits = self._by_name.get(info.replace("\\", "/").rsplit("/", 1)[-1], [])
        return hits[0] if len(hits) == 1 else None

    def labels(self, records: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
        """``image id -> (CSV info, mask)`` for the records that match pool images.

        ``info`` equal to an id wins; otherwise a record whose last path part is the file name
        of exactly one pool image matches it (as :func:`csv_labels_for_manifest` does).
        """
        records = self.store.records() if records is None else records
        out: dict[str, tuple[str, str]] = {}
        for info, mask in records.items():
            if info in self._pos:
                out[info] = (info, mask)
        for info, mask in records.items():
            key = self._match(info)
            if key is not None and key not in out:
                out[key] = (info, mask)
        return out

    def item(self, image_id: str) -> dict[str, Any]:
        """What the page shows for one image: its label, or the model's pre-fill.

        Returns:
            ``id``, ``position`` (in the pool order), ``class`` (data set label), ``labelled``,
            ``mask`` (``G * G`` characters, 1 = foreground), ``source`` (``label``,
            ``detector``, ``prior`` or ``empty``), ``confidence`` (the detector's
            :func:`patch_confidence`, None without one).

        Raises:
            UnknownImageError: not in the pool.
            ImageDecodeError, StorageError: the image cannot be read for a pre-fill.
        """
        self.check_id(image_id)
        saved = self.labels().get(image_id)
        with self._lock:
            kind = self._model_kind
            prob = self._prob.get(image_id)
            tight = self._tight
        if prob is None and kind != "none" and (saved is None or kind == "detector"):
            prob = self._predict([image_id]).get(image_id)
            if prob is None:  # unreadable: raise its error for the page
                self._read_rgb(image_id)
        confidence = None
        if prob is not None and kind == "detector":
            confidence = float(patch_confidence(prob[None])[0])
        if saved is not None:
            mask, source = saved[1], "label"
        elif prob is not None:
            mask = "".join("1" if v else "0" for v in (prob < tight).flatten().tolist())
            source = kind
        else:
            mask, source = "0" * self.cfg.grid**2, "empty"
        return {
            "id": image_id,
            "position": self._pos[image_id],
            "class": self._classes[image_id],
            "labelled": saved is not None,
            "mask": mask,
            "source": source,
            "confidence": confidence,
        }

    def save(self, image_id: str, mask: str, client: str | None = None) -> dict[str, Any]:
        """Save one image's label to the shared CSV (merged per image, written atomically).

        The image's lease ends. ``client`` (the page's id) is only logged.

        Raises:
            UnknownImageError: not in the pool.
            InvalidRequestError: ``mask`` is not ``G * G`` characters ``'0'``/``'1'``.
            StorageError: the write fails.
        """
        self.check_id(image_id)
        check_mask_string(mask, self.cfg.grid)
        existing = self.labels().get(image_id)
        total = self.store.put(existing[0] if existing else image_id, mask)
        with self._lock:
            self._leases.pop(image_id, None)
        logger.debug("saved %s (%d fg patches) for client %s", image_id, mask.count("1"), client)
        return {"id": image_id, "saved": True, "records": total, **self.counts()}

    def counts(self) -> dict[str, int]:
        """``labelled`` (pool images with a label), ``target`` and ``total`` (pool size)."""
        return {
            "labelled": len(self.labels()),
            "target": self.cfg.target,
            "total": len(self._ids),
        }

    # --- selection ----------------------------------------------------------------------------

    def next(self, client: str, skip: str | None = None) -> dict[str, Any]:
        """Hand out the next image to label and lease it to ``client``.

        With a detector: the least confident scored unlabelled image; otherwise (or before any
        is scored) the first unlabelled image in pool order. Images leased to someone else,
        unreadable, or skipped by this client are passed over.

        Args:
            client: the page's random id (1-64 characters ``[A-Za-z0-9_-]``).
            skip: an image this client skips (not offered to it again in this run).

        Returns:
            ``id`` (None when nothing is left), ``reason`` (``least_confident``,
            ``pool_order`` or ``done``), ``confidence`` and the counts.

        Raises:
            InvalidRequestError: a malformed ``client``.
            UnknownImageError: ``skip`` is not in the pool.
        """
        _check_client(client)
        if skip is not None:
            self.check_id(skip)
        labelled = self.labels()
        now = time.monotonic()
        with self._lock:
            if skip is not None:
                self._skipped.setdefault(client, set()).add(skip)
            for image_id, (holder, expiry) in list(self._leases.items()):
                if holder == client or expiry <= now:
                    del self._leases[image_id]
            skipped = self._skipped.get(client, set())
            candidates = [
                i
                for i in self._ids
                if i not in labelled
                and i not in self._unreadable
                and i not in self._leases
                and i not in skipped
            ]
            pick, reason = None, "done"
            if candidates and self._model_kind == "detector":
                pick = least_confident(self._conf, candidates)
                reason = "least_confident" if pick is not None else reason
            if candidates and pick is None:
                pick, reason = candidates[0], "pool_order"
            if pick is not None:
                self._leases[pick] = (client, now + self.cfg.lease_seconds)
            confidence = self._conf.get(pick) if pick is not None else None
        return {"id": pick, "reason": reason, "confidence": confidence, **self.counts()}

    def _scoring(self, labelled: Mapping[str, Any]) -> tuple[list[str], int]:
        """(unlabelled readable ids not yet scored, how many are scored); call under the lock.

        The scorer keeps up to ``score_max`` *unlabelled* images scored: as images get
        labelled, more are scored.
        """
        pending = [i for i in self._ids if i not in labelled and i not in self._unreadable]
        todo = [i for i in pending if i not in self._conf]
        return todo, len(pending) - len(todo)

    def _to_score(self) -> list[str]:
        labelled = self.labels()
        with self._lock:
            if self._model_kind != "detector":
                return []
            todo, done = self._scoring(labelled)
            room = min(self.cfg.score_batch, self.cfg.score_max - done)
            return todo[: max(room, 0)]

    def _score_loop(self) -> None:
        while not self._stop.is_set():
            batch = self._to_score()
            if not batch:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self._predict(batch)
            except Exception:  # a scoring failure must not kill the thread; it is logged
                logger.exception("scoring %d images failed", len(batch))
                self._stop.wait(5.0)

    # --- retraining ---------------------------------------------------------------------------

    def start_training(self) -> dict[str, Any]:
        """Start a retraining round on the labels so far, in a background thread.

        Returns:
            The round's status (``state = "running"``).

        Raises:
            TrainingBusyError: a round is running.
            NotEnoughLabelsError: fewer than ``min_train_labels`` labelled pool images.
        """
        labels = self.labels(self.store.refresh())
        with self._lock:
            if self._train_thread is not None and self._train_thread.is_alive():
                raise TrainingBusyError(
                    f"retraining round {self._train.round} is still running; "
                    "poll GET /api/train until it is done"
                )
            if len(labels) < self.cfg.min_train_labels:
                raise NotEnoughLabelsError(
                    f"need at least {self.cfg.min_train_labels} labelled images to retrain, "
                    f"have {len(labels)}"
                )
            k = self._train.round + 1
            uri = join(self.cfg.detector_out, f"round-{k:04d}")
            self._train = TrainStatus(
                state="running", round=k, uri=uri, num_labels=len(labels), _started=time.monotonic()
            )
            masks = {image_id: mask for image_id, (_, mask) in labels.items()}
            self._train_thread = threading.Thread(
                target=self._train_round, args=(k, uri, masks), name="label-train", daemon=True
            )
            self._train_thread.start()
            return self._train.public()

    def training_status(self) -> dict[str, Any]:
        """The current or last round's :class:`TrainStatus` as a dict."""
        with self._lock:
            return self._train.public()

    def _labels_csv(self, masks: Mapping[str, str], ids: Iterable[str]) -> str:
        return format_patch_label_csv(
            PatchLabel(i, mask_to_grid(masks[i], self.cfg.grid)) for i in ids
        )

    def _train_round(self, k: int, uri: str, masks: dict[str, str]) -> None:
        cfg, s3 = self.cfg, self._s3
        t0 = time.monotonic()
        try:
            train_ids, held_ids = holdout_split(sorted(masks), cfg.holdout_fraction, cfg.seed)
            train_csv = join(uri, "train_labels.csv")
            write_text(train_csv, self._labels_csv(masks, train_ids), s3)
            write_text(join(uri, "heldout_labels.csv"), self._labels_csv(masks, held_ids), s3)
            tcfg = dataclasses.replace(
                cfg.train,
                out=uri,
                data=cfg.data,
                labels_csv=train_csv,
                grid=cfg.grid,
                label_split=cfg.split,
                num_labelled=None,
                eval_split=None,
                seed=cfg.seed,
            )
            metrics = train_detector(tcfg, self._pool, s3)
            checkpoint = join(uri, "detector.pt")
            det = load_detector(checkpoint, s3=s3)
            rows = self._pool[self._pool["id"].astype(str).isin(held_ids)]
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
            self._set_detector(
                det,
                checkpoint,
                f"round {k}",
                heldout_balanced_patch_accuracy=held_metrics["balanced_patch_accuracy"],
            )
            with self._lock:
                self._train = dataclasses.replace(
                    self._train,
                    state="done",
                    num_train=len(train_ids),
                    num_heldout=len(held),
                    heldout_balanced_patch_accuracy=held_metrics["balanced_patch_accuracy"],
                    val_balanced_patch_accuracy=metrics["val"]["balanced_patch_accuracy"],
                    seconds=time.monotonic() - t0,
                )
            logger.info(
                "round %d: held-out balanced patch accuracy %.3f on %d images (%.0f s)",
                k,
                held_metrics["balanced_patch_accuracy"],
                len(held),
                time.monotonic() - t0,
            )
        except Exception as exc:  # the round fails, the server goes on; reported to the page
            logger.exception("retraining round %d failed", k)
            with self._lock:
                self._train = dataclasses.replace(
                    self._train,
                    state="failed",
                    error=f"{type(exc).__name__}: {exc}",
                    seconds=time.monotonic() - t0,
                )

    # --- state and shutdown -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the page's header shows: settings, counts, model, scoring and training.

        ``scored`` / ``to_score`` count unlabelled images (0 / 0 without a detector).
        """
        labelled = self.labels()
        with self._lock:
            model = {"kind": self._model_kind, **self._model_info}
            unreadable = len(self._unreadable)
            scored = to_score = 0
            if self._model_kind == "detector":
                todo, scored = self._scoring(labelled)
                to_score = min(self.cfg.score_max, scored + len(todo))
        return {
            "session_key": self.session_key,
            "data": self.cfg.data,
            "labels": self.cfg.labels,
            "split": self.cfg.split,
            "grid": self.cfg.grid,
            **self.counts(),
            "unreadable": unreadable,
            "model": model,
            "scored": scored,
            "to_score": to_score,
            "training": self.training_status(),
        }

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no round is running and scoring is done; True if it got there in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.state()
            if state["training"]["state"] != "running" and state["scored"] >= state["to_score"]:
                return True
            time.sleep(0.1)
        return False

    def close(self, timeout: float = 60.0) -> None:
        """Stop the scoring thread and wait (up to ``timeout`` s) for a running round."""
        self._stop.set()
        self._wake.set()
        self._scorer.join(timeout)
        thread = self._train_thread
        if thread is not None:
            thread.join(timeout)
