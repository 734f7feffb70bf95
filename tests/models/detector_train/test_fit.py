"""fit_detector: a frozen prefix never changes, a trainable tail does, an unfrozen backbone
trains whole."""

import torch

from abs_ray.models import create_detector
from abs_ray.models.detector_train import fit_detector, load_labelled_images


def _train_val(manifest):
    data = load_labelled_images(manifest[manifest["split"] == "train"].head(12), 64, 8)
    return data.subset(range(8)), data.subset(range(8, 12))


def test_frozen_head_only_keeps_backbone_and_partial_unfreezing_trains_tail(
    synthetic, tmp_path, tiny_cfg
):
    _, manifest = synthetic
    train, val = _train_val(manifest)
    for blocks in (0, 1):
        torch.manual_seed(0)
        det = create_detector("test_tiny", grid=8, image_size=64, head="pooled")
        before = {k: v.clone() for k, v in det.backbone.state_dict().items()}
        cfg = tiny_cfg(str(tmp_path), freeze_backbone=True, trainable_blocks=blocks, epochs=2)
        fit_detector(det, train, val, cfg)
        after = det.backbone.state_dict()
        first = all(torch.equal(before[k], after[k]) for k in before if k.startswith("body.0."))
        last = all(torch.equal(before[k], after[k]) for k in before if k.startswith("body.2."))
        assert first  # the frozen prefix never changes
        assert last == (blocks == 0)  # the last block trains only when left trainable


def test_unfrozen_backbone_trains_every_block_whatever_trainable_blocks_says(synthetic, tiny_cfg):
    """trainable_blocks only applies under a frozen backbone (jobs/pipeline.py's
    --unfreeze-backbone keeps its default of 4)."""
    _, manifest = synthetic
    train, val = _train_val(manifest)
    torch.manual_seed(0)
    det = create_detector("test_tiny", grid=8, image_size=64, head="pooled")
    before = {k: p.detach().clone() for k, p in det.backbone.named_parameters()}
    cfg = tiny_cfg("unused", freeze_backbone=False, trainable_blocks=4, epochs=2)
    fit_detector(det, train, val, cfg)
    assert not det.backbone_frozen
    after = dict(det.backbone.named_parameters())
    for block in ("body.0.", "body.2."):  # weights (not BatchNorm statistics) of first and last
        assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith(block))
