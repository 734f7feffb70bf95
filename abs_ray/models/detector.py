"""The method's secondary network: an image backbone and a head that predicts, for each
patch of a ``G x G`` grid, the logit of ``P(background)``.

Two heads (``head=``), either on any backbone of the registry:

- ``"dense"`` (the default): the backbone's spatial feature maps (``feature_maps``: strides
  8/16/32 for Lite0, 40 + 112 + 320 channels) each resampled to ``G x G`` by adaptive average
  pooling and concatenated, then Conv1x1 -> BN -> GELU -> Conv3x3 -> BN -> GELU -> Dropout ->
  Conv1x1 to one logit per patch. Every labelled image gives ``G^2`` labelled patches whose
  prediction reads the features *at that patch*; on the birds benchmark (224 px, G 16, frozen
  Lite0) it reaches held-out mask IoU about 0.6 where the pooled head stays near 0.4.
- ``"pooled"`` (the paper's, kept for fidelity and ablation): pooled backbone feature
  ``(B, F)`` -> Dropout(0.2) -> Linear(F, 2 G^2) -> GELU -> Linear(2 G^2, G^2) -> reshape.

``sigmoid(logit)`` is ``P(background)``; the training target is ``1 - foreground patch
label`` (see :mod:`abs_ray.ops.patches`).

Backbones come from the shared registry (:mod:`abs_ray.models.backbones`): the detector
offers ``efficientnet_lite0`` (ImageNet, offline; the default), ``efficientnet_b0`` (the
paper's; downloads), ``resnet50`` (downloads) and ``test_tiny`` (for fast tests). ``weights``
is ``"default"``, ``"imagenet"``, ``None`` (random init, no I/O) or the URI of a backbone
state-dict file (local or ``s3://``), as that module says.

``freeze_backbone`` freezes the backbone (head-only training); with ``trainable_blocks=k``
the backbone's last ``k`` blocks stay trainable (``efficientnet_lite0``: MBConv blocks, 16 in
all; ``test_tiny``: conv blocks). Frozen parts run without autograd and keep their BatchNorm
statistics.

A checkpoint (:func:`save_detector` / :func:`load_detector`) stores the state dict with the
:class:`DetectorConfig` (its ``head`` included) and a JSON ``meta`` record (label source,
metrics, ...); loading rebuilds the model with ``weights=None``, so it needs no network.
Checkpoints written before the dense head existed have no ``head`` and load as ``"pooled"``.
The dense head can be trained with the backbone frozen (whole) or unfrozen, not partly
frozen (its taps reach into the middle of the backbone).

Example:
    >>> det = create_detector("test_tiny", grid=4, image_size=32).eval()
    >>> det(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 4, 4])
    >>> create_detector("test_tiny", grid=4, image_size=32, head="pooled").config.head
    'pooled'
    >>> create_detector("test_tiny", grid=15, image_size=224)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: patch grid 15 must divide image size 224
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from abs_ray._checks import check_int, check_number
from abs_ray.errors import ConfigError
from abs_ray.io import S3Options, read_bytes, write_bytes
from abs_ray.models._registry import WeightsMismatchError, load_state_dict_strict
from abs_ray.models.backbones import (
    backbone_names,
    backbone_spec,
    check_backbone,
    check_rgb_batch,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FORMAT",
    "HEADS",
    "DenseFeatures",
    "DenseHead",
    "Detector",
    "DetectorConfig",
    "check_trainable_blocks",
    "create_detector",
    "detector_names",
    "load_detector",
    "save_detector",
]

#: Value of the ``format`` key in every detector checkpoint.
CHECKPOINT_FORMAT = "abs_ray.detector/1"

#: Detector heads: ``"dense"`` (per patch, from feature maps) and ``"pooled"`` (the paper's).
HEADS = ("dense", "pooled")


# --- configuration ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """What defines a detector's architecture and how its output is read.

    Attributes:
        name: backbone name, one of :func:`detector_names`.
        head: ``"dense"`` or ``"pooled"`` (see the module docstring).
        grid: patches per side ``G``; must divide ``image_size``.
        image_size: side of the square ``(S, S)`` input the detector takes.
        dropout: dropout before the head's first linear layer, in ``[0, 1)``.
        tight: tight-mask threshold on ``P(background)`` (foreground where ``p < tight``).
        loose: loose-mask threshold (foreground where ``p < loose``), ``>= tight``.

    Raises:
        ConfigError: unknown name, ``grid`` not dividing ``image_size``, a value out of range.
    """

    name: str = "efficientnet_lite0"
    head: str = "dense"
    grid: int = 16
    image_size: int = 224
    dropout: float = 0.2
    tight: float = 0.5
    loose: float = 0.9

    def __post_init__(self) -> None:
        backbone_spec(self.name, "detector")
        if self.head not in HEADS:
            raise ConfigError(f"unknown detector head {self.head!r}; known: {', '.join(HEADS)}")
        check_int("grid", self.grid, minimum=1)
        check_int("image_size", self.image_size, minimum=8)
        if self.image_size % self.grid:
            raise ConfigError(f"patch grid {self.grid} must divide image size {self.image_size}")
        check_number("dropout", self.dropout, 0, 1, high_open=True)
        check_number("tight", self.tight, 0, 1, low_open=True, high_open=True)
        check_number("loose", self.loose, 0, 1, low_open=True, high_open=True)
        if self.tight > self.loose:
            raise ConfigError(f"tight threshold {self.tight} must be <= loose {self.loose}")

    @property
    def patch_size(self) -> int:
        """Pixels per patch side, ``image_size // grid``."""
        return self.image_size // self.grid


