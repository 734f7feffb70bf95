"""The mask sheet marks the predicted foreground and the true mask's outline."""

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.models.detector_train import mask_sheet


def test_mask_sheet_marks_prediction_and_truth():
    images = torch.full((2, 3, 16, 16), 200, dtype=torch.uint8)
    prob = torch.ones(2, 2, 2)
    prob[:, 0, 0] = 0.0  # top-left patch predicted foreground
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[:, :, 4:12, 4:12] = True
    sheet = mask_sheet(images, prob, masks, columns=2)
    assert sheet.shape == (16, 64, 3)
    assert tuple(sheet[1, 1]) == (200, 200, 200)  # predicted foreground: untouched
    assert sheet[1, 14, 0] > sheet[1, 14, 1]  # predicted background: darkened, red tint
    assert tuple(sheet[4, 8]) == (0, 255, 0)  # true-mask outline
    assert tuple(sheet[0, 20]) == (0, 0, 0) and tuple(sheet[12, 28]) == (255, 255, 255)
    with pytest.raises(ConfigError, match="mask_sheet needs"):
        mask_sheet(images[:0], prob[:0])
