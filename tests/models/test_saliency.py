"""The zero-shot mask source: interface, and that it finds synthetic objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from abs_ray.data import SyntheticConfig, generate_synthetic
from abs_ray.errors import ConfigError
from abs_ray.models.saliency import BorderContrastSaliency
from abs_ray.ops import mask_iou
from abs_ray.ops.masks import masks_from_background_prob


@pytest.fixture(scope="module")
def synthetic_samples():
    """Four 64-px synthetic samples (image, exact mask, clean background), both classes."""
    return list(generate_synthetic(SyntheticConfig(n_train=0, n_val=0, n_test=4, size=64, seed=11)))


def test_interface_and_bad_input():
    sal = BorderContrastSaliency(grid=4, image_size=32, pretrained=False)
    logits = sal(torch.rand(3, 3, 32, 32))
    assert logits.shape == (3, 4, 4) and torch.isfinite(logits).all()
    with pytest.raises(ConfigError, match=r"\(B, 3, 32, 32\)"):
        sal(torch.rand(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="must divide"):
        BorderContrastSaliency(grid=5, image_size=32, pretrained=False)


def test_finds_synthetic_objects(synthetic_samples):
    """Pretrained (packaged, offline) features: mean IoU with the exact masks well above chance."""
    sal = BorderContrastSaliency()
    images = torch.stack(
        [torch.from_numpy(s.image).permute(2, 0, 1).float() / 255 for s in synthetic_samples]
    )
    truth = torch.stack([torch.from_numpy(s.mask == 255) for s in synthetic_samples])[:, None]
    with torch.inference_mode():
        prob = torch.sigmoid(sal(F.interpolate(images, size=224, mode="bilinear", antialias=True)))
    tight, loose = masks_from_background_prob(prob, (64, 64))
    iou = mask_iou(tight, truth.float())
    assert float(iou.mean()) > 0.6, iou
    assert bool((loose >= tight).all())
    coverage = (loose * truth).sum() / truth.sum()  # the inpainted region covers the objects
    assert float(coverage) > 0.9
    assert np.isfinite(prob.numpy()).all()
