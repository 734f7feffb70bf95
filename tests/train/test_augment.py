"""The on-device training augmentation: background bank, swap, crop/flip, CutMix, RandAugment."""

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import SwapConfig, swap_backgrounds
from abs_ray.train.augment import (
    CropParams,
    RecentBackgrounds,
    apply_crop,
    sample_crop_params,
    sample_grid,
    swap_batch,
)

RED = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
STILL = SwapConfig(scale=(1.0, 1.0), degrees=0.0, translate=0.0)


def _batch(device, n=4, size=32):
    """Red squares (the foreground) on a mid-gray original background, and their alphas."""
    alpha = torch.zeros(n, 1, size, size)
    alpha[:, :, 10:20, 12:22] = 1.0
    images = alpha * RED + (1 - alpha) * 0.5
    return images.to(device), alpha.to(device)


def _bank(device, size=32):
    """Class 0 backgrounds are dark (51), class 1 bright (204); neither is the original 128."""
    bank = RecentBackgrounds(8)
    values = torch.tensor([51, 51, 51, 204], dtype=torch.uint8)
    backgrounds = values.view(-1, 1, 1, 1).expand(-1, 3, size, size).contiguous()
    bank.add(backgrounds.to(device), torch.tensor([0, 0, 0, 1], device=device))
    return bank


def test_bank_is_a_ring_buffer():
    bank = RecentBackgrounds(3)
    bank.add(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 0]))
    bank.add(torch.full((2, 3, 4, 4), 9, dtype=torch.uint8), torch.tensor([1, 1]))
    assert len(bank) == 3
    assert sorted(bank.labels.tolist()) == [0, 1, 1]
    assert int((bank.images == 9).all(dim=(1, 2, 3)).sum()) == 2
    with pytest.raises(ConfigError, match="uint8"):
        bank.add(torch.zeros(1, 3, 4, 4), torch.tensor([0]))
    with pytest.raises(ConfigError, match="differs"):
        bank.add(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.tensor([0]))
    with pytest.raises(ConfigError, match="empty"):
        _ = RecentBackgrounds(2).images


