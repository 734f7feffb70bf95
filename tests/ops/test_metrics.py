import math

import pytest
import torch

from abs_ray.errors import ConfigError
from abs_ray.ops import GroupMetrics, balanced_accuracy, group_accuracy, mask_iou

# Waterbirds-like: group = y * 2 + place.
PREDS = [0, 0, 0, 1, 0, 1, 1, 1, 1, 0]
LABELS = [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
GROUPS = [0, 0, 0, 1, 1, 2, 3, 3, 3, 3]
# group 0: 3/3, group 1: 1/2, group 2: 1/1, group 3: 3/4; overall 8/10


def test_group_accuracy_hand_computed():
    m = group_accuracy(PREDS, LABELS, GROUPS)
    assert isinstance(m, GroupMetrics)
    assert m.counts == {0: 3, 1: 2, 2: 1, 3: 4}
    assert m.per_group == {0: 1.0, 1: 0.5, 2: 1.0, 3: 0.75}
    assert m.worst_group_accuracy == 0.5 and m.worst_group == 1
    assert m.mean_group_accuracy == pytest.approx((1.0 + 0.5 + 1.0 + 0.75) / 4)
    assert m.overall_accuracy == pytest.approx(0.8)


def test_tensors_on_device_and_logits_give_the_same(device):
    preds = torch.tensor(PREDS, device=device)
    logits = torch.nn.functional.one_hot(preds, 2).float() * 3.0 - 1.0
    labels, groups = torch.tensor(LABELS, device=device), torch.tensor(GROUPS, device=device)
    assert group_accuracy(logits, labels, groups) == group_accuracy(PREDS, LABELS, GROUPS)


def test_absent_groups_are_reported_but_ignored_by_summaries():
    m = group_accuracy([1, 0, 0], [1, 1, 0], [0, 0, 2], num_groups=4)
    assert m.counts == {0: 2, 1: 0, 2: 1, 3: 0}
    assert m.per_group[0] == 0.5 and m.per_group[2] == 1.0
    assert math.isnan(m.per_group[1]) and math.isnan(m.per_group[3])
    assert m.worst_group_accuracy == 0.5 and m.mean_group_accuracy == 0.75


def test_only_present_groups_without_num_groups():
    m = group_accuracy([1, 1], [1, 0], [5, 7])
    assert list(m.counts) == [5, 7] and m.worst_group_accuracy == 0.0 and m.worst_group == 7


def test_flat_dict_for_loggers():
    flat = group_accuracy(PREDS, LABELS, GROUPS).to_flat_dict(prefix="val/")
    assert flat["val/worst_group_accuracy"] == 0.5
    assert flat["val/group_3_accuracy"] == 0.75 and flat["val/group_3_count"] == 4.0
    assert all(isinstance(v, float) for v in flat.values())


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (([], [], []), {}, "at least one sample, got 0"),
        (([0, 1], [0], [0, 0]), {}, "equal length, got 2, 1, 2"),
        (([0], [0], [-1]), {}, "group ids must be >= 0, got -1"),
        (([0], [0], [4]), {"num_groups": 4}, "group id 4 must be < num_groups 4"),
        (([0], [0.5], [0]), {}, "labels must be 1-D integers"),
        (([[0]], [0], [0]), {}, "preds must be 1-D integers"),
        (([0], [0], [0]), {"num_groups": 0}, "num_groups must be a positive int"),
        (([0], ["a"], [0]), {}, "labels must be a tensor or sequence of ints"),
    ],
)
def test_group_accuracy_bad_input_is_typed(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        group_accuracy(*args, **kwargs)


def test_balanced_accuracy_hand_computed(device):
    pred = torch.tensor([[1, 1, 0], [0, 0, 1]], dtype=torch.bool, device=device)
    target = torch.tensor([[1, 0, 0], [0, 1, 1]], dtype=torch.bool, device=device)
    # TPR = 2/3 (of 3 positives, 2 predicted), TNR = 2/3
    assert balanced_accuracy(pred, target) == pytest.approx(2 / 3)
    # a majority-class predictor scores 0.5 however imbalanced the target
    target = torch.zeros(100, dtype=torch.bool)
    target[:5] = True
    assert balanced_accuracy(torch.zeros(100, dtype=torch.bool), target) == 0.5


def test_balanced_accuracy_reads_floats_and_single_class():
    probs = torch.tensor([0.9, 0.2, 0.7])
    assert balanced_accuracy(probs, torch.tensor([1.0, 1.0, 1.0])) == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("pred", "target", "match"),
    [
        (torch.zeros(3), torch.zeros(4), "must equal target_bool"),
        (torch.zeros(0), torch.zeros(0), "at least one element"),
        ([1, 0], torch.zeros(2), "must be a torch.Tensor"),
    ],
)
def test_balanced_accuracy_bad_input_is_typed(pred, target, match):
    with pytest.raises(ConfigError, match=match):
        balanced_accuracy(pred, target)


def test_mask_iou_hand_computed(device):
    pred = torch.zeros(3, 1, 4, 4, device=device)
    target = torch.zeros(3, 1, 4, 4, device=device)
    pred[0, 0, :2, :2] = 1  # 4 px
    target[0, 0, :2, :4] = 1  # 8 px, overlap 4 -> 0.5
    pred[1, 0, 0, 0] = 1  # disjoint -> 0
    target[1, 0, 3, 3] = 1
    iou = mask_iou(pred, target)  # sample 2: both empty -> 1
    assert iou.shape == (3,) and iou.device.type == device.type
    torch.testing.assert_close(iou, torch.tensor([0.5, 0.0, 1.0], device=device))


def test_mask_iou_bad_input_is_typed():
    with pytest.raises(ConfigError, match=r"pred shape \(2, 4\) must equal target \(2, 5\)"):
        mask_iou(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="must be a torch.Tensor"):
        mask_iou(torch.zeros(2, 4), [[0] * 4] * 2)
