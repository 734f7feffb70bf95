"""The service core without Ray: masks, swaps, inpainting, replay, errors per job."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from abs_ray.models import create_detector, save_detector
from abs_ray.serve.config import ServiceConfig
from abs_ray.serve.jobs import InpaintResult, Job, MaskResult, SwapOptions, SwapResult
from abs_ray.serve.service import SwapService
from abs_ray.web.errors import BankSelectionError, InvalidRequestError

STILL = {"scale": (1.0, 1.0), "degrees": 0.0, "translate": 0.0}


@pytest.fixture(scope="module")
def service():
    """Demo bank of 4 (labels 0, 0, 1, 1), saliency with random weights (fast), CPU."""
    return SwapService.from_config(ServiceConfig(demo_bank_size=4, device="cpu"), pretrained=False)


def _swap(service, job):
    (result,) = service.process([job])
    assert isinstance(result, SwapResult), result
    return result


def test_known_mask_keeps_foreground_exactly(service, sample):
    fg = sample.mask == 255
    job = Job("swap", sample.image, mask=sample.mask, swap=SwapOptions(n=2, seed=3, **STILL))
    result = _swap(service, job)
    assert result.mask_source == "upload" and len(result.images) == 2
    for image in result.images:
        assert image.shape == sample.image.shape and image.dtype == np.uint8
        assert np.array_equal(image[fg], sample.image[fg])
        assert (image != sample.image).any(axis=-1)[~fg].mean() > 0.99
    assert result.foreground_fraction == pytest.approx(fg.mean())


def test_same_seed_replays_in_any_batch(service, synthetic_samples):
    a, b = synthetic_samples[0], synthetic_samples[1]
    job = Job("swap", a.image, swap=SwapOptions(n=3, seed=42))
    alone = _swap(service, job)
    batch = service.process([Job("mask", b.image), job, Job("swap", b.image, mask=b.mask)])
    assert isinstance(batch[1], SwapResult)
    assert all(np.array_equal(x, y) for x, y in zip(alone.images, batch[1].images, strict=True))
    assert alone.params == batch[1].params
    other = _swap(service, Job("swap", a.image, swap=SwapOptions(n=3, seed=43)))
    assert other.params != alone.params


def test_bank_filters_and_class_uniform_draw(service, sample):
    only_water = _swap(service, Job("swap", sample.image, swap=SwapOptions(n=8, labels=(1,))))
    assert {p["bg_label"] for p in only_water.params} == {1}
    assert {p["bg_group"] for p in only_water.params} == {3}
    both = _swap(service, Job("swap", sample.image, swap=SwapOptions(n=16, seed=0)))
    assert {p["bg_label"] for p in both.params} == {0, 1}
    assert all(p["bg_id"] == f"demo/{p['bg_index']}" for p in both.params)
    (error,) = service.process([Job("swap", sample.image, swap=SwapOptions(labels=(5,)))])
    assert isinstance(error, BankSelectionError) and "labels [0, 1]" in str(error)


def test_uploaded_background_replaces_the_bank(service, synthetic_samples):
    src, other = synthetic_samples[0], synthetic_samples[3]
    small_bg = other.background[::2, ::2]  # resized to the image
    job = Job("swap", src.image, mask=src.mask, background=small_bg, swap=SwapOptions(**STILL))
    result = _swap(service, job)
    fg = src.mask == 255
    assert np.array_equal(result.images[0][fg], src.image[fg])
    assert result.params[0]["bg_id"] == "upload" and result.bank_fingerprint is None


def test_bad_job_fails_alone(service, sample):
    bad = Job("swap", sample.image, mask=sample.mask[:10])
    too_many = Job("swap", sample.image, swap=SwapOptions(n=service.cfg.max_variants + 1))
    good = Job("swap", sample.image, swap=SwapOptions(seed=1))
    results = service.process([bad, too_many, good])
    assert isinstance(results[0], InvalidRequestError) and "same size" in str(results[0])
    assert isinstance(results[1], InvalidRequestError) and "n must be <=" in str(results[1])
    assert isinstance(results[2], SwapResult)


def test_detector_checkpoint_gives_its_mask(tmp_path, sample):
    """A tiny detector whose head outputs a fixed grid: the service's mask is that grid."""
    grid = torch.zeros(4, 4)
    grid[1:3, 1:3] = 1.0  # foreground patches
    detector = create_detector("test_tiny", grid=4, image_size=32, weights=None, head="pooled")
    last = detector.head[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.where(grid.flatten() > 0, -6.0, 6.0))  # logit of P(background)
    path = tmp_path / "detector.pt"
    save_detector(detector, str(path), meta={"label_source": {"kind": "test"}})
    service = SwapService.from_config(
        ServiceConfig(detector_checkpoint=str(path), demo_bank_size=2, device="cpu")
    )
    info = service.info()["mask_source"]
    assert info["kind"] == "detector" and info["trained"] and info["grid"] == 4
    (result,) = service.process([Job("mask", sample.image)])
    assert isinstance(result, MaskResult) and result.mask_source == "detector"
    expected = np.kron(grid.numpy(), np.ones((16, 16))) * 255
    assert np.array_equal(result.alpha, expected.astype(np.uint8))
    assert result.prob.shape == (4, 4)


def test_inpaint_changes_only_the_dilated_hole(service, sample):
    (result,) = service.process([Job("inpaint", sample.image, mask=sample.mask)])
    assert isinstance(result, InpaintResult)
    hole = service.inpainter.hole_mask(torch.from_numpy(sample.mask)[None, None].float() / 255)
    keep = hole[0, 0].numpy() == 0
    assert np.array_equal(result.background[keep], sample.image[keep])
    assert result.hole_fraction == pytest.approx(1 - keep.mean())


def test_large_inpaint_runs_reduced_and_pastes_the_hole_only(sample):
    service = SwapService.from_config(
        ServiceConfig(demo_bank_size=2, device="cpu", inpaint_max_side=32), pretrained=False
    )
    (result,) = service.process([Job("inpaint", sample.image, mask=sample.mask)])
    assert result.background.shape == sample.image.shape
    ys, xs = np.nonzero(sample.mask)
    far = np.ones(sample.mask.shape, dtype=bool)
    far[max(ys.min() - 8, 0) : ys.max() + 9, max(xs.min() - 8, 0) : xs.max() + 9] = False
    assert np.array_equal(result.background[far], sample.image[far])
    assert not np.array_equal(result.background[~far], sample.image[~far])


def test_info_names_models_bank_and_versions(service):
    info = service.info()
    assert info["mask_source"]["kind"] == "saliency" and not info["mask_source"]["trained"]
    assert info["bank"]["size"] == 4 and info["bank"]["labels"] == {"0": 2, "1": 2}
    assert info["inpainter"]["name"] == "telea" and info["device"] == "cpu"
