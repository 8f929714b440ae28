"""ConfusionMatrix against torchmetrics and a hand-computed example."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

from memsam_core.metrics import ConfusionMatrix


def _random_batch(seed: int, n: int = 5, size: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, n - 1, (size,), generator=g)  # class n-1 never in the target
    pred = torch.where(torch.rand(size, generator=g) < 0.6, target, torch.randint(0, n, (size,), generator=g))
    target[torch.rand(size, generator=g) < 0.1] = 255
    return pred, target


def test_matches_torchmetrics() -> None:
    n = 6
    cm = ConfusionMatrix(n)
    ref = MulticlassJaccardIndex(num_classes=n, ignore_index=255, average=None)
    for seed in range(4):
        pred, target = _random_batch(seed, n)
        pred[pred == n - 2] = 0  # class n-2 appears in the target only: IoU 0, not NaN
        cm.update(pred.view(40, 100), target.view(40, 100))
        ref.update(pred, target)
    ours, theirs = cm.iou(), ref.compute().double()
    present = ~ours.isnan()
    assert torch.allclose(ours[present], theirs[present], atol=1e-6)
    assert ours[n - 2] == 0 and theirs[n - 2] == 0
    assert (theirs[~present] == 0).all()  # torchmetrics reports absent classes as 0
    assert cm.miou(nan_to_zero=True) == pytest.approx(float(theirs.mean()), abs=1e-6)


def test_hand_computed() -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 1, 255]))
    assert cm.hist.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    iou = cm.iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(2 / 3) and math.isnan(iou[2])
    assert cm.miou() == pytest.approx((0.5 + 2 / 3) / 2)
    assert cm.miou(nan_to_zero=True) == pytest.approx((0.5 + 2 / 3) / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 4)
    assert cm.class_accuracy()[:2].tolist() == pytest.approx([0.5, 1.0])
    assert cm.f1()[:2].tolist() == pytest.approx([2 / 3, 0.8])


def test_numpy_and_torch_agree_and_merge() -> None:
    pred, target = _random_batch(7)
    whole = ConfusionMatrix(5).update(pred, target)
    a = ConfusionMatrix(5).update(pred[:1000].numpy().astype(np.uint8), target[:1000].numpy().astype(np.uint8))
    b = ConfusionMatrix(5).update(pred[1000:], target[1000:])
    assert torch.equal((a + b).hist, whole.hist)
    assert torch.equal(a.merge(b).hist, whole.hist)
    restored = ConfusionMatrix.from_state(whole.state_dict())
    assert torch.equal(restored.hist, whole.hist) and restored.ignore_index == 255
    with pytest.raises(ValueError):
        whole.merge(ConfusionMatrix(4))


def test_validation_and_empty() -> None:
    cm = ConfusionMatrix(3)
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy()) and cm.miou(nan_to_zero=True) == 0.0
    with pytest.raises(ValueError, match="class ids"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
    with pytest.raises(ValueError, match="class ids"):
        cm.update(torch.tensor([0]), torch.tensor([7]))
    with pytest.raises(ValueError, match="size"):
        cm.update(torch.tensor([0, 1]), torch.tensor([0]))
    cm.update(torch.tensor([1]), torch.tensor([255]))  # ignored pixels never count
    assert int(cm.hist.sum()) == 0


def test_to_dict_is_json() -> None:
    cm = ConfusionMatrix(3).update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    report = cm.to_dict(["road", "car", "sky"])
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text)["per_class"]["sky"]["iou"] is None
    assert report["per_class"]["road"]["iou"] == pytest.approx(0.5)
    assert report["miou"] == pytest.approx((0.5 + 0.5) / 3) and report["miou_present"] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        cm.to_dict(["only one"])
