"""The labelling session behind the page: it wires the parts below and answers the API.

No HTTP here (see :mod:`abs_ray.label.app`); every method is callable from tests and threads.

- **Pool** (:class:`~abs_ray.label.pool.ImagePool`): the images of ``cfg.split`` in a seeded
  random order (the paper draws its labelled images at random; "next" without a detector
  walks this order).
- **Labels** (:class:`~abs_ray.label.store.LabelStore`): the shared ``info,mask`` CSV.
- **Pre-fill** (:class:`~abs_ray.label.predictor.Predictor`): an image without a label starts
  from the current model's tight foreground (``P(background) < tight``): the detector's when
  there is one, else the zero-shot border-contrast saliency prior (``prior="saliency"``),
  else an empty grid.
- **Active selection** (:class:`~abs_ray.label.scorer.Scorer`): with a detector, a background
  thread scores up to ``score_max`` unlabelled images and "next" hands out the least
  confident one that nobody else holds. Until any are scored, and with the saliency prior or
  no model, "next" follows the pool order.
- **Leases** (:class:`~abs_ray.label.leases.LeaseBook`): an image handed out by "next" is kept
  from other people for ``lease_seconds`` or until it is saved; a person who skips an image
  is not offered it again in this run.
- **Retraining** (:class:`~abs_ray.label.retrain.Retrainer`): rounds in a background thread;
  each new detector is used for pre-fill and selection from then on, and a restarted server
  picks up the latest one.

Each part keeps its own lock and calls no other part while holding it, so there is no lock
order to get wrong; the session itself holds none.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from abs_ray.errors import ConfigError
from abs_ray.io import S3Options, encode_png, join
from abs_ray.label.config import LabelConfig
from abs_ray.label.leases import LeaseBook, check_client
from abs_ray.label.pool import ImagePool
from abs_ray.label.predictor import Predictor, least_confident, patch_confidence
from abs_ray.label.retrain import LatestRound, Retrainer, RoundResult, read_latest
from abs_ray.label.scorer import Scorer
from abs_ray.label.store import LabelStore, check_mask_string
from abs_ray.models.detector import load_detector
from abs_ray.models.saliency import BorderContrastSaliency

logger = logging.getLogger(__name__)

__all__ = ["LabelSession"]

#: Tight threshold used to pre-fill from the saliency prior (its logits put 0.5 at z0).
_PRIOR_TIGHT = 0.5


class LabelSession:
    """State shared by every browser labelling one data set into one labels file.

    Args:
        cfg: the app's settings.
        s3: S3 settings; default from the environment.

    Raises:
        ConfigError: no images in the split, a detector or labels file whose grid differs from
            ``cfg.grid``, or a malformed ``latest.json``.
        LayoutError, StorageError: the data set cannot be read.
        LabelFormatError: the existing labels file is malformed.
    """

    def __init__(self, cfg: LabelConfig, s3: S3Options | None = None) -> None:
        if not isinstance(cfg, LabelConfig):
            raise ConfigError(f"cfg must be a LabelConfig, got {type(cfg).__name__}")
        self.cfg = cfg
        self._s3 = s3
        self._pool = ImagePool(cfg.data, cfg.split, cfg.seed, s3)
        self.store = LabelStore(cfg.labels, cfg.grid, s3)
        self.session_key = hashlib.sha1(f"{cfg.data}\n{cfg.labels}".encode()).hexdigest()[:12]
        self._leases = LeaseBook(cfg.lease_seconds)
        self._predictor = Predictor(self._pool.read_rgb, cfg.grid)
        latest = read_latest(cfg.detector_out, s3)
        self._load_initial_model(latest)
        self._retrainer = Retrainer(
            cfg, self._pool.frame, self._use_round, latest.round if latest else 0, s3
        )
        self._scorer = Scorer(
            self._predictor,
            lambda: self._pool.unlabelled(self.labels()),
            cfg.score_max,
            cfg.score_batch,
        )
        self._scorer.start()
        logger.info(
            "labelling %d images of %s (split %s) into %s; model: %s",
            len(self._pool),
            cfg.data,
            cfg.split,
            cfg.labels,
            self._predictor.kind,
        )

    # --- models -------------------------------------------------------------------------------

    def _load_initial_model(self, latest: LatestRound | None) -> None:
        """``cfg.detector_checkpoint``, else the latest retrained one, else the prior (if asked for)."""
        cfg = self.cfg
        if cfg.detector_checkpoint is not None:
            det = load_detector(cfg.detector_checkpoint, s3=self._s3)
            self._predictor.use_detector(det, cfg.detector_checkpoint, "argument")
        elif latest is not None:
            acc = latest.heldout_balanced_patch_accuracy
            extra = {} if acc is None else {"heldout_balanced_patch_accuracy": acc}
            source = join(cfg.detector_out, "latest.json")
            det = load_detector(latest.checkpoint, s3=self._s3)
            self._predictor.use_detector(det, latest.checkpoint, source, **extra)
        elif cfg.prior == "saliency":
            prior = BorderContrastSaliency(grid=cfg.grid, image_size=cfg.detector.image_size)
            self._predictor.use(prior, "prior", dict(prior.config), _PRIOR_TIGHT)

    def _use_round(self, result: RoundResult) -> None:
        """The retrainer's callback: swap the round's detector in and rescore."""
        self._predictor.use_detector(
            result.detector,
            result.checkpoint,
            f"round {result.round}",
            heldout_balanced_patch_accuracy=result.heldout_balanced_patch_accuracy,
        )
        self._scorer.wake()

    # --- images and labels --------------------------------------------------------------------

    def check_id(self, image_id: str) -> str:
        """Return ``image_id`` if it is in the pool, else raise :class:`UnknownImageError`."""
        return self._pool.check_id(image_id)

    def image_png(self, image_id: str) -> bytes:
        """The image as PNG for the page, shrunk to ``display_max`` on its longest side.

        Raises:
            UnknownImageError: not in the pool.
            ImageDecodeError, StorageError: it cannot be read (it is then never handed out).
        """
        rgb = self._pool.read_rgb(self.check_id(image_id))
        if max(rgb.shape[:2]) > self.cfg.display_max:
            img = Image.fromarray(rgb)
            img.thumbnail((self.cfg.display_max, self.cfg.display_max), Image.Resampling.BILINEAR)
            rgb = np.asarray(img)
        return encode_png(rgb)

    def labels(self, records: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
        """``image id -> (CSV info, mask)`` for the records (default: the store's) that match
        pool images (see :meth:`ImagePool.labelled`)."""
        return self._pool.labelled(self.store.records() if records is None else records)

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
        kind, prob, tight = self._predictor.cached(image_id)
        if prob is None and kind != "none" and (saved is None or kind == "detector"):
            prob = self._predictor.predict([image_id]).get(image_id)
            if prob is None:  # unreadable: raise its error for the page
                self._pool.read_rgb(image_id)
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
            "position": self._pool.position(image_id),
            "class": self._pool.label(image_id),
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
        self._leases.release(image_id)
        logger.debug("saved %s (%d fg patches) for client %s", image_id, mask.count("1"), client)
        return {"id": image_id, "saved": True, "records": total, **self.counts()}

    def counts(self) -> dict[str, int]:
        """``labelled`` (pool images with a label), ``target`` and ``total`` (pool size)."""
        return {"labelled": len(self.labels()), "target": self.cfg.target, "total": len(self._pool)}

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
        check_client(client)
        if skip is not None:
            self.check_id(skip)
        candidates = self._pool.unlabelled(self.labels())
        kind, conf = self._predictor.scores()
        by_confidence = kind == "detector"

        def choose(free: Sequence[str]) -> str | None:
            pick = least_confident(conf, free) if by_confidence else None
            return pick if pick is not None else (free[0] if free else None)

        pick = self._leases.claim(client, candidates, choose, skip=skip)
        if pick is None:
            reason = "done"
        else:
            reason = "least_confident" if by_confidence and pick in conf else "pool_order"
        confidence = conf.get(pick) if pick is not None else None
        return {"id": pick, "reason": reason, "confidence": confidence, **self.counts()}

    # --- retraining ---------------------------------------------------------------------------

    def start_training(self) -> dict[str, Any]:
        """Start a retraining round on the labels so far (re-read from storage), in the
        background.

        Returns:
            The round's status (``state = "running"``).

        Raises:
            TrainingBusyError: a round is running.
            NotEnoughLabelsError: fewer than ``min_train_labels`` labelled pool images.
        """
        labels = self.labels(self.store.refresh())
        return self._retrainer.start({image_id: mask for image_id, (_, mask) in labels.items()})

    def training_status(self) -> dict[str, Any]:
        """The current or last round's :class:`~abs_ray.label.retrain.TrainStatus` as a dict."""
        return self._retrainer.status()

    # --- state and shutdown -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What the page's header shows: settings, counts, model, scoring and training.

        ``scored`` / ``to_score`` count unlabelled images (0 / 0 without a detector).
        """
        scored, to_score = self._scorer.progress()
        return {
            "session_key": self.session_key,
            "data": self.cfg.data,
            "labels": self.cfg.labels,
            "split": self.cfg.split,
            "grid": self.cfg.grid,
            **self.counts(),
            "unreadable": self._pool.num_unreadable(),
            "model": self._predictor.describe(),
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
        self._scorer.close(timeout)
        self._retrainer.join(timeout)
