import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops.fill import fill_gray, fill_mean, fill_noise


@pytest.mark.parametrize("fill", [fill_gray, fill_mean, fill_noise])
def test_unmasked_pixels_are_kept_exactly(fill, device):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 8, 8, generator=g).to(device)
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float().to(device)
    out = fill(img, mask)
    assert out.shape == img.shape and out.device == img.device
    keep = mask.expand_as(img) == 0
    assert torch.equal(out[keep], img[keep])
    assert not torch.equal(out[~keep], img[~keep])


def test_mean_fill_uses_unmasked_mean(device):
    img = torch.zeros(1, 3, 4, 4, device=device)
    img[..., :2] = 1.0  # left half white
    mask = torch.zeros(1, 1, 4, 4, device=device)
    mask[..., 3] = 1.0  # hole in the right column; unmasked mean = 8/12
    out = fill_mean(img, mask)
    torch.testing.assert_close(out[0, :, 0, 3], torch.full((3,), 8 / 12, device=device))


def test_noise_fill_replays_with_seed():
    img, mask = torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 4)
    a = fill_noise(img, mask, torch.Generator().manual_seed(3))
    b = fill_noise(img, mask, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_shape_mismatch_is_typed():
    with pytest.raises(ConfigError, match=r"mask must be \(B, 1, H, W\)"):
        fill_gray(torch.zeros(1, 3, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ConfigError, match=r"image must be"):
        fill_mean(torch.zeros(1, 4, 4), torch.zeros(1, 1, 4, 4))
