"""Swap parameters (:mod:`abs_ray.ops.swap_params`): config validation, replayable records,
sampling ranges, keep-in-frame and the class-uniform background choice."""

import json

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import (
    SwapConfig,
    SwapParams,
    sample_swap_params,
    swap_backgrounds,
    warp_foreground,
)
from abs_ray.ops.swap_params import foreground_boxes


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- config and params ----------------------------------------------------------------------


def test_config_defaults_are_the_papers_waterbirds_setting():
    cfg = SwapConfig()
    assert cfg.scale == (0.5, 1.5) and cfg.degrees == 30.0 and cfg.translate == 32.0
    assert cfg.class_uniform and cfg.keep_in_frame
    assert SwapConfig(scale=[1, 2]).scale == (1.0, 2.0)  # YAML lists are normalised


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale": (0.0, 1.0)}, r"0 < low <= high, got \(0.0, 1.0\)"),
        ({"scale": (1.5, 0.5)}, r"0 < low <= high, got \(1.5, 0.5\)"),
        ({"scale": (1.0,)}, "scale must be a"),
        ({"scale": (1.0, float("inf"))}, "scale must be a"),
        ({"degrees": -1}, r"degrees must be in \[0, 180\], got -1"),
        ({"degrees": 181}, "degrees"),
        ({"translate": -4}, "translate must be a number of pixels >= 0, got -4"),
        ({"class_uniform": "yes"}, "class_uniform must be a bool"),
        ({"keep_in_frame": 1}, "keep_in_frame must be a bool"),
    ],
)
def test_bad_config_is_typed(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        SwapConfig(**kwargs)


def test_params_validate_their_shapes():
    ok = SwapParams.identity(torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match=r"translate must be a floating tensor of shape \(2, 2\)"):
        SwapParams(ok.bg_index, ok.scale, ok.angle, torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="bg_index must be a"):
        SwapParams(ok.bg_index.float(), ok.scale, ok.angle, ok.translate)
    with pytest.raises(ConfigError, match=r"scale must be a floating tensor of shape \(2,\)"):
        SwapParams(ok.bg_index, torch.ones(3), ok.angle, ok.translate)
    with pytest.raises(ConfigError, match=r"sample index must be an int in \[0, 2\)"):
        ok.to_dict(2)


def test_records_round_trip_to_identical_output(device, swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch(device)
    params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(3))
    records = params.to_records()
    assert records[1] == params.to_dict(1)
    assert all(type(r["bg_index"]) is int and type(r["scale"]) is float for r in records)
    # through JSON, as when stored in a row
    replayed = SwapParams.from_records(json.loads(json.dumps(records)), device=device)
    for name in ("bg_index", "scale", "angle", "translate"):
        assert torch.equal(getattr(replayed, name), getattr(params, name))
    assert torch.equal(
        swap_backgrounds(fg, alpha, bank, replayed)[0], swap_backgrounds(fg, alpha, bank, params)[0]
    )


def test_from_records_rejects_bad_rows():
    with pytest.raises(ConfigError, match="swap record 0 lacks key 'dy'"):
        SwapParams.from_records([{"bg_index": 0, "scale": 1.0, "angle": 0.0, "dx": 0.0}])
    row = {"bg_index": 0, "scale": "1", "angle": 0.0, "dx": 0.0, "dy": 0.0}
    with pytest.raises(ConfigError, match="swap record 0: scale must be a number"):
        SwapParams.from_records([row])
    with pytest.raises(ConfigError, match="bg_index values must be integers"):
        SwapParams.from_records([{**row, "scale": 1.0, "bg_index": 1.5}])


def test_same_seed_same_params_and_output(device, swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch(device)
    runs = []
    for seed in (7, 7, 8):
        params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(seed))
        runs.append((params, swap_backgrounds(fg, alpha, bank, params)[0]))
    (p1, out1), (p2, out2), (p3, out3) = runs
    assert p1.to_records() == p2.to_records() and torch.equal(out1, out2)
    assert p1.to_records() != p3.to_records() and not torch.equal(out1, out3)


def test_cpu_generator_gives_device_independent_params(device, swap_batch):
    fg, alpha, labels, bank, bank_labels = swap_batch("cpu")
    on_cpu = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(9))
    on_dev = sample_swap_params(
        alpha.to(device), labels.to(device), bank_labels.to(device), SwapConfig(), _gen(9)
    )
    assert on_dev.device.type == device.type
    assert on_dev.to_records() == on_cpu.to_records()


