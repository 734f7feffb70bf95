"""The model that pre-fills the grids and scores images, swapped while pages use it.

:class:`Predictor` holds one model at a time: a detector (pre-fill and active selection), the
zero-shot saliency prior (pre-fill only) or none. Its per-image ``P(background)`` and
confidence are cached for the current model; a swap (a retrained detector) empties the cache,
and a forward pass that started before the swap keeps its answer but does not cache it, so the
cache never mixes two models.

Example:
    >>> class Flat(torch.nn.Module):  # P(background) = 0.5 + 0.1 = 0.6 on every patch
    ...     image_size = 8
    ...     def forward(self, x):
    ...         return torch.full((x.shape[0], 2, 2), 0.405)
    >>> predictor = Predictor(lambda image_id: np.zeros((8, 8, 3), np.uint8), grid=2)
    >>> predictor.use(Flat(), "detector", {}, tight=0.5)
    >>> round(predictor.predict(["a"])["a"].mean().item(), 2), predictor.scores()[1]["a"] > 0
    (0.6, True)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from abs_ray.errors import ConfigError, ImageDecodeError, StorageError
from abs_ray.models.detector import Detector

__all__ = ["MODEL_KINDS", "Predictor", "least_confident", "patch_confidence"]

#: What can pre-fill: a trained detector, the zero-shot prior, or nothing (empty grids).
MODEL_KINDS = ("detector", "prior", "none")


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


def _resize_u8(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> ``(3, size, size)`` uint8, bilinear + antialias, as in training."""
    x = image.float()
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return x.round().clamp(0, 255).to(torch.uint8)


class Predictor:
    """The current pre-fill model and its cached ``P(background)`` per image.

    Two locks: ``_lock`` guards the model slot and the cache and is held only for reads and
    updates, never during a forward pass; ``_forward_lock`` runs one forward pass at a time
    (the scorer and page requests share a few CPU cores). Nothing else is locked while
    either is held.

    Args:
        read_rgb: image id -> ``(H, W, 3)`` uint8; raises ``ImageDecodeError`` or
            ``StorageError`` for an image that cannot be read (it is then left out).
        grid: patches per side ``G`` the labels use; a detector must use the same.
    """

    def __init__(self, read_rgb: Callable[[str], np.ndarray], grid: int) -> None:
        self._read_rgb = read_rgb
        self.grid = grid
        self._lock = threading.Lock()
        self._forward_lock = threading.Lock()
        self._model: nn.Module | None = None
        self._kind = "none"
        self._info: dict[str, Any] = {}
        self._tight = 0.5
        self._generation = 0
        self._prob: dict[str, torch.Tensor] = {}
        self._conf: dict[str, float] = {}

    # --- the model slot --------------------------------------------------------------------

    def use(self, model: nn.Module, kind: str, info: Mapping[str, Any], tight: float) -> None:
        """Swap in ``model`` (kind ``detector`` or ``prior``); the cache starts empty.

        Args:
            model: maps ``(N, 3, S, S)`` float images in ``[0, 1]`` to ``(N, G, G)`` logits of
                ``P(background)``; ``S`` is ``model.config.image_size`` for a
                :class:`~abs_ray.models.detector.Detector`, else ``model.image_size``.
            kind: ``"detector"`` or ``"prior"``.
            info: what the page shows about it (name, checkpoint, ...).
            tight: pre-fill marks a patch foreground when ``P(background) < tight``.

        Raises:
            ConfigError: an unknown ``kind``.
        """
        if kind not in MODEL_KINDS[:2]:
            raise ConfigError(f"kind must be one of {MODEL_KINDS[:2]}, got {kind!r}")
        with self._lock:
            self._model = model.eval()
            self._kind, self._info, self._tight = kind, dict(info), tight
            self._generation += 1
            self._prob.clear()
            self._conf.clear()

    def use_detector(self, det: Detector, uri: str, source: str, **extra: Any) -> None:
        """Swap in a detector loaded from ``uri`` (``source``: how it was chosen).

        Raises:
            ConfigError: its grid differs from :attr:`grid`.
        """
        if det.config.grid != self.grid:
            raise ConfigError(
                f"detector {uri} has grid {det.config.grid}x{det.config.grid}, the labels use "
                f"{self.grid}x{self.grid} (--grid)"
            )
        info = {
            "name": det.config.name,
            "image_size": det.config.image_size,
            "checkpoint": uri,
            "source": source,
            **extra,
        }
        self.use(det, "detector", info, det.config.tight)

    @property
    def kind(self) -> str:
        """``detector``, ``prior`` or ``none``."""
        with self._lock:
            return self._kind

    def describe(self) -> dict[str, Any]:
        """``{"kind": ..., **info}`` of the current model, for the page's header."""
        with self._lock:
            return {"kind": self._kind, **self._info}

    # --- predictions -----------------------------------------------------------------------

    def cached(self, image_id: str) -> tuple[str, torch.Tensor | None, float]:
        """``(kind, cached (G, G) P(background) or None, tight)``, read together."""
        with self._lock:
            return self._kind, self._prob.get(image_id), self._tight

    def scores(self) -> tuple[str, dict[str, float]]:
        """``(kind, {image id: confidence})`` of the current model, read together (a copy)."""
        with self._lock:
            return self._kind, dict(self._conf)

    def predict(self, ids: Sequence[str]) -> dict[str, torch.Tensor]:
        """``P(background)`` ``(G, G)`` of the current model for the readable ``ids``.

        Unreadable images are left out. The answers (and their :func:`patch_confidence`) are
        cached unless the model was swapped during the forward pass.

        Returns:
            ``{image id: (G, G) float tensor in [0, 1]}``; empty without a model.
        """
        with self._lock:
            model, generation = self._model, self._generation
        if model is None or not ids:
            return {}
        size = model.config.image_size if isinstance(model, Detector) else model.image_size
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
        with self._forward_lock, torch.inference_mode():
            prob = torch.sigmoid(model(x)).float()
        conf = patch_confidence(prob).tolist()
        out = dict(zip(kept, prob, strict=True))
        with self._lock:
            if generation == self._generation:
                self._prob.update(out)
                self._conf.update(zip(kept, conf, strict=True))
        return out
