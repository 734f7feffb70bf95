"""Birds benchmark: one paste of a cut-out on a photo."""

from __future__ import annotations

import numpy as np
import pytest

from abs_ray.data.birds import PasteParams, compose_bird
from abs_ray.errors import ConfigError


def test_compose_bird_keeps_the_bird_in_frame_and_flips():
    stamp = np.zeros((10, 30, 4), np.uint8)
    stamp[:, :10] = (255, 0, 0, 255)  # opaque left third
    photo = np.zeros((40, 40, 3), np.uint8)
    for flip in (False, True):
        image, mask, _ = compose_bird(stamp, photo, PasteParams(1.0, 0, 0, 1.0, 1.0, 1.0, flip), 30)
        cols = np.nonzero(mask.any(axis=0))[0]
        assert (cols.min(), cols.max()) == ((20, 29) if flip else (0, 9))
        assert mask[-1].any() or mask[20:].any()
    with pytest.raises(ConfigError, match="stamp must be"):
        compose_bird(stamp[..., :3], photo, PasteParams(1, 0, 0, 1, 0, 0, False), 30)
