"""Inputs shared by the swap tests (``test_swap_params.py``, ``test_composite.py``)."""

from __future__ import annotations

import pytest
import torch

H = W = 32


def _swap_batch(device, batch: int = 4, n_bank: int = 5, seed: int = 0):
    """Random images, rectangular alphas, labels and a labelled background bank."""
    g = torch.Generator().manual_seed(seed)
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


@pytest.fixture
def swap_batch():
    """``swap_batch(device, batch=4, n_bank=5, seed=0)`` -> ``[fg (B, 3, 32, 32), alpha
    (B, 1, 32, 32) rectangles, labels (B,), backgrounds (N, 3, 32, 32), bank_labels (N,)]``."""
    return _swap_batch


@pytest.fixture
def rect_alphas():
    """``rect_alphas(batch, size, generator)`` -> ``(alpha (B, 1, S, S), dims (B, 2) h, w)``."""
    return _rect_alphas
