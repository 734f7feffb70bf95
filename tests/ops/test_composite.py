import json
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

H = W = 32


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _batch(device, batch: int = 4, n_bank: int = 5, seed: int = 0):
    """Random images, rectangular alphas, labels and a labelled background bank."""
    g = _gen(seed)
    fg = torch.rand(batch, 3, H, W, generator=g)
    alpha = torch.zeros(batch, 1, H, W)
    for i in range(batch):
        y0, x0 = torch.randint(0, 16, (2,), generator=g).tolist()
        h, w = torch.randint(4, 12, (2,), generator=g).tolist()
        alpha[i, 0, y0 : y0 + h, x0 : x0 + w] = 1.0
    labels = torch.randint(0, 2, (batch,), generator=g)
    backgrounds = torch.rand(n_bank, 3, H, W, generator=g)
    bank_labels = torch.arange(n_bank) % 2
    return [t.to(device) for t in (fg, alpha, labels, backgrounds, bank_labels)]


def _rect_alphas(batch: int, size: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Rectangles of many sizes and places, some touching the frame, some filling it."""
    alpha = torch.zeros(batch, 1, size, size)
    dims = torch.zeros(batch, 2)
    for i in range(batch):
        h, w = torch.randint(size // 6, size + 1, (2,), generator=g).tolist()
        y0 = torch.randint(0, size - h + 1, (1,), generator=g).item()
        x0 = torch.randint(0, size - w + 1, (1,), generator=g).item()
        alpha[i, 0, y0 : y0 + h, x0 : x0 + w] = 1.0
        dims[i] = torch.tensor([h, w])
    return alpha, dims


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


def test_records_round_trip_to_identical_output(device):
    fg, alpha, labels, bank, bank_labels = _batch(device)
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


# --- compositing properties -------------------------------------------------------------------


def test_identity_params_keep_foreground_exactly(device):
    fg, _, _, bank, _ = _batch(device)
    alpha = torch.ones(4, 1, H, W, device=device)
    params = SwapParams.identity(torch.tensor([0, 1, 2, 3], device=device))
    images, used_alpha = swap_backgrounds(fg, alpha, bank, params)
    assert torch.equal(images, fg) and torch.equal(used_alpha, alpha)


def test_alpha_one_keeps_the_warped_foreground_exactly(device):
    fg, _, labels, bank, bank_labels = _batch(device)
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


def test_alpha_zero_gives_the_chosen_background_exactly(device):
    fg, _, labels, bank, bank_labels = _batch(device)
    alpha = torch.zeros(4, 1, H, W, device=device)
    params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(2))
    # empty alpha: identity transform
    assert torch.all(params.scale == 1) and torch.all(params.angle == 0)
    assert torch.all(params.translate == 0)
    images, _ = swap_backgrounds(fg, alpha, bank, params)
    assert torch.equal(images, bank[params.bg_index])


def test_swap_composites_pixelwise(device):
    fg, alpha, labels, bank, bank_labels = _batch(device)
    params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(4))
    images, used = swap_backgrounds(fg, alpha, bank, params)
    warped_fg, warped_alpha = warp_foreground(fg, alpha, params)
    assert images.shape == fg.shape and images.device.type == device.type
    assert torch.equal(used, warped_alpha) and set(used.unique().tolist()) <= {0.0, 1.0}
    assert images.min() >= 0 and images.max() <= 1
    on = used.expand_as(images) == 1
    assert torch.equal(images[on], warped_fg[on])
    assert torch.equal(images[~on], bank[params.bg_index][~on])


def test_integer_shift_moves_image_and_alpha_exactly(device):
    fg, alpha, _, _, _ = _batch(device, batch=1)
    params = SwapParams(
        bg_index=torch.tensor([0], device=device),
        scale=torch.ones(1, device=device),
        angle=torch.zeros(1, device=device),
        translate=torch.tensor([[3.0, -2.0]], device=device),  # 3 px right, 2 px up
    )
    warped_fg, warped_alpha = warp_foreground(fg, alpha, params)
    assert torch.equal(warped_alpha[..., :-2, 3:], alpha[..., 2:, :-3])
    assert torch.allclose(warped_fg[..., :-2, 3:], fg[..., 2:, :-3], atol=1e-5)


def test_warp_agrees_with_kornias_warp_affine(device):
    """The hand-built sampling grid equals kornia's ``warp_affine`` on the same matrix."""
    from kornia.geometry.transform import get_affine_matrix2d, warp_affine

    size = 64
    g = _gen(11)
    fg = torch.rand(16, 3, size, size, generator=g).to(device)
    alpha, _ = _rect_alphas(16, size, g)
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


def test_paste_foregrounds_uses_the_given_backgrounds_in_order(device):
    fg, alpha, labels, bank, bank_labels = _batch(device)
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


def test_feathering_is_inward(device):
    fg, alpha, labels, bank, bank_labels = _batch(device)
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


def test_same_seed_same_params_and_output(device):
    fg, alpha, labels, bank, bank_labels = _batch(device)
    runs = []
    for seed in (7, 7, 8):
        params = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(seed))
        runs.append((params, swap_backgrounds(fg, alpha, bank, params)[0]))
    (p1, out1), (p2, out2), (p3, out3) = runs
    assert p1.to_records() == p2.to_records() and torch.equal(out1, out2)
    assert p1.to_records() != p3.to_records() and not torch.equal(out1, out3)


def test_cpu_generator_gives_device_independent_params(device):
    fg, alpha, labels, bank, bank_labels = _batch("cpu")
    on_cpu = sample_swap_params(alpha, labels, bank_labels, SwapConfig(), _gen(9))
    on_dev = sample_swap_params(
        alpha.to(device), labels.to(device), bank_labels.to(device), SwapConfig(), _gen(9)
    )
    assert on_dev.device.type == device.type
    assert on_dev.to_records() == on_cpu.to_records()


def test_module_and_functions_agree(device):
    fg, alpha, labels, bank, bank_labels = _batch(device)
    cfg = SwapConfig(translate=8.0)
    module = BackgroundSwap(cfg, feather_sigma=1.0)
    images, params = module(fg, alpha, labels, bank, bank_labels, _gen(11))
    expected_params = sample_swap_params(alpha, labels, bank_labels, cfg, _gen(11))
    expected, _ = swap_backgrounds(fg, alpha, bank, expected_params, feather_sigma=1.0)
    assert params.to_records() == expected_params.to_records()
    assert torch.equal(images, expected)
    assert "feather_sigma=1.0" in repr(module)


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


def test_object_never_leaves_the_frame(device):
    size, batch = 48, 128
    cfg = SwapConfig(scale=(0.5, 1.5), degrees=45.0, translate=40.0)
    for seed in range(3):
        g = _gen(100 + seed)
        alpha, dims = _rect_alphas(batch, size, g)
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


def test_without_keep_in_frame_objects_do_leave():
    """The frame check above can fail: unclipped draws push objects out."""
    g = _gen(5)
    alpha, _ = _rect_alphas(64, 48, g)
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


def test_compositing_mismatches_are_typed_with_values():
    fg, alpha, labels, bank, bank_labels = _batch("cpu")
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
