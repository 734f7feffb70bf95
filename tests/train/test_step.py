"""The training step (:mod:`abs_ray.train.step`), per method, on each device."""

import pytest
import torch

from abs_ray.models import create_classifier
from abs_ray.train import TrainConfig
from abs_ray.train.augment import RecentBackgrounds
from abs_ray.train.step import train_step


@pytest.mark.parametrize("method", ["abs", "erm", "erm_aug"])
def test_train_step_runs_on_the_device(device, method, tiny_samples):
    import numpy as np

    train = [s for s in tiny_samples if s.split == "train"][:8]
    batch = {
        "image": torch.from_numpy(np.stack([s.image for s in train])).to(device),
        "alpha": torch.from_numpy(np.stack([s.mask for s in train])).to(device),
        "background": torch.from_numpy(np.stack([s.background for s in train])).to(device),
        "label": torch.tensor([s.y for s in train], device=device),
    }
    cfg = TrainConfig(data="x", method=method, backbone="test_tiny", weights=None, lr=0.1)
    torch.manual_seed(0)
    model = create_classifier("test_tiny", num_classes=2, weights=None).to(device)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    bank = RecentBackgrounds(16) if cfg.swaps else None
    out = train_step(model, optimizer, batch, cfg, bank, torch.Generator().manual_seed(0), 24)
    assert out.inputs.shape == (8, 3, 24, 24) and out.inputs.device.type == device.type
    assert torch.isfinite(out.loss) and 0 <= int(out.correct) <= 8
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    if method == "abs":
        assert int(out.swapped) == 8 and len(bank) == 8
    else:
        assert int(out.swapped) == 0
