"""Train the patch detector from a few hundred patch-labelled images (the paper's recipe).

- :mod:`~abs_ray.models.detector_train.augment`: the joint image + patch-grid augmentation
- :mod:`~abs_ray.models.detector_train.labels`: patch labels from a CSV or from masks, loading
- :mod:`~abs_ray.models.detector_train.config`: :class:`DetectorTrainConfig`
- :mod:`~abs_ray.models.detector_train.fit`: the fit loop, :func:`fit_detector`
- :mod:`~abs_ray.models.detector_train.evaluate`: balanced patch accuracy, mask IoU
- :mod:`~abs_ray.models.detector_train.sheet`: the mask sheet
- :mod:`~abs_ray.models.detector_train.run`: :func:`train_detector`, the whole run

Recipe (:class:`DetectorTrainConfig` defaults): the labelled images are split 80/20 into
train/val; BCE on ``1 - label`` (target 1 = background) with label smoothing 0.1; SGD with
momentum 0.9 and weight decay 1e-5, lr 0.3 for the head; ReduceLROnPlateau and early
stopping on validation balanced patch accuracy; augmentation applied to image and label grid
together (horizontal/vertical flips, 90-degree rotations, shifts by whole patches up to +-4,
wrapped or zero-filled), then colour jitter (0.2, 0.2, 0.2, 0.02) and grayscale (p = 0.2) on
the image only.
"""

from abs_ray.models.detector_train.augment import (
    AugmentConfig,
    AugmentParams,
    apply_augment,
    sample_augment_params,
)
from abs_ray.models.detector_train.config import DetectorTrainConfig
from abs_ray.models.detector_train.evaluate import (
    IOU_REPORT_THRESHOLDS,
    describe_metrics,
    evaluate_detector,
    predict_background_prob,
)
from abs_ray.models.detector_train.fit import FitResult, fit_detector
from abs_ray.models.detector_train.labels import (
    LabelledImages,
    csv_labels_for_manifest,
    load_labelled_images,
    split_train_val,
)
from abs_ray.models.detector_train.run import train_detector
from abs_ray.models.detector_train.sheet import mask_sheet

__all__ = [
    "IOU_REPORT_THRESHOLDS",
    "AugmentConfig",
    "AugmentParams",
    "DetectorTrainConfig",
    "FitResult",
    "LabelledImages",
    "apply_augment",
    "csv_labels_for_manifest",
    "describe_metrics",
    "evaluate_detector",
    "fit_detector",
    "load_labelled_images",
    "mask_sheet",
    "predict_background_prob",
    "sample_augment_params",
    "split_train_val",
    "train_detector",
]
