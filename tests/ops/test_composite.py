"""Compositing (:mod:`abs_ray.ops.composite`): warping, pasting and swapping apply the params
exactly, agree with kornia's ``warp_affine``, and the module agrees with the functions."""

import math

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import (
    BackgroundSwap,
    SwapConfig,
    SwapParams,
    paste_foregrounds,
    sample_swap_params,
    swap_backgrounds,
    warp_foreground,
)

H = W = 32  # the side of conftest's swap_batch


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- compositing properties -------------------------------------------------------------------


def test_identity_params_keep_foreground_exactly(device, swap_batch):
    fg, _, _, bank, _ = swap_batch(device)
    alpha = torch.ones(4, 1, H, W, device=device)
    params = SwapParams.identity(torch.tensor([0, 1, 2, 3], device=device))
    images, used_alpha = swap_backgrounds(fg, alpha, bank, params)
    assert torch.equal(images, fg) and torch.equal(used_alpha, alpha)


def test_alpha_one_keeps_the_warped_foreground_exactly(device, swap_batch):
    fg, _, labels, bank, bank_labels = swap_batch(device)
    alpha = torch.ones(4, 1, H, W, device=device)
    cfg = SwapConfig(keep_in_frame=False)  # let scale/rotation move the full-frame object
    params = sample_swap_params(alpha, labels, bank_labels, cfg, _gen(1))
    assert not torch.all(params.scale == 1)
    warped_fg, warped_alpha = warp_foreground(fg, alpha, params)
    images, _ = swap_backgrounds(fg, alpha, bank, params)
    inside = warped_alpha.expand_as(images) == 1
    assert torch.equal(images[inside], warped_fg[inside])
    chosen = bank[params.bg_index]
    assert torch.equal(images[~inside], chosen[~inside])


def test_alpha_zero_gives_the_chosen_background_exactly(device, swap_batch):
    fg, _, labels, bank, bank_labels = swap_batch(device)
    alpha = torch.zeros(4, 1, H, W, device=device)
    params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(2))
    # empty alpha: identity transform
    assert torch.all(params.scale == 1) and torch.all(params.angle == 0)
    assert torch.all(params.translate == 0)
    images, _ = swap_backgrounds(fg, alpha, bank, params)
    assert torch.equal(images, bank[params.bg_index])


def test_swap_composites_pixelwise(device, swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch(device)
    params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(4))
    images, used = swap_backgrounds(fg, alpha, bank, params)
    warped_fg, warped_alpha = warp_foreground(fg, alpha, params)
    assert images.shape == fg.shape and images.device.type == device.type
    assert torch.equal(used, warped_alpha) and set(used.unique().tolist()) <= {0.0, 1.0}
    assert images.min() >= 0 and images.max() <= 1
    on = used.expand_as(images) == 1
    assert torch.equal(images[on], warped_fg[on])
    assert torch.equal(images[~on], bank[params.bg_index][~on])


def test_integer_shift_moves_image_and_alpha_exactly(device, swap_batch):
    fg, alpha, _, _, _ = swap_batch(device, batch=1)
    params = SwapParams(
        bg_index=torch.tensor([0], device=device),
        scale=torch.ones(1, device=device),
        angle=torch.zeros(1, device=device),
        translate=torch.tensor([[3.0, -2.0]], device=device),  # 3 px right, 2 px up
    )
    warped_fg, warped_alpha = warp_foreground(fg, alpha, params)
    assert torch.equal(warped_alpha[..., :-2, 3:], alpha[..., 2:, :-3])
    assert torch.allclose(warped_fg[..., :-2, 3:], fg[..., 2:, :-3], atol=1e-5)


