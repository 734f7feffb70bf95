"""Inpainters: registry, the shared contract on real photos, edge cases, TorchScript plug-in."""

from __future__ import annotations

import io
import logging
import warnings

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

from abs_ray.errors import ConfigError, StorageNotFoundError
from abs_ray.io import write_bytes
from abs_ray.models.inpainters import (
    DEFAULT_INPAINTER,
    AllHoleError,
    Inpainter,
    InpainterOutputError,
    create_inpainter,
    inpainter_names,
)
from abs_ray.ops.scramble import patch_scramble

NAMES = ("gray", "mean", "noise", "patch_scramble", "patchmatch", "telea", "torchscript")
SIZE = 224


# --- TorchScript modules the tests export ------------------------------------------------------


class MeanFill(nn.Module):
    """Fills the hole with the known pixels' mean colour; writes garbage (3.0) everywhere else."""

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        known = 1.0 - mask
        mean = (image * known).sum(dim=(2, 3), keepdim=True) / known.sum(
            dim=(2, 3), keepdim=True
        ).clamp_min(1.0)
        return mean * mask + 3.0 * known


class Identity(nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image


class HalfSize(nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image[:, :, ::2, ::2]


class NaNs(nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return image * float("nan")


def _script_bytes(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated; it still works
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def script_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ts")
    for name, module in {
        "mean": MeanFill(),
        "identity": Identity(),
        "half": HalfSize(),
        "nan": NaNs(),
    }.items():
        (root / f"{name}.pt").write_bytes(_script_bytes(module))
    return root


def _make(name: str, script_dir, **kwargs) -> Inpainter:
    if name == "torchscript":
        kwargs.setdefault("uri", str(script_dir / "mean.pt"))
    if name in ("noise", "patch_scramble"):
        kwargs.setdefault("seed", 0)
    return create_inpainter(name, **kwargs)


# --- real photos with a bird-sized blob hole ---------------------------------------------------


def _blob(center: tuple[int, int], axes: tuple[int, int], angle: float) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(mask, center, axes, angle, 0, 360, 1, -1)
    # a "head" on one side so the hole is not convex
    cv2.circle(mask, (center[0] + axes[0], center[1] - axes[1] // 2), axes[1] // 2, 1, -1)
    return mask


@pytest.fixture(scope="module")
def photos() -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 3, 224, 224) astronaut + coffee in [0, 1], and a (2, 1, 224, 224) {0, 1} blob hole."""
    pics = [
        cv2.resize(p, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        for p in (data.astronaut(), data.coffee())
    ]
    image = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).float() / 255
    masks = np.stack([_blob((100, 120), (40, 28), 20.0), _blob((130, 90), (35, 30), -10.0)])
    mask = torch.from_numpy(masks).float()[:, None]
    return image, mask


# --- registry ------------------------------------------------------------------------------


def test_registry_lists_every_inpainter():
    assert inpainter_names() == NAMES
    assert DEFAULT_INPAINTER == "patchmatch"


def test_unknown_name_lists_known_ones():
    with pytest.raises(
        ConfigError, match=r"unknown inpainter 'lama'; known: gray, mean, .*torchscript"
    ):
        create_inpainter("lama")


def test_unknown_argument_lists_accepted_ones():
    with pytest.raises(
        ConfigError, match=r"'telea' does not accept \['patch'\].*accepted: radius, dilate"
    ):
        create_inpainter("telea", patch=3)


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("gray", {"dilate": -1}, "dilate must be an int >= 0"),
        ("mean", {"dilate": 1.5}, "dilate must be an int >= 0"),
        ("mean", {"all_hole": "ignore"}, "all_hole must be one of gray, raise"),
        ("gray", {"value": 2.0}, r"value must be a number in \[0, 1\]"),
        ("patch_scramble", {"patch": 0}, "patch must be an int >= 1"),
        ("noise", {"seed": "x"}, "seed must be an int or None"),
        ("telea", {"radius": 0}, "radius must be an int >= 1"),
        ("patchmatch", {"patch_size": 0}, "patch_size must be an int >= 1"),
        ("torchscript", {"uri": ""}, "uri must be a non-empty str"),
    ],
)
def test_bad_settings_raise_config_error(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        create_inpainter(name, **kwargs)


def test_config_round_trips_through_the_factory():
    inpainter = create_inpainter("patch_scramble", patch=8, seed=3, dilate=2)
    config = inpainter.config()
    assert config == {
        "name": "patch_scramble",
        "dilate": 2,
        "all_hole": "gray",
        "patch": 8,
        "seed": 3,
    }
    assert create_inpainter(config.pop("name"), **config).config() == inpainter.config()


# --- the contract, for every registered inpainter, on real photos ----------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_contract_on_photos(name, photos, script_dir):
    image, mask = photos
    inpainter = _make(name, script_dir)
    out = inpainter(image, mask)

    assert out.shape == image.shape and out.dtype == image.dtype and out.device == image.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    hole = inpainter.hole_mask(mask).bool().expand_as(image)
    assert hole.sum() > mask.sum() * 3  # the hole was dilated (3 px by default)
    assert torch.equal(out[~hole], image[~hole])  # known pixels bit-identical
    # The hole is filled: clearly not the zero-filled input, and changed from the object.
    assert float(out[hole].mean()) > 0.1
    assert float((out - image).abs()[hole].mean()) > 0.02


@pytest.mark.parametrize("name", ["patchmatch", "telea"])
def test_fill_matches_its_surroundings(name, photos, script_dir):
    """Content-aware fills join the known ring around the hole without a jump."""
    image, mask = photos
    inpainter = _make(name, script_dir)
    out = inpainter(image, mask)
    hole = inpainter.hole_mask(mask)
    inner_edge = (hole - 1 + torch.nn.functional.max_pool2d(1 - hole, 3, 1, 1)).clamp(0, 1) * hole
    ring = torch.nn.functional.max_pool2d(hole, 5, 1, 2) - hole
    for b in range(image.shape[0]):
        edge_colour = out[b][:, inner_edge[b, 0] > 0].mean(dim=1)
        ring_colour = out[b][:, ring[b, 0] > 0].mean(dim=1)
        removed_colour = image[b][:, hole[b, 0] > 0].mean(dim=1)
        jump = float((edge_colour - ring_colour).abs().max())
        assert jump < 0.05
        assert jump < 0.5 * float((removed_colour - ring_colour).abs().max())


@pytest.mark.parametrize("name", [n for n in NAMES if n != "noise"])
def test_removed_object_does_not_leak(name, script_dir):
    """A red object on a blue/green striped background: no hole pixel comes out red."""
    image = torch.zeros(1, 3, 64, 64)
    image[:, 1, ::8] = 0.8  # green stripes every 8 rows
    image[:, 2] = 0.7  # blue everywhere
    image[:, :, 20:40, 24:44] = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    mask = torch.zeros(1, 1, 64, 64)
    mask[:, :, 20:40, 24:44] = 1.0
    inpainter = _make(
        name, script_dir, dilate=2, **({"patch": 8} if name == "patch_scramble" else {})
    )
    out = inpainter(image, mask)
    red = (out[:, 0] > 0.5) & (out[:, 1] < 0.3)
    assert not bool(red.any())
    assert torch.equal(out[:, :, :10], image[:, :, :10])


# --- edge cases ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_empty_mask_returns_input_unchanged(name, photos, script_dir):
    image, _ = photos
    out = _make(name, script_dir)(image, torch.zeros(2, 1, SIZE, SIZE))
    assert torch.equal(out, image)
    assert out.data_ptr() != image.data_ptr()  # a copy, not an alias


@pytest.mark.parametrize("name", ["gray", "patchmatch", "telea", "torchscript", "patch_scramble"])
def test_all_hole_image_becomes_gray_with_a_warning(name, photos, script_dir, caplog):
    image, mask = photos
    batch = torch.cat([image[:1], image[1:], image[:1]])
    masks = torch.cat([torch.ones(1, 1, SIZE, SIZE), mask[1:], torch.zeros(1, 1, SIZE, SIZE)])
    with caplog.at_level(logging.WARNING, logger="abs_ray.models.inpainters"):
        out = _make(name, script_dir)(batch, masks)
    assert torch.equal(out[0], torch.full_like(out[0], 0.5))
    assert "covers all of image(s) [0]" in caplog.text
    assert not torch.equal(out[1], batch[1])  # the normal image of the batch is still filled
    assert torch.equal(out[2], batch[2])  # the empty-mask image is untouched


def test_hole_that_covers_everything_after_dilation_counts_as_all_hole():
    image = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 2::5, 2::5] = 1.0  # a sparse grid that dilation by 3 closes up
    with pytest.raises(AllHoleError, match=r"dilate=3\) covers all of image\(s\) \[0\]"):
        create_inpainter("mean", all_hole="raise")(image, mask)
    out = create_inpainter("mean", dilate=0, all_hole="raise")(image, mask)
    assert torch.equal(out[mask.expand_as(out) == 0], image[mask.expand_as(image) == 0])


@pytest.mark.parametrize(
    ("image_shape", "mask_shape", "match"),
    [
        (
            (2, 3, 32, 32),
            (2, 1, 32, 31),
            r"mask shape \(2, 1, 32, 31\) does not match image shape \(2, 3, 32, 32\)",
        ),
        ((2, 3, 32, 32), (1, 1, 32, 32), r"mask shape \(1, 1, 32, 32\) does not match"),
        ((2, 3, 32, 32), (2, 32, 32), r"mask shape \(2, 32, 32\) does not match"),
        ((2, 3, 32, 32), (2, 3, 32, 32), r"expected \(2, 1, 32, 32\)"),
        (
            (2, 1, 32, 32),
            (2, 1, 32, 32),
            r"image must be a \(B, 3, H, W\) floating tensor, got shape \(2, 1, 32, 32\)",
        ),
    ],
)
def test_wrong_shapes_raise_config_error_naming_them(image_shape, mask_shape, match):
    with pytest.raises(ConfigError, match=match):
        create_inpainter("telea")(torch.rand(image_shape), torch.zeros(mask_shape))


def test_integer_image_and_non_tensor_mask_are_rejected():
    with pytest.raises(ConfigError, match="floating tensor, got shape .* dtype torch.uint8"):
        create_inpainter("gray")(
            torch.zeros(1, 3, 8, 8, dtype=torch.uint8), torch.zeros(1, 1, 8, 8)
        )
    with pytest.raises(ConfigError, match="mask must be a floating or bool tensor, got ndarray"):
        create_inpainter("gray")(torch.zeros(1, 3, 8, 8), np.zeros((1, 1, 8, 8)))


def test_mask_is_binarised_at_half_and_dilated_by_the_margin():
    image = torch.rand(1, 3, 32, 32)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 10:20, 10:20] = 1.0
    mask[..., 0:4, 0:4] = 0.4  # below 0.5: not a hole
    mask[..., 28:30, 28:30] = True  # bool-like value 1
    out = create_inpainter("gray", value=0.25, dilate=2)(image, mask.bool())
    changed = (out != image).any(dim=1)[0]
    expected = torch.zeros(32, 32, dtype=torch.bool)
    expected[8:22, 8:22] = True
    expected[26:32, 26:32] = True
    expected[0:6, 0:6] = True  # bool mask: 0.4 became True
    assert torch.equal(changed, expected)
    out = create_inpainter("gray", value=0.25, dilate=2)(image, mask)
    expected[0:6, 0:6] = False
    assert torch.equal((out != image).any(dim=1)[0], expected)
    assert torch.equal(out[0][:, expected], torch.full((3, int(expected.sum())), 0.25))


# --- randomness ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kwargs"), [("noise", {}), ("patch_scramble", {"patch": 8}), ("patchmatch", {})]
)
def test_seeded_inpainters_replay(name, kwargs, photos, script_dir):
    image, mask = photos
    image, mask = image[:1, :, :96, :96], mask[:1, :, :96, :96]
    first = _make(name, script_dir, **kwargs)(image, mask)
    again = _make(name, script_dir, **kwargs)(image, mask)
    assert torch.equal(first, again)
    if name != "patchmatch":  # the private generator advances between calls
        inpainter = _make(name, script_dir, **kwargs)
        assert not torch.equal(inpainter(image, mask), inpainter(image, mask))


# --- TorchScript plug-in --------------------------------------------------------------------


def test_torchscript_from_s3_matches_local_file(photos, script_dir, bucket):
    image, mask = photos
    uri = f"{bucket}/models/inpaint.pt"
    write_bytes(uri, (script_dir / "mean.pt").read_bytes())
    remote = create_inpainter("torchscript", uri=uri)(image, mask)
    local = create_inpainter("torchscript", uri=str(script_dir / "mean.pt"))(image, mask)
    assert torch.equal(remote, local)
    # hole = mean colour of the known pixels, per image
    hole = create_inpainter("mean").hole_mask(mask)
    for b in range(2):
        known_mean = image[b][:, hole[b, 0] == 0].mean(dim=1)
        torch.testing.assert_close(
            remote[b][:, hole[b, 0] > 0].mean(dim=1), known_mean, atol=1e-5, rtol=0
        )


def test_torchscript_model_never_sees_the_hole(photos, script_dir):
    image, mask = photos
    inpainter = create_inpainter("torchscript", uri=str(script_dir / "identity.pt"))
    out = inpainter(image, mask)
    hole = inpainter.hole_mask(mask).bool().expand_as(image)
    assert bool((out[hole] == 0).all())
    assert torch.equal(out[~hole], image[~hole])


def test_torchscript_runs_on_the_configured_device(device, photos, script_dir):
    image, mask = (t[:, :, :64, :64].to(device) for t in photos)
    inpainter = create_inpainter("torchscript", uri=str(script_dir / "mean.pt"), device=device)
    assert inpainter.config()["device"] == str(device)
    out = inpainter(image, mask)
    assert out.device == image.device
    cpu = create_inpainter("torchscript", uri=str(script_dir / "mean.pt"))(image.cpu(), mask.cpu())
    torch.testing.assert_close(out.cpu(), cpu, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("file", "error", "match"),
    [
        (
            "half.pt",
            InpainterOutputError,
            r"must return a tensor of shape \(2, 3, 224, 224\), got shape \(2, 3, 112, 112\)",
        ),
        ("nan.pt", InpainterOutputError, "non-finite"),
    ],
)
def test_torchscript_bad_outputs_raise_typed_errors(file, error, match, photos, script_dir):
    image, mask = photos
    with pytest.raises(error, match=match):
        create_inpainter("torchscript", uri=str(script_dir / file))(image, mask)


def test_torchscript_bad_files_raise_typed_errors(tmp_path, script_dir):
    with pytest.raises(StorageNotFoundError):
        create_inpainter("torchscript", uri=str(tmp_path / "missing.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="is not a loadable TorchScript module"):
        create_inpainter("torchscript", uri=str(tmp_path / "junk.pt"))
    with pytest.raises(ConfigError, match="invalid device 'gpu'"):
        create_inpainter("torchscript", uri=str(script_dir / "mean.pt"), device="gpu")


# --- every inpainter on the device fixture ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_inpainters_follow_the_input_device(name, device, photos, script_dir):
    image, mask = (t[:1, :, 64:128, 64:128].to(device) for t in photos)
    extra = {"device": device} if name == "torchscript" else {}
    inpainter = _make(name, script_dir, **extra)
    out = inpainter(image, mask)
    assert out.device == image.device and out.shape == image.shape
    keep = inpainter.hole_mask(mask).expand_as(image) == 0
    assert torch.equal(out[keep], image[keep])
    assert not torch.equal(out, image)


# --- the patch_scramble op ------------------------------------------------------------------


def test_patch_scramble_copies_whole_known_cells_as_a_permutation():
    # 8x8 cells of 4 px, each a unique constant colour; a 2x3-cell hole.
    colours = torch.arange(64, dtype=torch.float32).view(1, 1, 8, 8) / 64
    image = torch.nn.functional.interpolate(colours, scale_factor=4, mode="nearest").expand(
        1, 3, 32, 32
    )
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:16, 4:16] = 1.0
    out = patch_scramble(image, mask, patch=4, generator=torch.Generator().manual_seed(1))
    cells = out[0, 0, 8:16, 4:16].unfold(0, 4, 4).unfold(1, 4, 4).reshape(6, 16)
    assert bool((cells == cells[:, :1]).all())  # each hole cell is one whole source cell
    sources = {int(round(v * 64)) for v in cells[:, 0].tolist()}
    hole_cells = {r * 8 + c for r in (2, 3) for c in (1, 2, 3)}
    assert len(sources) == 6 and not sources & hole_cells  # distinct, all from known cells
    assert torch.equal(out * (1 - mask), image * (1 - mask))


def test_patch_scramble_falls_back_to_pixels_then_gray():
    image = torch.rand(2, 3, 10, 10)
    mask = torch.ones(2, 1, 10, 10)
    mask[0, :, 0, 0] = 0  # one known pixel: every 5x5 cell touches the hole
    out = patch_scramble(image, mask, patch=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[0], image[0, :, :1, :1].expand(3, 10, 10))
    assert torch.equal(out[1], torch.full((3, 10, 10), 0.5))


def test_patch_scramble_soft_mask_and_bad_input():
    image, mask = torch.rand(1, 3, 8, 8), torch.zeros(1, 1, 8, 8)
    mask[..., :4, :4] = 0.5
    out = patch_scramble(image, mask, patch=4, generator=torch.Generator().manual_seed(0))
    source = out[0, :, :4, :4] * 2 - image[0, :, :4, :4]  # out = (image + cell) / 2
    known_cells = [image[0, :, :4, 4:], image[0, :, 4:, :4], image[0, :, 4:, 4:]]
    assert any(torch.allclose(source, cell, atol=1e-6) for cell in known_cells)
    with pytest.raises(ConfigError, match="patch must be an int >= 1, got 0"):
        patch_scramble(image, mask, patch=0)
    with pytest.raises(ConfigError, match=r"mask must be \(B, 1, H, W\) matching image"):
        patch_scramble(image, mask[..., :4], patch=2)
