"""fit_detector reports its epochs to a progress sink (the pipeline passes a RemoteProgress
handle; jobs/train_detector.py a ProgressBoard)."""

import logging

import torch

from abs_ray.console import ProgressBoard
from abs_ray.models import create_detector
from abs_ray.models.detector_train import fit_detector, load_labelled_images


def test_detector_epochs_are_reported_as_done_over_total(synthetic, tiny_cfg, caplog):
    _, manifest = synthetic
    data = load_labelled_images(manifest[manifest["split"] == "train"].head(12), 64, 8)
    train, val = data.subset(range(8)), data.subset(range(8, 12))
    torch.manual_seed(0)
    det = create_detector("test_tiny", grid=8, image_size=64, head="pooled")  # as tiny_cfg
    board = ProgressBoard(mode="lines", interval=3600)
    with caplog.at_level(logging.INFO, logger="abs_ray.progress"):
        fit = fit_detector(det, train, val, tiny_cfg("unused", epochs=3), progress=board)
    step = board["detector epochs"]
    assert (step.n, step.total, step.closed) == (len(fit.history), 3, True)
    lines = [r.getMessage() for r in caplog.records if r.name == "abs_ray.progress"]
    assert any(line.startswith("detector epochs: 3/3 (100 %) done") for line in lines), lines
