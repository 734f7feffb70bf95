import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import mask_to_patch_labels, patch_coverage, upsample_patch_grid


def _hand_mask() -> torch.Tensor:
    """8x8 mask, 2x2 grid of 4x4 patches with 16, 4, 3 and 0 foreground pixels."""
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, :4, :4] = 1.0  # top-left: full
    mask[0, 0, 0, 4:8] = 1.0  # top-right: one row of 4 = 0.25
    mask[0, 0, 4, 0:3] = 1.0  # bottom-left: 3 pixels = 0.1875
    return mask


def test_coverage_of_hand_made_mask(device):
    coverage = patch_coverage(_hand_mask().to(device), grid=2)
    expected = torch.tensor([[[1.0, 0.25], [0.1875, 0.0]]], device=device)
    assert coverage.shape == (1, 2, 2) and coverage.device.type == device.type
    assert torch.equal(coverage, expected)


def test_coverage_accepts_3d_and_bool_masks_alike(device):
    mask = _hand_mask().to(device)
    four_d = patch_coverage(mask, 2)
    assert torch.equal(patch_coverage(mask[:, 0], 2), four_d)
    assert torch.equal(patch_coverage(mask[:, 0] > 0.5, 2), four_d)


def test_coverage_on_non_square_image():
    mask = torch.zeros(1, 8, 12)
    mask[0, :2, :3] = 1.0  # the top-left 2x3 patch of a 4x4 grid
    coverage = patch_coverage(mask, 4)
    assert coverage.shape == (1, 4, 4)
    assert coverage[0, 0, 0] == 1.0 and coverage.sum() == 1.0


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.25, [[1.0, 1.0], [0.0, 0.0]]),  # 0.25 counts (>=), 0.1875 does not
        (0.18, [[1.0, 1.0], [1.0, 0.0]]),
        (0.3, [[1.0, 0.0], [0.0, 0.0]]),
        (1.0, [[1.0, 0.0], [0.0, 0.0]]),
    ],
)
def test_labels_threshold_coverage(threshold, expected, device):
    labels = mask_to_patch_labels(_hand_mask().to(device), grid=2, threshold=threshold)
    assert labels.dtype == torch.float32
    assert torch.equal(labels, torch.tensor([expected], device=device))


def test_grid_must_divide_image_size():
    with pytest.raises(ConfigError, match=r"patch grid 15 must divide image size 224x224"):
        patch_coverage(torch.zeros(1, 1, 224, 224), 15)
    with pytest.raises(ConfigError, match=r"8x12"):
        patch_coverage(torch.zeros(1, 8, 12), 8)


@pytest.mark.parametrize("grid", [0, -2, 2.0, True, None])
def test_bad_grid_is_typed(grid):
    with pytest.raises(ConfigError, match="patch grid must be a positive int"):
        patch_coverage(torch.zeros(1, 1, 4, 4), grid)


@pytest.mark.parametrize(
    "mask",
    [
        torch.zeros(1, 2, 4, 4),  # two channels
        torch.zeros(4, 4),  # no batch dim
        torch.zeros(1, 1, 4, 4, dtype=torch.uint8),  # 0/255 masks are ambiguous
        [[0.0, 1.0]],
    ],
)
def test_bad_mask_is_typed(mask):
    with pytest.raises(ConfigError, match="mask"):
        patch_coverage(mask, 2)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5, "0.25"])
def test_bad_threshold_is_typed(threshold):
    with pytest.raises(ConfigError, match="threshold"):
        mask_to_patch_labels(torch.zeros(1, 4, 4), 2, threshold=threshold)


def test_upsample_then_coverage_round_trips(device):
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(3, 4, 4, generator=g) > 0.5).float().to(device)
    pixels = upsample_patch_grid(labels, size=(16, 24))
    assert pixels.shape == (3, 1, 16, 24) and pixels.device.type == device.type
    assert torch.equal(patch_coverage(pixels, 4), labels)
    # every patch is a constant block
    assert torch.equal(pixels[:, 0, :4, :6], labels[:, :1, :1].expand(3, 4, 6))


def test_upsample_keeps_soft_values():
    probs = torch.tensor([[[0.1, 0.9]]]).expand(1, 2, 2)  # (1, 2, 2) columns 0.1 | 0.9
    out = upsample_patch_grid(probs, (4, 4))
    assert torch.all(out[..., :2] == probs[0, 0, 0]) and torch.all(out[..., 2:] == probs[0, 0, 1])


@pytest.mark.parametrize(
    ("grid_values", "size", "match"),
    [
        (torch.zeros(1, 1, 2, 2), (4, 4), "grid_values must be a"),
        (torch.zeros(1, 2, 2), (4, 0), "size must be"),
        (torch.zeros(1, 2, 2), 4, "size must be"),
        (torch.zeros(1, 2, 2, dtype=torch.long), (4, 4), "grid_values must be a floating"),
    ],
)
def test_upsample_bad_input_is_typed(grid_values, size, match):
    with pytest.raises(ConfigError, match=match):
        upsample_patch_grid(grid_values, size)