# --- the model --------------------------------------------------------------------------------


class DenseFeatures(nn.Module):
    """A backbone's feature maps, each resampled to ``G x G`` and concatenated:
    ``(B, 3, S, S)`` -> ``(B, sum(feature_channels), G, G)``.

    Adaptive average pooling resamples (it averages where a map is finer than ``G`` and
    repeats where it is coarser). It holds no parameters of its own, so :class:`Detector`
    keeps it outside its registered submodules (the backbone's state-dict keys stay as they
    are).
    """

    def __init__(self, backbone: nn.Module, grid: int) -> None:
        super().__init__()
        self.backbone, self.grid = backbone, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.backbone.feature_maps(x)
        return torch.cat([F.adaptive_avg_pool2d(m, self.grid) for m in maps], dim=1)


class DenseHead(nn.Module):
    """Per-patch convolutions on :class:`DenseFeatures`: ``(B, C, G, G)`` -> ``(B, G, G)``.

    Conv1x1(C, width) -> BN -> GELU -> Conv3x3(width, width) -> BN -> GELU -> Dropout ->
    Conv1x1(width, 1): each patch reads its own features and, through the 3x3, its
    neighbours'.
    """

    def __init__(self, in_channels: int, width: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class Detector(nn.Module):
    """Backbone + head (dense or pooled) -> ``(B, G, G)`` logits of ``P(background)``.

    The forward pass runs in two parts: a *frozen prefix* of the backbone (run without
    autograd) and a *trainable tail* (the rest of the backbone, then the head). By default the
    prefix is empty; :meth:`freeze_backbone` moves the whole backbone, or all but its last
    ``k`` blocks (pooled head only), into the prefix. Training code may cache
    :meth:`frozen_features` of augmented images and train on :meth:`logits_from_frozen`.

    Args:
        backbone: a registry backbone (:mod:`abs_ray.models.backbones`): ``feature_dim``,
            ``forward`` to ``(B, feature_dim)``, ``feature_channels`` / ``feature_maps`` for
            the dense head, optionally ``split(k) -> (prefix, tail)`` for partial freezing.
        config: the :class:`DetectorConfig` (head, grid, image size, thresholds).

    Attributes:
        config: the :class:`DetectorConfig`.
        meta: JSON-able record loaded with a checkpoint (label source, metrics); ``{}`` if new.
        backbone_frozen: whether (part of) the backbone is frozen.
        trainable_blocks: last backbone blocks left trainable while frozen (0 = none).
    """

    def __init__(self, backbone: nn.Module, config: DetectorConfig) -> None:
        super().__init__()
        feature_dim = check_int("backbone.feature_dim", getattr(backbone, "feature_dim", None), 1)
        g2 = config.grid * config.grid
        self.config = config
        self.meta: dict[str, Any] = {}
        self.backbone = backbone
        # What the head reads, from images: kept in a tuple so that it is not registered as a
        # second path to the backbone's parameters.
        self._trunk: tuple[nn.Module] = (backbone,)
        if config.head == "dense":
            channels = sum(int(c) for c in backbone.feature_channels)
            self.head: nn.Module = DenseHead(channels, dropout=config.dropout)
            self._trunk = (DenseFeatures(backbone, config.grid),)
        else:
            self.head = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(feature_dim, 2 * g2),
                nn.GELU(),
                nn.Linear(2 * g2, g2),
            )
        self.backbone_frozen = False
        self.trainable_blocks = 0
        # (frozen prefix, trainable tail): views of the trunk, kept in a tuple so that they
        # are not registered twice as submodules.
        self._parts: tuple[nn.Module, nn.Module] = (nn.Identity(), self._trunk[0])

    @property
    def feature_dim(self) -> int:
        """Size of the pooled backbone feature ``F``."""
        return int(self.backbone.feature_dim)

    def freeze_backbone(self, frozen: bool = True, trainable_blocks: int = 0) -> Detector:
        """Freeze the backbone (or all but its last blocks), or unfreeze it.

        Frozen parameters get no gradients and frozen BatchNorm layers keep their statistics:
        ``train()`` leaves the frozen prefix in eval mode.

        Args:
            frozen: freeze (True) or make everything trainable (False).
            trainable_blocks: with ``frozen``, leave the last ``k`` blocks of the backbone
                (and everything after them) trainable; 0 freezes the whole backbone. Needs the
                pooled head and a backbone whose registry entry has ``split_blocks``
                (``efficientnet_lite0``, ``test_tiny``).

        Returns:
            ``self``.

        Raises:
            ConfigError: ``trainable_blocks`` is negative, too large, or not supported by the
                backbone or the head, or given without ``frozen``.
        """
        k = check_trainable_blocks(self.config.name, self.config.head, trainable_blocks)
        if k and not frozen:
            raise ConfigError(
                "trainable_blocks needs frozen=True (an unfrozen backbone trains all)"
            )
        trunk = self._trunk[0]
        if not frozen:
            prefix, tail = nn.Identity(), trunk
        elif k == 0:
            prefix, tail = trunk, nn.Identity()
        else:
            prefix, tail = self.backbone.split(k)
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        for p in tail.parameters():
            p.requires_grad_(True)
        self.backbone_frozen, self.trainable_blocks = bool(frozen), k
        self._parts = (prefix, tail)
        return self.train(self.training)

    def train(self, mode: bool = True) -> Detector:
        """Set training mode; a frozen prefix of the backbone stays in eval mode."""
        super().train(mode)
        if self.backbone_frozen:
            self._parts[0].eval()
        return self

    def check_images(self, images: object) -> torch.Tensor:
        """Validate detector input (shape and dtype only, no device sync).

        Raises:
            ConfigError: not a ``(B, 3, S, S)`` floating tensor with ``S = image_size``.
        """
        return check_rgb_batch(images, "detector input", self.config.image_size)

    def frozen_features(self, images: torch.Tensor) -> torch.Tensor:
        """Output of the frozen prefix, without autograd (the images themselves if unfrozen).

        With a frozen backbone and a fixed augmentation this is a pure function of the image,
        so training code may cache it.

        Args:
            images: ``(B, 3, S, S)`` float RGB in ``[0, 1]``.

        Returns:
            A ``(B, ...)`` tensor (``(B, F)`` when the whole backbone is frozen).

        Raises:
            ConfigError: as :meth:`check_images`.
        """
        images = self.check_images(images)
        with torch.no_grad():
            return self._parts[0](images)

    def logits_from_frozen(self, frozen: torch.Tensor) -> torch.Tensor:
        """The trainable tail and the head on :meth:`frozen_features`' output.

        Returns:
            ``(B, G, G)`` logits.
        """
        return self.head_logits(self._parts[1](frozen))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head reads (the frozen prefix runs without autograd).

        Args:
            images: ``(B, 3, S, S)`` float RGB in ``[0, 1]``.

        Returns:
            ``(B, F)`` pooled features (pooled head) or ``(B, C, G, G)`` resampled feature
            maps (dense head).

        Raises:
            ConfigError: as :meth:`check_images`.
        """
        if not self.backbone_frozen:
            return self._trunk[0](self.check_images(images))
        return self._parts[1](self.frozen_features(images))

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Head on :meth:`features`' output -> ``(B, G, G)`` logits."""
        g = self.config.grid
        return self.head(features).reshape(features.shape[0], g, g)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Per-patch logits of ``P(background)``.

        Args:
            images: ``(B, 3, S, S)`` float RGB in ``[0, 1]``, ``S = config.image_size``.

        Returns:
            ``(B, G, G)`` float logits; ``sigmoid`` gives ``P(background)``.

        Raises:
            ConfigError: as :meth:`check_images`.
        """
        return self.head_logits(self.features(images))

    @torch.no_grad()
    def background_prob(self, images: torch.Tensor) -> torch.Tensor:
        """``P(background)`` per patch, without autograd (call ``.eval()`` first for inference).

        Args:
            images: ``(B, 3, S, S)`` float RGB in ``[0, 1]``.

        Returns:
            ``(B, G, G)`` float in ``[0, 1]``.

        Raises:
            ConfigError: as :meth:`check_images`.
        """
        return torch.sigmoid(self(images))


# --- factory ----------------------------------------------------------------------------------


def detector_names() -> tuple[str, ...]:
    """Names :func:`create_detector` accepts, sorted."""
    return backbone_names("detector")


def check_trainable_blocks(name: str, head: str, trainable_blocks: object) -> int:
    """``trainable_blocks`` checked against the backbone ``name`` and the ``head``.

    Raises:
        ConfigError: out of range for the backbone, or ``> 0`` with the dense head (its
            feature taps sit inside the backbone, so a frozen prefix cannot end before them).
    """
    k = backbone_spec(name).check_trainable_blocks(trainable_blocks)
    if k and head == "dense":
        raise ConfigError(
            f"the dense head trains on a whole frozen or an unfrozen backbone, not a partly "
            f"frozen one (trainable_blocks={k}); use trainable_blocks=0 or head='pooled'"
        )
    return k


def create_detector(
    name: str = "efficientnet_lite0",
    grid: int = 16,
    image_size: int = 224,
    weights: str | None = "default",
    freeze_backbone: bool = False,
    *,
    head: str = "dense",
    trainable_blocks: int = 0,
    dropout: float = 0.2,
    tight: float = 0.5,
    loose: float = 0.9,
    device: torch.device | str | None = None,
    s3: S3Options | None = None,
) -> Detector:
    """Build a detector by backbone name.

    Args:
        name: one of :func:`detector_names` (``efficientnet_lite0``, ``efficientnet_b0``,
            ``resnet50``, ``test_tiny``).
        grid: patches per side ``G``; must divide ``image_size``.
        image_size: side ``S`` of the square input.
        weights: backbone weights: ``"default"`` (pretrained where the backbone has weights:
            packaged offline for Lite0, downloaded for torchvision; random for ``test_tiny``),
            ``"imagenet"``, ``None`` (random init, no I/O) or the URI of a state-dict file.
        freeze_backbone: freeze the backbone (no gradients, BatchNorm statistics kept).
        head: ``"dense"`` (per-patch, from feature maps) or ``"pooled"`` (the paper's MLP).
        trainable_blocks: with ``freeze_backbone``, leave the backbone's last ``k`` blocks
            trainable (see :meth:`Detector.freeze_backbone`).
        dropout: head dropout.
        tight: tight-mask threshold stored with the detector.
        loose: loose-mask threshold stored with the detector.
        device: where to put the model (default CPU).
        s3: S3 settings for an ``s3://`` weights URI; default from the environment.

    Returns:
        The :class:`Detector`, in training mode.

    Raises:
        ConfigError: unknown name (lists the known ones), ``grid`` not dividing
            ``image_size``, a value out of range, ``"imagenet"`` for ``test_tiny``, or
            ``trainable_blocks`` the backbone cannot split off (all before any I/O).
        WeightsUnavailableError: pretrained weights cannot be obtained (no network for a
            torchvision download, Lite0 package missing).
        WeightsMismatchError: a state-dict file does not fit the backbone.
        StorageError: the weights URI cannot be read.
    """
    config = DetectorConfig(
        name=name,
        head=head,
        grid=grid,
        image_size=image_size,
        dropout=dropout,
        tight=tight,
        loose=loose,
    )
    spec = check_backbone(name, "detector", weights=weights, trainable_blocks=trainable_blocks)
    check_trainable_blocks(name, head, trainable_blocks)
    model = Detector(spec(weights, s3), config)
    if freeze_backbone or trainable_blocks:
        model.freeze_backbone(bool(freeze_backbone), trainable_blocks)
    return model.to(device) if device is not None else model


# --- checkpoints ------------------------------------------------------------------------------


def save_detector(
    model: Detector,
    uri: str,
    meta: Mapping[str, Any] | None = None,
    s3: S3Options | None = None,
) -> None:
    """Write a detector checkpoint to any URI (atomic for local files).

    The file is a ``torch.save`` dict: ``format``, ``config`` (the :class:`DetectorConfig`
    fields), ``meta`` (JSON text) and ``state_dict`` (CPU tensors).

    Args:
        model: the detector.
        uri: local path or ``s3://bucket/key``.
        meta: JSON-able record to keep with the weights, e.g. ``{"label_source": {...},
            "metrics": {...}}``; ``None`` keeps ``model.meta``.
        s3: S3 settings; default from the environment.

    Raises:
        ConfigError: ``model`` is not a :class:`Detector` or ``meta`` is not JSON-able.
        StorageError: the write fails.
    """
    if not isinstance(model, Detector):
        raise ConfigError(f"save_detector needs a Detector, got {type(model).__name__}")
    record = dict(model.meta if meta is None else meta)
    try:
        meta_json = json.dumps(record, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"detector meta must be JSON-serialisable: {exc}") from exc
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dataclasses.asdict(model.config),
        "meta": meta_json,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    write_bytes(uri, buf.getvalue(), s3)
    logger.info("saved detector %s (G=%d) to %s", model.config.name, model.config.grid, uri)


def load_detector(
    uri: str, device: torch.device | str = "cpu", s3: S3Options | None = None
) -> Detector:
    """Read a checkpoint written by :func:`save_detector`; no network needed.

    Args:
        uri: local path or ``s3://bucket/key``.
        device: where to put the model.
        s3: S3 settings; default from the environment.

    Returns:
        The :class:`Detector` in eval mode, with ``config`` and ``meta`` restored.

    Raises:
        StorageNotFoundError: nothing at ``uri``.
        StorageError: any other storage failure.
        WeightsMismatchError: the file is not a detector checkpoint or its weights do not fit.
        ConfigError: its config is invalid (e.g. an unknown backbone name).
    """
    data = read_bytes(uri, s3)
    try:
        payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise WeightsMismatchError(f"{uri}: not a detector checkpoint ({exc})") from exc
    if not isinstance(payload, Mapping) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, Mapping) else type(payload).__name__
        raise WeightsMismatchError(
            f"{uri}: not a detector checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT!r})"
        )
    # Checkpoints from before the dense head have no "head": they are pooled.
    config = DetectorConfig(**{"head": "pooled", **payload["config"]})
    model = create_detector(
        config.name,
        head=config.head,
        grid=config.grid,
        image_size=config.image_size,
        weights=None,
        dropout=config.dropout,
        tight=config.tight,
        loose=config.loose,
    )
    load_state_dict_strict(model, payload["state_dict"], what=f"detector checkpoint {uri}")
    model.meta = json.loads(payload.get("meta") or "{}")
    logger.info("loaded detector %s (G=%d) from %s", config.name, config.grid, uri)
    return model.to(device).eval()
