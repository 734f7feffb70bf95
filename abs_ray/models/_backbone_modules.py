"""The nn.Modules behind the backbone registry (:mod:`abs_ray.models.backbones`) and their
builders ``(weights, s3) -> module``.

Each module takes ``(B, 3, H, W)`` float RGB in ``[0, 1]``, normalises inside and has
``feature_dim``, ``feature_channels``, ``feature_strides``, ``forward`` (pooled feature),
``feature_maps`` and, where it can be partly frozen, ``split``. ``weights`` here is already
checked by the registry entry: ``"default"``/``"imagenet"`` (see :data:`PRETRAINED`), None or
a state-dict URI.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.io import S3Options
from abs_ray.models._registry import (
    WeightsUnavailableError,
    load_state_dict_file,
    load_state_dict_strict,
)
from abs_ray.models.efficientnet_lite import (
    LITE0_FEATURE_DIM,
    LITE0_STAGES,
    EfficientNetLite0,
    efficientnet_lite0,
    load_lite0_state_dict,
)

logger = logging.getLogger(__name__)

#: ``weights`` values that ask for a backbone's pretrained weights.
PRETRAINED = ("default", "imagenet")
#: ImageNet channel statistics the torchvision backbones normalise with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_split(k: int, blocks: int, name: str) -> None:
    if not 1 <= k <= blocks:
        raise ConfigError(
            f"{name} has {blocks} blocks: trainable_blocks must be in 1..{blocks}, got {k}"
        )


# --- building blocks --------------------------------------------------------------------------


class _Lambda(nn.Module):
    """A parameter-free step of a backbone chain (input scaling, pooling)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3))


def _tapped(x: torch.Tensor, steps: Sequence[nn.Module], taps: Sequence[int]) -> list[torch.Tensor]:
    """Run ``steps`` in order up to the last tap; the outputs of the steps at ``taps``."""
    maps = []
    for i, step in enumerate(steps[: taps[-1] + 1]):
        x = step(x)
        if i in taps:
            maps.append(x)
    return maps


# --- EfficientNet-Lite0 (packaged ImageNet weights, offline) ----------------------------------