def test_warp_agrees_with_kornias_warp_affine(device, rect_alphas):
    """The hand-built sampling grid equals kornia's ``warp_affine`` on the same matrix."""
    from kornia.geometry.transform import get_affine_matrix2d, warp_affine

    size = 64
    g = _gen(11)
    fg = torch.rand(16, 3, size, size, generator=g).to(device)
    alpha, _ = rect_alphas(16, size, g)
    alpha = alpha.to(device)
    labels = torch.zeros(16, dtype=torch.long, device=device)
    params = sample_swap_params(alpha, labels, labels[:1], SwapConfig(), _gen(12))
    assert float(params.angle.abs().max()) > 10 and float((params.scale - 1).abs().max()) > 0.2
    centers = []
    for a in alpha[:, 0].cpu() > 0:  # the box centre, found independently of the library
        ys, xs = torch.nonzero(a, as_tuple=True)
        centers.append([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
    center = torch.tensor(centers, dtype=torch.float32, device=device)
    matrix = get_affine_matrix2d(
        params.translate, center, params.scale[:, None].repeat(1, 2), params.angle
    )[:, :2]
    ref_fg = warp_affine(fg, matrix, (size, size), "bilinear", "border", align_corners=True)
    ref_alpha = warp_affine(alpha, matrix, (size, size), "nearest", "zeros", align_corners=True)
    warped_fg, warped_alpha = warp_foreground(fg, alpha, params)
    assert float((warped_fg - ref_fg).abs().max()) < 1e-3
    # nearest-neighbour ties at exact half pixels may round either way: allow a few pixels
    assert float((warped_alpha != ref_alpha).float().mean()) < 1e-3
    assert float(warped_alpha.sum()) > 0.5 * float(alpha.sum())


def test_paste_foregrounds_uses_the_given_backgrounds_in_order(device, swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch(device)
    params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(6))
    expected, expected_alpha = swap_backgrounds(fg, alpha, bank, params)
    chosen = bank[params.bg_index]
    before = chosen.clone()
    images, used = paste_foregrounds(fg, alpha, chosen, params)
    assert torch.equal(images, expected) and torch.equal(used, expected_alpha)
    assert torch.equal(chosen, before)  # a copy unless asked
    images, _ = paste_foregrounds(fg, alpha, chosen, params, inplace=True)
    assert images.data_ptr() == chosen.data_ptr() and torch.equal(chosen, expected)
    with pytest.raises(ConfigError, match="one background per sample"):
        paste_foregrounds(fg, alpha, bank, params)
    with pytest.raises(ConfigError, match="feather_sigma must be a number >= 0"):
        paste_foregrounds(fg, alpha, chosen, params, feather_sigma=-1.0)


def test_feathering_is_inward(device, swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch(device)
    params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(5))
    hard, hard_alpha = swap_backgrounds(fg, alpha, bank, params)
    soft, soft_alpha = swap_backgrounds(fg, alpha, bank, params, feather_sigma=1.5)
    assert torch.all(soft_alpha <= hard_alpha)  # never outside the object's mask
    assert ((soft_alpha > 0) & (soft_alpha < 1)).any()  # and soft at its edges
    outside = hard_alpha.expand_as(hard) == 0
    assert torch.equal(soft[outside], bank[params.bg_index][outside])
    assert not torch.equal(soft, hard)
    with pytest.raises(ConfigError, match="sigma"):
        swap_backgrounds(fg, alpha, bank, params, feather_sigma=-1.0)


def test_module_and_functions_agree(device, swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch(device)
    cfg = SwapConfig(translate=8.0)
    module = BackgroundSwap(cfg, feather_sigma=1.0)
    images, params = module(fg, alpha, labels, bank, bank_labels, _gen(11))
    expected_params = sample_swap_params(alpha, labels, bank_labels, cfg, _gen(11))
    expected, _ = swap_backgrounds(fg, alpha, bank, expected_params, feather_sigma=1.0)
    assert params.to_records() == expected_params.to_records()
    assert torch.equal(images, expected)
    assert "feather_sigma=1.0" in repr(module)


# --- bad input ------------------------------------------------------------------------------


def test_compositing_mismatches_are_typed_with_values(swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch("cpu")
    params = SwapParams.identity(torch.tensor([0, 1, 2, 3]))
    with pytest.raises(
        ConfigError, match=r"backgrounds shape \(5, 3, 16, 16\) .* fg \(4, 3, 32, 32\)"
    ):
        swap_backgrounds(fg, alpha, bank[..., :16, :16], params)
    with pytest.raises(
        ConfigError, match=r"backgrounds \(torch.float64, cpu\) must match fg \(torch.float32"
    ):
        swap_backgrounds(fg, alpha, bank.double(), params)
    with pytest.raises(ConfigError, match=r"alpha shape \(4, 1, 16, 16\)"):
        swap_backgrounds(fg, alpha[..., :16, :16], bank, params)
    with pytest.raises(ConfigError, match="params hold 2 samples, fg has batch size 4"):
        swap_backgrounds(fg, alpha, bank, SwapParams.identity(torch.tensor([0, 1])))
    with pytest.raises(ConfigError, match=r"bg_index must be in \[0, 5\), got range \[0, 5\]"):
        swap_backgrounds(fg, alpha, bank, SwapParams.identity(torch.tensor([0, 1, 2, 5])))
    with pytest.raises(ConfigError, match="fg must be a"):
        warp_foreground(fg[0], alpha, params)
    with pytest.raises(ConfigError, match="bank_labels has 4 entries, backgrounds 5"):
        BackgroundSwap()(fg, alpha, labels, bank, bank_labels[:4])
    with pytest.raises(ConfigError, match="feather_sigma must be a number >= 0"):
        BackgroundSwap(feather_sigma=-1)
    assert math.isclose(BackgroundSwap().cfg.translate, 32.0)
