"""AutoBackSwap tensor operations: pure, batched torch/kornia functions that follow the device
of their inputs.

- :mod:`~abs_ray.ops.patches`: pixel masks <-> patch-label grids (1 = foreground)
- :mod:`~abs_ray.ops.label_csv`: the published ``info,mask`` hand-label CSV
- :mod:`~abs_ray.ops.masks`: tight/loose masks from ``P(background)``, dilation, feathering
- :mod:`~abs_ray.ops.swap_params`: the swap's random parameters (``SwapConfig``, replayable
  ``SwapParams``, ``sample_swap_params``)
- :mod:`~abs_ray.ops.composite`: applying them: warp, paste, ``swap_backgrounds``, the
  ``BackgroundSwap`` module
- :mod:`~abs_ray.ops.convert`: uint8 ``(B, H, W, C)`` <-> float ``(B, C, H, W)`` in ``[0, 1]``
- :mod:`~abs_ray.ops.fill`: weight-free hole fills (the paper's gray / mean / noise ablations)
- :mod:`~abs_ray.ops.metrics`: group accuracies (WGA), balanced accuracy, mask IoU
"""

from abs_ray.ops.composite import (
    BackgroundSwap,
    paste_foregrounds,
    swap_backgrounds,
    warp_foreground,
)
from abs_ray.ops.convert import to_float_chw, to_uint8_hwc
from abs_ray.ops.fill import fill_gray, fill_mean, fill_noise
from abs_ray.ops.label_csv import PatchLabel, format_patch_label_csv, parse_patch_label_csv
from abs_ray.ops.masks import dilate_mask, feather_mask, masks_from_background_prob
from abs_ray.ops.metrics import GroupMetrics, balanced_accuracy, group_accuracy, mask_iou
from abs_ray.ops.patches import mask_to_patch_labels, patch_coverage, upsample_patch_grid
from abs_ray.ops.swap_params import SwapConfig, SwapParams, sample_swap_params

__all__ = [
    "BackgroundSwap",
    "GroupMetrics",
    "PatchLabel",
    "SwapConfig",
    "SwapParams",
    "balanced_accuracy",
    "dilate_mask",
    "feather_mask",
    "fill_gray",
    "fill_mean",
    "fill_noise",
    "format_patch_label_csv",
    "group_accuracy",
    "mask_iou",
    "mask_to_patch_labels",
    "masks_from_background_prob",
    "parse_patch_label_csv",
    "patch_coverage",
    "paste_foregrounds",
    "sample_swap_params",
    "swap_backgrounds",
    "to_float_chw",
    "to_uint8_hwc",
    "upsample_patch_grid",
    "warp_foreground",
]