def test_swap_replaces_background_and_keeps_foreground(device):
    images, alpha = _batch(device)
    labels = torch.zeros(4, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(0)
    out, swapped, params = swap_batch(images, alpha, labels, _bank(device), STILL, 1.0, gen)
    assert out.device.type == device.type and swapped.all()
    fg = alpha.bool().expand_as(images)
    assert torch.equal(out[fg], images[fg])  # the foreground pixels, exactly
    chosen = torch.where(params.bg_index == 3, 204, 51).to(device).float() / 255
    background = out.masked_select(~fg).view(4, -1)
    assert torch.allclose(background, chosen[:, None].expand_as(background))
    assert not torch.isclose(background, torch.tensor(0.5, device=device)).any()


def test_swap_with_paper_ranges_agrees_with_the_ops(device):
    images, alpha = _batch(device, n=6)
    labels = torch.tensor([0, 1, 0, 1, 0, 1], device=device)
    bank = _bank(device)
    gen = torch.Generator().manual_seed(3)
    out, _, params = swap_batch(images, alpha, labels, bank, SwapConfig(), 1.0, gen)
    expected, warped = swap_backgrounds(images, alpha, bank.images.float() / 255, params)
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.equal(params.scale, torch.ones_like(params.scale))  # it did move
    inside = warped.bool().expand_as(out)
    red = (out - RED.to(device)).abs().amax(dim=1) < 1e-6
    assert red.flatten(1).any(dim=1).all()  # every sample keeps a foreground
    assert not torch.isclose(out[~inside], torch.tensor(0.5, device=device)).any()


def test_swap_draws_background_classes_uniformly(device):
    n = 2000
    images, alpha = _batch(device, n=n, size=16)
    labels = torch.zeros(n, dtype=torch.long, device=device)  # one class in the batch
    bank = _bank(device, size=16)  # 3 backgrounds of class 0, 1 of class 1
    _, _, params = swap_batch(images, alpha, labels, bank, STILL, 1.0, torch.Generator())
    share = float((bank.labels[params.bg_index] == 1).float().mean())
    assert 0.45 < share < 0.55


def test_swap_probability(device):
    images, alpha = _batch(device, n=1000, size=16)
    labels = torch.zeros(1000, dtype=torch.long, device=device)
    bank = _bank(device, size=16)
    out, swapped, _ = swap_batch(images, alpha, labels, bank, STILL, 0.0, torch.Generator())
    assert torch.equal(out, images) and not swapped.any()
    out, swapped, _ = swap_batch(images, alpha, labels, bank, STILL, 0.5, torch.Generator())
    assert 0.4 < float(swapped.float().mean()) < 0.6
    assert torch.equal(out[~swapped], images[~swapped])
    with pytest.raises(ConfigError, match="swap_prob"):
        swap_batch(images, alpha, labels, bank, STILL, 1.5)


def test_crop_and_flip(device):
    images = torch.rand(3, 3, 20, 20, device=device)
    full = CropParams.full(3, 20, 20)
    assert torch.allclose(apply_crop(images, full, 20), images, atol=1e-5)
    out = apply_crop(images, CropParams(full.boxes, torch.tensor([True, False, True])), 20)
    assert torch.allclose(out[0], images[0].flip(-1), atol=1e-5)
    assert torch.allclose(out[1], images[1], atol=1e-5)
    left = CropParams(torch.tensor([[0.0, 0.0, 9.0, 19.0]]).repeat(3, 1), full.flip)
    out = apply_crop(images, left, 20)  # the left half, stretched to full width
    assert torch.allclose(out[..., 0], images[..., 0], atol=1e-5)
    assert torch.allclose(out[..., -1], images[..., 9], atol=1e-5)

    params = sample_crop_params(500, 20, 24, (0.7, 1.0), True, torch.Generator().manual_seed(0))
    x0, y0, x1, y1 = params.boxes.unbind(dim=1)
    assert (x0 >= 0).all() and (y0 >= 0).all()
    assert (x1 <= 23 + 1e-4).all() and (y1 <= 19 + 1e-4).all()
    area = (x1 - x0 + 1) * (y1 - y0 + 1) / (20 * 24)
    assert area.max() <= 1 + 1e-4 and area.min() < 0.8
    assert 0.3 < float(params.flip.float().mean()) < 0.7
    assert apply_crop(torch.rand(500, 3, 20, 24, device=device), params, 16).shape == (
        500,
        3,
        16,
        16,
    )
    with pytest.raises(ConfigError, match="crop scale"):
        sample_crop_params(2, 8, 8, (0.0, 1.0))


def test_sample_grid_layout():
    sheet = sample_grid([torch.zeros(5, 3, 4, 4), torch.ones(5, 3, 4, 4)], max_samples=3)
    assert sheet.shape == (8, 12, 3) and sheet.dtype == torch.uint8
    assert int(sheet[:4].max()) == 0 and int(sheet[4:].min()) == 255


def test_cutmix_mixes_boxes_and_reports_the_mixed_fraction():
    from abs_ray.train.augment import cutmix

    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 16, 16).contiguous()
    gen = torch.Generator().manual_seed(0)
    draws = [cutmix(images, gen, p=1.0) for _ in range(20)]
    mixed = [(out, d) for out, d in draws if d.lam < 1.0]
    assert mixed, "p=1 must mix"
    for out, draw in mixed:
        for i in range(4):
            own = (out[i] == i).float().mean().item()
            other = (out[i] == float(draw.perm[i])).float().mean().item()
            if int(draw.perm[i]) != i:  # the box holds the partner's pixels, the rest its own
                assert own == pytest.approx(draw.lam) and other == pytest.approx(1 - draw.lam)
    # p=0 never mixes, and leaves the batch untouched.
    out, draw = cutmix(images, gen, p=0.0)
    assert draw.lam == 1.0 and torch.equal(out, images)


def test_heavy_augment_keeps_shape_range_and_changes_pixels(device):
    from abs_ray.train.augment import heavy_augment

    torch.manual_seed(0)
    images = torch.rand(8, 3, 32, 32, device=device)
    out = heavy_augment(images)
    assert out.shape == images.shape and out.device.type == device.type
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, images)