def _lite0_taps(strides: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Block index and channels of the last block at each stride, from ``LITE0_STAGES``."""
    last: dict[int, tuple[int, int]] = {}
    stride, index = 2, -1  # the stem has stride 2
    for _kernel, s, _expand, out_ch, repeats in LITE0_STAGES:
        stride, index = stride * s, index + repeats
        last[stride] = (index, out_ch)
    return tuple(last[s][0] for s in strides), tuple(last[s][1] for s in strides)


LITE0_STRIDES = (8, 16, 32)
LITE0_TAPS, LITE0_CHANNELS = _lite0_taps(LITE0_STRIDES)
#: MBConv blocks ``split`` can leave trainable.
LITE0_BLOCKS = sum(stage[-1] for stage in LITE0_STAGES)


class Lite0Backbone(nn.Module):
    feature_dim = LITE0_FEATURE_DIM
    feature_channels = LITE0_CHANNELS
    feature_strides = LITE0_STRIDES

    def __init__(self, model: EfficientNetLite0) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the last MBConv block at strides 8, 16 and 32."""
        m = self.model
        steps = [_Lambda(m.normalize), m.stem, *m.blocks]
        return _tapped(x, steps, [t + 2 for t in LITE0_TAPS])

    def split(self, k: int) -> tuple[nn.Module, nn.Module]:
        """``(prefix, tail)``: tail = the last ``k`` MBConv blocks, the head conv and pooling."""
        m = self.model
        n = len(m.blocks)
        check_split(k, n, "efficientnet_lite0")
        prefix = nn.Sequential(_Lambda(m.normalize), m.stem, *m.blocks[: n - k])
        tail = nn.Sequential(*m.blocks[n - k :], m.head, _Lambda(_global_pool))
        return prefix, tail


def build_lite0(weights: str | None, s3: S3Options | None) -> nn.Module:
    model = efficientnet_lite0(pretrained=weights in PRETRAINED, num_classes=0)
    if weights is not None and weights not in PRETRAINED:
        load_lite0_state_dict(model, load_state_dict_file(weights, s3))
    return Lite0Backbone(model)


# --- torchvision classifiers (ImageNet weights downloaded) ------------------------------------


@dataclasses.dataclass(frozen=True)
class TorchvisionLayout:
    """How to turn one torchvision classifier into a backbone.

    Attributes:
        builder: ``torchvision.models`` function name (the registry name too).
        weights: ImageNet weight enum member, as ``"<Enum>.<member>"``.
        classifier: attribute replaced by identity (its input is the pooled feature).
        feature_dim: size of that pooled feature.
        feature_channels: channels of the stride-8, 16 and 32 maps.
        trunk: the model's modules in forward order up to the stride-32 map.
        taps: positions in ``trunk`` of the stride-8, 16 and 32 maps.
    """

    builder: str
    weights: str
    classifier: str
    feature_dim: int
    feature_channels: tuple[int, int, int]
    trunk: Callable[[Any], list[nn.Module]]
    taps: tuple[int, int, int]


def _resnet_trunk(m: Any) -> list[nn.Module]:
    return [m.conv1, m.bn1, m.relu, m.maxpool, m.layer1, m.layer2, m.layer3, m.layer4]


def _efficientnet_trunk(m: Any) -> list[nn.Module]:
    return list(m.features)  # stem conv, 7 stages, head conv


TORCHVISION_STRIDES = (8, 16, 32)
#: The torchvision backbones, by registry name.
TORCHVISION_LAYOUTS = {
    layout.builder: layout
    for layout in (
        TorchvisionLayout(
            "efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", "classifier", 1280,
            (40, 112, 320), _efficientnet_trunk, (3, 5, 7),
        ),
        TorchvisionLayout(
            "resnet18", "ResNet18_Weights.IMAGENET1K_V1", "fc", 512, (128, 256, 512),
            _resnet_trunk, (5, 6, 7),  # layer2, layer3, layer4
        ),
        TorchvisionLayout(
            "resnet50", "ResNet50_Weights.IMAGENET1K_V2", "fc", 2048, (512, 1024, 2048),
            _resnet_trunk, (5, 6, 7),
        ),
    )
}  # fmt: skip


class _TorchvisionBackbone(nn.Module):
    """A torchvision classifier without its last layer; ImageNet normalisation inside.

    ``feature_maps`` runs the layout's trunk module by module: the trunk is a plain chain,
    which is simpler than tracing the model with torchvision's ``create_feature_extractor``
    and keeps one set of submodules.
    """

    feature_strides = TORCHVISION_STRIDES

    def __init__(self, model: nn.Module, layout: TorchvisionLayout) -> None:
        super().__init__()
        self.model = model
        self.feature_dim = layout.feature_dim
        self.feature_channels = layout.feature_channels
        self._layout = layout
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the stages at strides 8, 16 and 32."""
        return _tapped(self.normalize(x), self._layout.trunk(self.model), self._layout.taps)


def _torchvision_state(
    name: str, weights_enum: Any, weights: str | None, s3: S3Options | None
) -> tuple[dict[str, torch.Tensor] | None, str]:
    """``(state dict or None, where it came from)`` for a torchvision backbone."""
    if weights is None:
        return None, ""
    if weights not in PRETRAINED:
        return load_state_dict_file(weights, s3), weights
    try:
        return weights_enum.get_state_dict(progress=False, check_hash=True), str(weights_enum)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; bad hash a RuntimeError
        raise WeightsUnavailableError(
            f"{name}: could not download torchvision weights {weights_enum} from "
            f"{weights_enum.url} ({type(exc).__name__}: {exc}). Without internet, download "
            "that file elsewhere and pass weights='<its local path or s3:// URI>', or use "
            "backbone 'efficientnet_lite0' (pretrained offline)"
        ) from exc


def build_torchvision(name: str, weights: str | None, s3: S3Options | None) -> nn.Module:
    """Build the torchvision backbone ``name`` (a key of :data:`TORCHVISION_LAYOUTS`)."""
    import torchvision.models

    layout = TORCHVISION_LAYOUTS[name]
    model = getattr(torchvision.models, layout.builder)(weights=None)
    enum_name, member = layout.weights.split(".")
    state, source = _torchvision_state(
        name, getattr(getattr(torchvision.models, enum_name), member), weights, s3
    )
    if state is not None:
        if not any(k.startswith(layout.classifier + ".") for k in state):  # backbone-only file
            setattr(model, layout.classifier, nn.Identity())
        load_state_dict_strict(model, state, what=name)
        logger.info("%s: loaded weights from %s", name, source)
    setattr(model, layout.classifier, nn.Identity())
    return _TorchvisionBackbone(model, layout)


# --- test_tiny (random init, for fast tests) --------------------------------------------------


class TinyBackbone(nn.Module):
    """Three stride-2 conv blocks (8, 16, 32 channels), average-pooled to 4x4 and flattened.

    The 4x4 pooling keeps coarse layout in the pooled feature, so a detector head on it can
    still tell patches apart.
    """

    feature_channels = (8, 16, 32)
    feature_strides = (2, 4, 8)
    feature_dim = feature_channels[-1] * 4 * 4

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Module:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU()
            )

        ins = (3, *self.feature_channels[:-1])
        self.body = nn.Sequential(*map(block, ins, self.feature_channels))
        self.pool = nn.AdaptiveAvgPool2d(4)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 - 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.body(self.normalize(x))).flatten(1)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of the three conv blocks."""
        return _tapped(x, [_Lambda(self.normalize), *self.body], (1, 2, 3))

    def split(self, k: int) -> tuple[nn.Module, nn.Module]:
        """``(prefix, tail)``: tail = the last ``k`` conv blocks and the pooling."""
        n = len(self.body)
        check_split(k, n, "test_tiny")
        prefix = nn.Sequential(_Lambda(self.normalize), *self.body[: n - k])
        tail = nn.Sequential(*self.body[n - k :], self.pool, nn.Flatten(1))
        return prefix, tail


def build_tiny(weights: str | None, s3: S3Options | None) -> nn.Module:
    model = TinyBackbone()
    if weights not in (None, "default"):
        load_state_dict_strict(model, load_state_dict_file(weights, s3), what="test_tiny")
    return model