def test_foreground_boxes_are_inclusive_and_mark_empty_alphas(device):
    alpha = torch.zeros(3, 1, 10, 12, device=device)
    alpha[0, :, 2:5, 7:12] = 1.0
    alpha[2, :, 9, 0] = 0.25  # one faint pixel is foreground too
    boxes, nonempty = foreground_boxes(alpha)
    assert boxes.device.type == device.type and boxes.dtype == torch.long
    assert boxes.tolist() == [[7, 2, 11, 4], [0, 0, 11, 9], [0, 9, 0, 9]]
    assert nonempty.tolist() == [True, False, True]


# --- sampling properties --------------------------------------------------------------------


def test_sampled_values_stay_in_configured_ranges():
    alpha = torch.zeros(512, 1, 64, 64)
    alpha[..., 28:36, 28:36] = 1.0  # small central object: nothing needs clipping
    cfg = SwapConfig(scale=(0.8, 1.2), degrees=10.0, translate=5.0)
    params = sample_swap_params(
        alpha, torch.zeros(512, dtype=torch.long), torch.arange(3), cfg, _gen()
    )
    assert params.scale.min() >= 0.8 and params.scale.max() <= 1.2
    assert params.angle.abs().max() <= 10.0 and params.translate.abs().max() <= 5.0
    # and they use the range: not stuck at a value
    assert params.scale.std() > 0.1 and params.angle.std() > 4 and params.translate.std() > 2
    assert set(params.bg_index.tolist()) == {0, 1, 2}


def _left_frame(alpha: torch.Tensor, params: SwapParams, margin: int) -> torch.Tensor:
    """Per sample: foreground pixels that the transform puts outside the frame.

    Warps the alpha on a canvas padded by ``margin`` (the transform is about the box centre,
    so padding does not change it) and counts what lands in the padding.
    """
    padded = torch.nn.functional.pad(alpha, (margin,) * 4)
    _, warped = warp_foreground(padded.expand(-1, 3, -1, -1).contiguous(), padded, params)
    inside = warped[..., margin:-margin, margin:-margin].sum(dim=(1, 2, 3))
    return warped.sum(dim=(1, 2, 3)) - inside


def test_object_never_leaves_the_frame(device, rect_alphas):
    size, batch = 48, 128
    cfg = SwapConfig(scale=(0.5, 1.5), degrees=45.0, translate=40.0)
    for seed in range(3):
        g = _gen(100 + seed)
        alpha, dims = rect_alphas(batch, size, g)
        alpha = alpha.to(device)
        labels = torch.zeros(batch, dtype=torch.long, device=device)
        params = sample_swap_params(alpha, labels, torch.zeros(3, dtype=torch.long), cfg, g)
        assert torch.all(_left_frame(alpha, params, margin=64) == 0)
        # the area is kept up to rasterisation at the border: |n - A s^2| <= s * perimeter
        _, warped = warp_foreground(alpha.expand(-1, 3, -1, -1).contiguous(), alpha, params)
        count = warped.sum(dim=(1, 2, 3)).cpu()
        s = params.scale.cpu()
        area = dims.prod(dim=1) * s**2
        perimeter = 2 * dims.sum(dim=1) * s
        assert torch.all((count - area).abs() <= perimeter + 4)
        # full-frame objects could only stay in frame by shrinking
        assert params.scale.min() < cfg.scale[0] or dims.min() < size


