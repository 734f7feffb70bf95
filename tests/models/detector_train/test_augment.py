"""The joint augmentation: image and patch grid move together, colour changes the image
only, draws replay exactly."""

import dataclasses

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.models.detector_train import AugmentConfig, apply_augment, sample_augment_params
from abs_ray.ops.patches import upsample_patch_grid


def _random_grids(b: int, g: int, seed: int) -> torch.Tensor:
    return (torch.rand(b, g, g, generator=torch.Generator().manual_seed(seed)) < 0.3).float()


@pytest.mark.parametrize("fill", ["wrap", "zeros"])
def test_geometry_moves_image_and_grid_together(fill, geometry_only):
    """An image painted from its grid stays equal to its grid, upsampled, after augmentation."""
    labels = _random_grids(16, 8, seed=1)
    images = upsample_patch_grid(labels, (32, 32)).expand(-1, 3, -1, -1).contiguous()
    cfg = dataclasses.replace(geometry_only, shift_fill=fill)
    params = sample_augment_params(16, cfg, torch.Generator().manual_seed(2))
    assert params.shift.abs().max() > 0 and params.rot90.unique().numel() > 1  # non-trivial draw
    out_img, out_lab = apply_augment(images, labels, params, fill)
    assert torch.equal(out_img, upsample_patch_grid(out_lab, (32, 32)).expand(-1, 3, -1, -1))
    changed = (out_lab != labels).flatten(1).any(dim=1)
    assert changed.sum() >= 8  # most samples did move
    if fill == "wrap":  # wrapping keeps every patch
        assert torch.equal(out_lab.sum(dim=(1, 2)), labels.sum(dim=(1, 2)))


def test_colour_jitter_changes_image_only_and_stays_in_range():
    images = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = _random_grids(8, 4, seed=3)
    cfg = dataclasses.replace(AugmentConfig.none(), brightness=0.2, hue=0.02, grayscale=0.5)
    params = sample_augment_params(8, cfg, torch.Generator().manual_seed(4))
    out_img, out_lab = apply_augment(images, labels, params)
    assert torch.equal(out_lab, labels)
    assert not torch.allclose(out_img, images)
    assert float(out_img.min()) >= 0.0 and float(out_img.max()) <= 1.0
    gray = out_img[params.grayscale]
    assert params.grayscale.any() and torch.allclose(gray[:, 0], gray[:, 1])


def test_identity_params_and_reproducible_draws():
    images, labels = torch.rand(4, 3, 16, 16), _random_grids(4, 4, seed=5)
    none = sample_augment_params(4, AugmentConfig.none(), torch.Generator().manual_seed(0))
    out_img, out_lab = apply_augment(images, labels, none)
    assert torch.allclose(out_img, images, atol=1e-6) and torch.equal(out_lab, labels)
    a = sample_augment_params(4, AugmentConfig(), torch.Generator().manual_seed(9))
    b = sample_augment_params(4, AugmentConfig(), torch.Generator().manual_seed(9))
    assert all(torch.equal(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    with pytest.raises(ConfigError, match="shift_fill"):
        AugmentConfig(shift_fill="reflect")
    with pytest.raises(ConfigError, match="G dividing S"):
        apply_augment(torch.rand(4, 3, 16, 16), _random_grids(4, 5, 0), none)


def test_colour_jitter_is_torchvisions_formulas():
    """jitter_colour (kornia.enhance inside) equals torchvision's functional ops applied per
    image in the documented order: brightness, contrast, saturation, hue."""
    from torchvision.transforms.v2 import functional as TF

    from abs_ray.models.detector_train.augment import jitter_colour

    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    cfg = dataclasses.replace(AugmentConfig.none(), brightness=0.3, contrast=0.3, hue=0.05)
    cfg = dataclasses.replace(cfg, saturation=0.3)
    p = sample_augment_params(4, cfg, torch.Generator().manual_seed(7))
    expected = torch.stack(
        [
            TF.adjust_hue(
                TF.adjust_saturation(
                    TF.adjust_contrast(TF.adjust_brightness(img, float(b)), float(c)), float(s)
                ),
                float(h),
            )
            for img, b, c, s, h in zip(
                images, p.brightness, p.contrast, p.saturation, p.hue, strict=True
            )
        ]
    )
    # 1e-4: torchvision's luminance weights are 0.2989/0.587/0.114, kornia's 0.299/0.587/0.114
    assert torch.allclose(jitter_colour(images, p), expected, atol=1e-4)
