"""The backgrounds-challenge variants on tiny hand-made tensors."""

from __future__ import annotations

import pytest
import torch

from abs_ray.audit.variants import (
    MIXED_VARIANTS,
    VARIANTS,
    PartnerParams,
    apply_variants,
    composite_variants,
    sample_partners,
)
from abs_ray.errors import ConfigError


def _batch(device, n=6, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, size, size, generator=g)
    backgrounds = torch.rand(n, 3, size, size, generator=g)
    alpha = torch.zeros(n, 1, size, size)
    alpha[..., 2:6, 1:5] = 1.0
    return images.to(device), alpha.to(device), backgrounds.to(device)


def test_partners_have_the_right_class_and_are_never_the_row_itself():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    n = len(labels)
    for seed in range(20):
        p = sample_partners(
            labels, labels, 3, torch.Generator().manual_seed(seed), self_index=torch.arange(n)
        )
        assert (p.same != torch.arange(n)).all() and (p.rand != torch.arange(n)).all()
        assert torch.equal(labels[p.same], labels)
        assert torch.equal(labels[p.next], (labels + 1) % 3)
        assert ((p.rand >= 0) & (p.rand < n)).all()


def test_partners_cover_every_candidate():
    """Every other same-class entry (and every other entry for rand) is drawn some time."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    seen_same, seen_rand = set(), set()
    for seed in range(200):
        p = sample_partners(
            labels, labels, 2, torch.Generator().manual_seed(seed), self_index=torch.arange(6)
        )
        seen_same.add(int(p.same[0]))
        seen_rand.add(int(p.rand[0]))
    assert seen_same == {1, 2, 3}
    assert seen_rand == {1, 2, 3, 4, 5}


def test_same_seed_same_partners_other_seed_other_partners():
    labels = torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(1))

    def draw(seed):
        p = sample_partners(
            labels, labels, 3, torch.Generator().manual_seed(seed), self_index=torch.arange(64)
        )
        return torch.stack([p.same, p.rand, p.next])

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_rows_without_partner_are_marked_invalid():
    labels = torch.tensor([0, 0, 1])  # class 1 has one image: no mixed_same partner
    p = sample_partners(
        labels, labels, 2, torch.Generator().manual_seed(0), self_index=torch.arange(3)
    )
    assert p.valid("mixed_same").tolist() == [True, True, False]
    assert p.valid("mixed_next").all() and p.valid("original").all()
    one_class = sample_partners(labels * 0, labels * 0, 1, self_index=torch.arange(3))
    assert (one_class.next == -1).all()  # K = 1: the next class is the same one
    single = sample_partners(torch.tensor([0]), torch.tensor([0]), 2, self_index=torch.tensor([0]))
    assert single.same.item() == -1 and single.rand.item() == -1 and single.next.item() == -1


def test_partners_from_a_bank_larger_than_the_batch():
    bank_labels = torch.tensor([1, 0, 1, 0, 1, 1])
    batch = torch.tensor([0, 1])
    p = sample_partners(
        batch, bank_labels, 2, torch.Generator().manual_seed(3), self_index=torch.tensor([3, -1])
    )
    assert bank_labels[p.same].tolist() == [0, 1] and p.same[0].item() == 1  # not itself (3)
    assert bank_labels[p.next].tolist() == [1, 0]


def test_bad_sampling_inputs_raise_typed_errors():
    labels = torch.tensor([0, 1])
    with pytest.raises(ConfigError, match="num_classes"):
        sample_partners(labels, labels, 0)
    with pytest.raises(ConfigError, match="< num_classes 2"):
        sample_partners(torch.tensor([0, 2]), labels, 2)
    with pytest.raises(ConfigError, match="integer"):
        sample_partners(labels.float(), labels, 2)
    with pytest.raises(ConfigError, match="self_index"):
        sample_partners(labels, labels, 2, self_index=torch.tensor([0, 5]))


def test_mixed_pixels_are_foreground_inside_alpha_and_partner_background_outside(device):
    images, alpha, backgrounds = _batch(device)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    p = sample_partners(
        labels, labels, 3, torch.Generator().manual_seed(0), self_index=torch.arange(6)
    )
    out, valid = apply_variants(images, alpha, backgrounds, backgrounds, p)
    inside = alpha.bool().expand_as(images)
    for v in MIXED_VARIANTS:
        partner = backgrounds[p.index(v).to(device)]
        assert torch.equal(out[v][inside], images[inside]), v
        assert torch.equal(out[v][~inside], partner[~inside]), v
        assert valid[v].all()
    assert torch.equal(out["original"], images) and torch.equal(out["only_bg"], backgrounds)
    assert (out["only_fg_black"][~inside] == 0).all()
    assert torch.equal(out["only_fg_black"][inside], images[inside])
    mean = images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    assert torch.allclose(out["only_fg_mean"][~inside], mean[~inside])
    assert list(out) == list(VARIANTS)
    assert all(x.device == images.device and x.shape == images.shape for x in out.values())


def test_soft_alpha_blends(device):
    images, _, backgrounds = _batch(device, n=2)
    alpha = torch.full((2, 1, 8, 8), 0.25, device=device)
    out = composite_variants(images, alpha, backgrounds, {v: backgrounds for v in MIXED_VARIANTS})
    assert torch.allclose(out["mixed_rand"], 0.25 * images + 0.75 * backgrounds, atol=1e-6)


def test_invalid_rows_are_zero_and_the_two_entry_points_agree(device):
    images, alpha, backgrounds = _batch(device, n=3)
    labels = torch.tensor([0, 0, 1])
    p = sample_partners(
        labels, labels, 2, torch.Generator().manual_seed(0), self_index=torch.arange(3)
    )
    out, valid = apply_variants(images, alpha, backgrounds, backgrounds, p)
    assert valid["mixed_same"].tolist() == [True, True, False]
    assert (out["mixed_same"][2] == 0).all()
    gathered = {v: backgrounds[p.index(v).clamp(min=0).to(device)] for v in MIXED_VARIANTS}
    again = composite_variants(images, alpha, backgrounds, gathered, valid)
    assert all(torch.equal(out[v], again[v]) for v in VARIANTS)


def test_bad_shapes_raise_before_work():
    images, alpha, backgrounds = _batch("cpu", n=2)
    p = PartnerParams(*(torch.tensor([1, 0]),) * 3)
    with pytest.raises(ConfigError, match="alpha"):
        apply_variants(images, alpha[:1], backgrounds, backgrounds, p)
    with pytest.raises(ConfigError, match="bank"):
        apply_variants(images, alpha, backgrounds, backgrounds[..., :4], p)
    with pytest.raises(ConfigError, match="partner indices"):
        apply_variants(images, alpha, backgrounds, backgrounds[:1], p)
    with pytest.raises(ConfigError, match="lacks mixed_rand, mixed_next"):
        composite_variants(images, alpha, backgrounds, {"mixed_same": backgrounds})
    with pytest.raises(ConfigError, match="long"):
        PartnerParams(torch.tensor([1.0]), torch.tensor([1]), torch.tensor([1]))
