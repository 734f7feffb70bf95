"""uint8 <-> float conversions (:mod:`abs_ray.ops.convert`)."""

import numpy as np
import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import to_float_chw, to_uint8_hwc


def _u8(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_to_float_chw_layout_range_and_device(device):
    u8 = _u8(2, 5, 7, 3)
    x = to_float_chw(u8, device)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32 and x.device.type == device.type
    assert torch.equal(x.cpu(), u8.permute(0, 3, 1, 2).float() / 255)  # pixel (b, y, x, c)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert to_float_chw(u8.to(device)).device.type == device.type  # follows its input
    assert to_float_chw(u8, dtype=torch.float64).dtype == torch.float64


def test_to_float_chw_takes_masks_and_numpy():
    alpha = np.zeros((2, 4, 6), np.uint8)
    alpha[1, 2, 3] = 255
    x = to_float_chw(alpha)
    assert x.shape == (2, 1, 4, 6) and float(x.sum()) == 1.0 and float(x[1, 0, 2, 3]) == 1.0
    rgba = _u8(2, 4, 6, 4).numpy()
    rgb = to_float_chw(rgba[..., :3])  # a non-contiguous slice, as from an RGBA decode
    assert torch.equal(rgb, to_float_chw(torch.from_numpy(rgba.copy()))[:, :3])


def test_round_trip_is_exact(device):
    u8 = _u8(3, 8, 9, 3, seed=1).to(device)
    back = to_uint8_hwc(to_float_chw(u8))
    assert back.device.type == device.type and back.is_contiguous()
    assert torch.equal(back, u8)
    assert to_uint8_hwc(to_float_chw(u8[..., 0])).shape == (3, 8, 9, 1)


def test_to_uint8_hwc_clamps_and_rounds():
    x = torch.tensor([-1.0, 0.0, 0.2, 0.5, 1.0, 3.0]).view(1, 6, 1, 1)
    assert to_uint8_hwc(x).flatten().tolist() == [0, 0, 51, 128, 255, 255]


def test_bad_input_is_typed():
    with pytest.raises(
        ConfigError, match=r"uint8 tensor or array, got shape \(2, 4, 4, 3\) dtype torch.float32"
    ):
        to_float_chw(torch.zeros(2, 4, 4, 3))
    with pytest.raises(ConfigError, match=r"got shape \(4, 3\)"):
        to_float_chw(torch.zeros(4, 3, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="floating dtype"):
        to_float_chw(torch.zeros(1, 4, 4, 3, dtype=torch.uint8), dtype=torch.int32)
    with pytest.raises(ConfigError, match=r"\(B, C, H, W\) floating tensor, got shape \(4, 4, 3\)"):
        to_uint8_hwc(torch.zeros(4, 4, 3))
    with pytest.raises(ConfigError, match="floating tensor, got list"):
        to_uint8_hwc([0.0])
