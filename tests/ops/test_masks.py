import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import dilate_mask, feather_mask, masks_from_background_prob


def test_tight_and_loose_on_hand_made_probs(device):
    prob = torch.tensor([[[0.1, 0.6], [0.95, 0.9]]], device=device)  # P(background)
    tight, loose = masks_from_background_prob(prob, size=(4, 4), tight=0.5, loose=0.9)
    assert tight.shape == loose.shape == (1, 1, 4, 4)
    assert tight.device.type == device.type and tight.dtype == prob.dtype
    expected_tight = torch.tensor([[1.0, 0.0], [0.0, 0.0]], device=device)
    expected_loose = torch.tensor([[1.0, 1.0], [0.0, 0.0]], device=device)  # 0.9 is not < 0.9
    assert torch.equal(tight[0, 0, ::2, ::2], expected_tight)
    assert torch.equal(loose[0, 0, ::2, ::2], expected_loose)
    assert torch.equal(tight[0, 0, :2, :2], torch.ones(2, 2, device=device))


def test_loose_contains_tight(device):
    g = torch.Generator().manual_seed(0)
    prob = torch.rand(4, 8, 8, generator=g).to(device)
    tight, loose = masks_from_background_prob(prob, (32, 32), tight=0.33, loose=0.9)
    assert torch.all(loose >= tight)
    assert set(tight.unique().tolist()) <= {0.0, 1.0}
    assert 0 < tight.sum() < loose.sum() < loose.numel()


def test_equal_thresholds_give_equal_masks():
    prob = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(1))
    tight, loose = masks_from_background_prob(prob, (8, 8), tight=0.6, loose=0.6)
    assert torch.equal(tight, loose)


@pytest.mark.parametrize(
    ("tight", "loose", "match"),
    [
        (0.9, 0.5, "tight threshold 0.9 must be <= loose threshold 0.5"),
        (0.0, 0.9, r"tight must be in \(0, 1\)"),
        (0.5, 1.0, r"loose must be in \(0, 1\)"),
        (-0.1, 0.9, "tight"),
        ("0.5", 0.9, "tight must be a number"),
    ],
)
def test_bad_thresholds_are_typed(tight, loose, match):
    with pytest.raises(ConfigError, match=match):
        masks_from_background_prob(torch.zeros(1, 2, 2), (4, 4), tight=tight, loose=loose)


@pytest.mark.parametrize(
    "prob", [torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), [[0.1]]]
)
def test_bad_prob_is_typed(prob):
    with pytest.raises(ConfigError, match=r"prob must be a \(B, G, G\) floating tensor"):
        masks_from_background_prob(prob, (4, 4))


def test_dilate_grows_a_pixel_into_a_square(device):
    mask = torch.zeros(2, 1, 9, 9, device=device)
    mask[0, 0, 4, 4] = 1.0
    mask[1, 0, 0, 0] = 1.0  # corner: clipped by the frame
    out = dilate_mask(mask, 2)
    assert out.shape == mask.shape and out.device.type == device.type
    assert out[0].sum() == 25 and torch.all(out[0, 0, 2:7, 2:7] == 1)
    assert out[1].sum() == 9
    assert torch.all(out >= mask)


def test_dilate_zero_is_identity(device):
    mask = (torch.rand(1, 1, 6, 6, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    mask = mask.to(device)
    assert torch.equal(dilate_mask(mask, 0), mask)


@pytest.mark.parametrize(
    ("mask", "pixels", "match"),
    [
        (torch.zeros(1, 1, 4, 4), -1, "pixels must be an int >= 0"),
        (torch.zeros(1, 1, 4, 4), 1.5, "pixels must be an int >= 0"),
        (torch.zeros(1, 4, 4), 1, r"mask must be a \(B, C, H, W\) floating tensor"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.bool), 1, "floating tensor"),
    ],
)
def test_dilate_bad_input_is_typed(mask, pixels, match):
    with pytest.raises(ConfigError, match=match):
        dilate_mask(mask, pixels)


def test_feather_softens_edges_and_stays_in_range(device):
    mask = torch.zeros(1, 1, 24, 24, device=device)
    mask[..., 8:16, 8:16] = 1.0
    soft = feather_mask(mask, sigma=1.5)
    assert soft.shape == mask.shape and soft.device.type == device.type
    assert soft.min() >= 0 and soft.max() <= 1
    assert 0 < soft[0, 0, 12, 7] < 0.5 < soft[0, 0, 12, 8] < 1  # either side of the edge
    assert soft[0, 0, 12, 12] > 0.95 and soft[0, 0, 0, 0] < 1e-6
    # total mass is preserved away from the frame
    assert soft.sum().item() == pytest.approx(mask.sum().item(), rel=1e-4)


def test_feather_keeps_constant_masks(device):
    ones = torch.ones(1, 1, 5, 5, device=device)
    torch.testing.assert_close(feather_mask(ones, sigma=3.0), ones)  # larger kernel than image
    assert torch.equal(feather_mask(ones * 0, sigma=1.0), ones * 0)


def test_feather_zero_is_identity():
    mask = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(feather_mask(mask, 0.0), mask)


@pytest.mark.parametrize("sigma", [-1.0, float("nan"), float("inf"), "1"])
def test_feather_bad_sigma_is_typed(sigma):
    with pytest.raises(ConfigError, match="sigma must be a finite number >= 0"):
        feather_mask(torch.zeros(1, 1, 4, 4), sigma)