def test_without_keep_in_frame_objects_do_leave(rect_alphas):
    """The frame check above can fail: unclipped draws push objects out."""
    g = _gen(5)
    alpha, _ = rect_alphas(64, 48, g)
    cfg = SwapConfig(degrees=45.0, translate=40.0, keep_in_frame=False)
    params = sample_swap_params(
        alpha, torch.zeros(64, dtype=torch.long), torch.zeros(1, dtype=torch.long), cfg, g
    )
    assert (_left_frame(alpha, params, margin=64) > 0).sum() > 10


def test_full_frame_object_shrinks_when_rotated():
    alpha = torch.ones(64, 1, 16, 16)
    params = sample_swap_params(
        alpha,
        torch.zeros(64, dtype=torch.long),
        torch.zeros(1, dtype=torch.long),
        SwapConfig(),
        _gen(),
    )
    rad = torch.deg2rad(params.angle)
    unit = 8 * (rad.cos().abs() + rad.sin().abs())  # half extent of the rotated 16 px square
    assert torch.all(params.scale * unit <= 8 + 1e-5)  # shrunk to fit
    assert (params.scale < 1).sum() > 32  # most draws had to shrink (scale or rotation)
    assert torch.all(params.translate.abs() <= (8 - params.scale * unit)[:, None] + 1e-4)


@pytest.mark.parametrize(("class_uniform", "expected"), [(True, 0.5), (False, 0.1)])
def test_class_uniform_background_choice(class_uniform, expected):
    bank_labels = torch.cat([torch.zeros(90, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    alpha = torch.zeros(4000, 1, 4, 4)
    labels = torch.zeros(4000, dtype=torch.long)  # all class 0: the draw must not follow it
    cfg = SwapConfig(class_uniform=class_uniform)
    params = sample_swap_params(alpha, labels, bank_labels, cfg, _gen(0))
    drawn = bank_labels[params.bg_index]
    assert abs(drawn.float().mean().item() - expected) < 0.03
    # within class 1 every background is used, roughly evenly
    per_bg = torch.bincount(params.bg_index, minlength=100)[90:].float()
    assert per_bg.min() > 0.5 * per_bg.mean()


def test_bank_labels_need_not_be_contiguous():
    bank_labels = torch.tensor([7, 3, 7, 7, 3, 9])
    params = sample_swap_params(
        torch.zeros(3000, 1, 4, 4),
        torch.zeros(3000, dtype=torch.long),
        bank_labels,
        SwapConfig(),
        _gen(1),
    )
    share = torch.bincount(bank_labels[params.bg_index], minlength=10)[[3, 7, 9]] / 3000
    assert torch.all((share - 1 / 3).abs() < 0.04)


# --- bad input ------------------------------------------------------------------------------


def test_sampling_bad_input_is_typed():
    alpha = torch.zeros(2, 1, 8, 8)
    labels, bank = torch.zeros(2, dtype=torch.long), torch.zeros(3, dtype=torch.long)
    with pytest.raises(
        ConfigError, match=r"alpha must be a \(B, 1, H, W\) floating tensor, got shape \(2, 8, 8\)"
    ):
        sample_swap_params(alpha[:, 0], labels, bank)
    with pytest.raises(ConfigError, match="labels must have 2 entries"):
        sample_swap_params(alpha, labels[:1], bank)
    with pytest.raises(ConfigError, match="labels must be a 1-D integer tensor"):
        sample_swap_params(alpha, labels.float(), bank)
    with pytest.raises(ConfigError, match="bank_labels is empty"):
        sample_swap_params(alpha, labels, bank[:0])
    with pytest.raises(ConfigError, match="cfg must be a SwapConfig"):
        sample_swap_params(alpha, labels, bank, {"scale": (1, 1)})
    with pytest.raises(ConfigError, match="generator must be a torch.Generator"):
        sample_swap_params(alpha, labels, bank, SwapConfig(), 0)
