"""The single-image path: detector grid -> tight/loose masks -> cut-out and inpainted background."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data
from torch import nn

from abs_ray.errors import ConfigError
from abs_ray.models import Disentangled, create_inpainter, disentangle, disentangle_image
from abs_ray.models.inpainters import AllHoleError

SIZE, GRID = 224, 8  # 28-px patches


def _grid_logits() -> torch.Tensor:
    """(G, G) logits: a 2x2 object core (p=0.02), a ring around it (p=0.7), background (p=0.98)."""
    logits = torch.full((GRID, GRID), 4.0)
    logits[2:6, 3:7] = float(torch.logit(torch.tensor(0.7)))
    logits[3:5, 4:6] = -4.0
    return logits


class FixedDetector(nn.Module):
    """Returns the same logits for every image (a parameter, so it has a device)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone(), requires_grad=False)
        self.dropout = nn.Dropout(0.5)  # would scramble outputs if left in training mode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.logits.expand(images.shape[0], -1, -1).clone())


class DarkIsForeground(nn.Module):
    """A detector that really looks: P(background) rises with the patch's brightness."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        brightness = F.avg_pool2d(images.mean(dim=1, keepdim=True), SIZE // GRID)[:, 0]
        return 20.0 * (brightness - 0.5)


def _expected_masks() -> tuple[torch.Tensor, torch.Tensor]:
    tight = torch.zeros(SIZE, SIZE)
    tight[3 * 28 : 5 * 28, 4 * 28 : 6 * 28] = 1.0
    loose = torch.zeros(SIZE, SIZE)
    loose[2 * 28 : 6 * 28, 3 * 28 : 7 * 28] = 1.0
    return tight, loose


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    pics = [
        cv2.resize(p, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        for p in (data.astronaut(), data.coffee())
    ]
    return torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).float() / 255


def test_masks_background_and_foreground_are_consistent(device, photos):
    images = photos.to(device)
    inpainter = create_inpainter("gray", value=0.5, dilate=3)
    out = disentangle(images, FixedDetector(_grid_logits()).to(device), inpainter)

    assert isinstance(out, Disentangled) and len(out) == 2
    for t in (out.foreground, out.alpha, out.loose, out.background, out.prob):
        assert t.device == images.device and t.dtype == images.dtype
    assert out.foreground.shape == out.background.shape == (2, 3, SIZE, SIZE)
    assert out.alpha.shape == out.loose.shape == (2, 1, SIZE, SIZE)
    torch.testing.assert_close(out.prob, torch.sigmoid(_grid_logits()).expand(2, -1, -1).to(device))

    tight, loose = _expected_masks()
    assert torch.equal(out.alpha.cpu(), tight.expand(2, 1, -1, -1))
    assert torch.equal(out.loose.cpu(), loose.expand(2, 1, -1, -1))
    assert bool((out.alpha <= out.loose).all())  # alpha is inside the loose mask
    assert torch.equal(out.foreground, images * out.alpha)

    hole = inpainter.hole_mask(out.loose).bool().expand_as(images)
    assert torch.equal(out.background[~hole], images[~hole])  # untouched outside dilated loose
    assert bool((out.background[hole] == 0.5).all())  # and filled inside it
    assert int(hole[0, 0].sum()) == (4 * 28 + 6) ** 2  # dilated by 3 px on every side


def test_patchmatch_background_on_real_photos(photos):
    inpainter = create_inpainter("patchmatch")
    out = disentangle(photos, FixedDetector(_grid_logits()), inpainter)
    hole = inpainter.hole_mask(out.loose).bool().expand_as(photos)
    assert torch.equal(out.background[~hole], photos[~hole])
    changed = (out.background - photos).abs()[hole]
    assert float(changed.mean()) > 0.02
    assert float(out.background.min()) >= 0 and float(out.background.max()) <= 1


def test_a_real_detector_cuts_out_the_dark_object():
    images = torch.full((1, 3, SIZE, SIZE), 0.9)
    images[..., 56:112, 84:168] = 0.1  # a dark 2x3-patch object on a bright background
    out = disentangle(images, DarkIsForeground(), create_inpainter("mean"))
    expected = torch.zeros(1, 1, SIZE, SIZE)
    expected[..., 56:112, 84:168] = 1.0
    assert torch.equal(out.alpha, expected)
    # the background is the bright surroundings, the object is gone
    torch.testing.assert_close(out.background, torch.full_like(images, 0.9))


def test_thresholds_move_the_masks(photos):
    detector = FixedDetector(_grid_logits())
    default = disentangle(photos[:1], detector, create_inpainter("gray"))
    strict = disentangle(photos[:1], detector, create_inpainter("gray"), tight=0.01, loose=0.5)
    assert int(strict.alpha.sum()) == 0  # no patch has p < 0.01
    assert torch.equal(strict.loose, default.alpha)  # p < 0.5 is the old tight mask


def test_training_mode_detector_is_run_in_eval_and_restored(photos):
    detector = FixedDetector(_grid_logits()).train()
    out = disentangle(photos[:1], detector, create_inpainter("gray"))
    torch.testing.assert_close(out.prob[0], torch.sigmoid(_grid_logits()))  # no dropout
    assert detector.training


def test_all_loose_image_follows_the_inpainter_policy(photos):
    detector = FixedDetector(torch.full((GRID, GRID), -4.0))  # everything is foreground
    out = disentangle(photos[:1], detector, create_inpainter("patchmatch"))
    assert torch.equal(out.background, torch.full_like(out.background, 0.5))
    with pytest.raises(AllHoleError):
        disentangle(photos[:1], detector, create_inpainter("patchmatch", all_hole="raise"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"images": torch.rand(1, 1, SIZE, SIZE)},
            r"images must be a \(B, 3, H, W\) floating tensor",
        ),
        ({"images": torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8)}, "dtype torch.uint8"),
        ({"detector": lambda x: x}, "detector must be a torch.nn.Module, got function"),
        (
            {"detector": nn.Identity()},
            r"detector must return \(B=1, G, G\) float logits, got shape \(1, 3, 224, 224\)",
        ),
        ({"inpainter": "gray"}, "inpainter must be an Inpainter, got str"),
        ({"tight": 0.95}, "tight threshold 0.95 must be <= loose threshold 0.9"),
        ({"loose": 1.0}, r"loose must be in \(0, 1\)"),
    ],
)
def test_bad_inputs_raise_config_error(kwargs, match):
    args = {
        "images": torch.rand(1, 3, SIZE, SIZE),
        "detector": FixedDetector(_grid_logits()),
        "inpainter": create_inpainter("gray"),
    }
    args.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        disentangle(**args)


def test_grid_that_does_not_divide_the_size_maps_pixels_to_the_nearest_patch():
    out = disentangle(
        torch.rand(1, 3, 210, 200), FixedDetector(_grid_logits()), create_inpainter("gray")
    )
    assert out.alpha.shape == (1, 1, 210, 200)
    rows, cols = out.alpha[0, 0].nonzero().unbind(1)
    # object core = patches 3..4 x 4..5 of 8: pixel centres in [78.75, 131.25) x [100, 150)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (
        79,
        130,
        100,
        149,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_detector_on_another_device_is_a_config_error():
    with pytest.raises(ConfigError, match="detector is on cpu but images are on cuda"):
        disentangle(
            torch.rand(1, 3, SIZE, SIZE, device="cuda"),
            FixedDetector(_grid_logits()),
            create_inpainter("gray"),
        )


def test_disentangle_image_numpy_round_trip(device):
    picture = data.astronaut()  # (512, 512, 3) uint8
    detector = FixedDetector(_grid_logits()).to(device)
    out = disentangle_image(picture, detector, create_inpainter("telea"), size=SIZE)
    assert set(out) == {"foreground_rgba", "background", "alpha", "loose", "prob"}
    assert (
        out["foreground_rgba"].shape == (SIZE, SIZE, 4) and out["foreground_rgba"].dtype == np.uint8
    )
    assert out["background"].shape == (SIZE, SIZE, 3) and out["background"].dtype == np.uint8
    assert out["prob"].shape == (GRID, GRID) and out["prob"].dtype == np.float32
    tight, loose = _expected_masks()
    np.testing.assert_array_equal(out["alpha"], (tight.numpy() * 255).astype(np.uint8))
    np.testing.assert_array_equal(out["loose"], (loose.numpy() * 255).astype(np.uint8))
    np.testing.assert_array_equal(out["foreground_rgba"][..., 3], out["alpha"])
    assert not out["foreground_rgba"][..., :3][out["alpha"] == 0].any()  # black outside alpha
    # the batched path on the same resized picture gives the same numbers
    tensor = torch.from_numpy(picture).permute(2, 0, 1)[None].float().div(255).to(device)
    tensor = F.interpolate(tensor, size=(SIZE, SIZE), mode="bilinear", antialias=True).clamp(0, 1)
    batched = disentangle(tensor, detector, create_inpainter("telea")).numpy(0)
    np.testing.assert_array_equal(batched["background"], out["background"])


def test_disentangle_image_rejects_bad_pictures():
    detector, inpainter = FixedDetector(_grid_logits()), create_inpainter("gray")
    with pytest.raises(
        ConfigError, match=r"\(H, W, 3\) uint8 array, got shape \(224, 224\) dtype uint8"
    ):
        disentangle_image(np.zeros((SIZE, SIZE), np.uint8), detector, inpainter)
    with pytest.raises(ConfigError, match="dtype float32"):
        disentangle_image(np.zeros((SIZE, SIZE, 3), np.float32), detector, inpainter)
    with pytest.raises(ConfigError, match="size must be a positive int"):
        disentangle_image(np.zeros((SIZE, SIZE, 3), np.uint8), detector, inpainter, size=(0, 5))
    with pytest.raises(ConfigError, match=r"index must be an int in \[0, 1\)"):
        disentangle(torch.rand(1, 3, SIZE, SIZE), detector, inpainter).numpy(3)
