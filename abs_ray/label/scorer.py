"""Scoring for active selection: a background thread keeps unlabelled images scored.

With a detector in the :class:`~abs_ray.label.predictor.Predictor`, the scorer runs it on up
to ``score_max`` *unlabelled* images (in pool order, ``score_batch`` at a time), so that
"next" can hand out the one it is least sure about; as images get labelled, more are scored.
With the saliency prior or no model it does nothing: the prior's confidence says nothing
about what a detector would get wrong.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from abs_ray.errors import ConfigError
from abs_ray.label.predictor import Predictor

logger = logging.getLogger(__name__)

__all__ = ["Scorer"]


class Scorer:
    """A daemon thread that scores unlabelled images with the predictor's detector.

    It holds no lock of its own: it reads the predictor (under the predictor's lock) and
    calls :meth:`Predictor.predict`, which caches the scores. :meth:`wake` makes it look
    again at once (after a model swap or a save); otherwise it looks every second.

    Args:
        predictor: the model slot whose detector scores.
        pending: the unlabelled readable image ids, in the order to score them.
        score_max: unlabelled images kept scored, ``>= 0``.
        score_batch: images a forward pass, ``>= 1``.

    Raises:
        ConfigError: ``score_max`` or ``score_batch`` out of range.
    """

    def __init__(
        self,
        predictor: Predictor,
        pending: Callable[[], list[str]],
        score_max: int,
        score_batch: int,
    ) -> None:
        if score_max < 0 or score_batch < 1:
            raise ConfigError(
                f"score_max must be >= 0 and score_batch >= 1, got {score_max}, {score_batch}"
            )
        self._predictor = predictor
        self._pending = pending
        self.score_max, self.score_batch = score_max, score_batch
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="label-scorer", daemon=True)

    def _plan(self) -> tuple[list[str], int]:
        """(pending ids not yet scored, how many pending ids are scored); ([], 0) unless the
        predictor holds a detector."""
        kind, conf = self._predictor.scores()
        if kind != "detector":
            return [], 0
        pending = self._pending()
        todo = [i for i in pending if i not in conf]
        return todo, len(pending) - len(todo)

    def progress(self) -> tuple[int, int]:
        """``(scored, to_score)``: unlabelled images scored, and how many will be."""
        todo, scored = self._plan()
        return scored, min(self.score_max, scored + len(todo))

    def next_batch(self) -> list[str]:
        """The images the next forward pass scores (empty when there is nothing to do)."""
        todo, scored = self._plan()
        return todo[: max(min(self.score_batch, self.score_max - scored), 0)]

    @property
    def alive(self) -> bool:
        """Whether the thread runs."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def wake(self) -> None:
        """Look for work now rather than within a second."""
        self._wake.set()

    def close(self, timeout: float) -> None:
        """Stop the thread and wait up to ``timeout`` seconds for it."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self.next_batch()
            if not batch:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self._predictor.predict(batch)
            except Exception:  # a scoring failure must not kill the thread; it is logged
                logger.exception("scoring %d images failed", len(batch))
                self._stop.wait(5.0)
