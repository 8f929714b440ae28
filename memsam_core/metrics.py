"""Confusion-matrix segmentation metrics (IoU, mIoU, accuracy, F1), mergeable across batches and ranks.

Rows are ground truth, columns predictions (same as the reference ``semseg/metrics.py``); pixels whose
target is ``ignore_index`` are not counted.  Two mIoU conventions are exposed because they differ
when a class never occurs:

* ``miou()`` — mean over classes that occur in the target or the prediction (absent classes are NaN
  and left out).  This is the honest number for small or per-condition subsets.
* ``miou(nan_to_zero=True)`` — the reference protocol (memorysam.md §6.2): NaN → 0, mean over all
  classes.  Use it to compare with published DELIVER numbers.

Video consistency (mVC8, VSPW): :func:`window_consistency` / :class:`VideoConsistency`; flicker is ``1 - mVC8``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def _as_long(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.array(x, dtype=np.int64).reshape(-1))  # copy: read-only arrays are fine
    return x.reshape(-1).to(torch.int64)


class ConfusionMatrix:
    """``num_classes²`` int64 histogram; ``update`` accepts torch tensors (any device) or numpy arrays."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.hist = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> ConfusionMatrix:
        """Add class-id predictions vs targets of the same shape (argmax logits before calling)."""
        p, t = _as_long(pred), _as_long(target)
        if p.shape != t.shape:
            raise ValueError(f"pred and target differ in size: {tuple(p.shape)} vs {tuple(t.shape)}")
        p = p.to(t.device)
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        n = self.num_classes
        if bool(((t < 0) | (t >= n) | (p < 0) | (p >= n)).any()):  # one device sync
            raise ValueError(f"class ids must be in [0, {n}) (or the ignore index {self.ignore_index})")
        counts = torch.bincount(t * n + p, minlength=n * n).reshape(n, n)
        self.hist += counts.cpu()
        return self

    def reset(self) -> None:
        self.hist.zero_()

    # ------------------------------------------------------------------ derived metrics (float64)
    def _h(self) -> torch.Tensor:
        return self.hist.to(torch.float64)

    def iou(self) -> torch.Tensor:
        """Per-class TP / (TP + FP + FN); NaN where a class is in neither target nor prediction."""
        h = self._h()
        tp = h.diag()
        return tp / (h.sum(0) + h.sum(1) - tp)

    def miou(self, nan_to_zero: bool = False) -> float:
        """Mean IoU over present classes, or (``nan_to_zero``) the reference NaN→0 mean over all."""
        iou = self.iou()
        if nan_to_zero:
            return float(torch.nan_to_num(iou, nan=0.0).mean())
        present = iou[~iou.isnan()]
        return float(present.mean()) if present.numel() else math.nan

    def f1(self) -> torch.Tensor:
        """Per-class 2·TP / (2·TP + FP + FN) (NaN for absent classes)."""
        h = self._h()
        return 2 * h.diag() / (h.sum(0) + h.sum(1))

    def class_accuracy(self) -> torch.Tensor:
        """Per-class recall TP / (TP + FN) (NaN for classes absent from the target)."""
        h = self._h()
        return h.diag() / h.sum(1)

    def pixel_accuracy(self) -> float:
        total = int(self.hist.sum())
        return float(self.hist.diag().sum()) / total if total else math.nan

    # ------------------------------------------------------------------ combining and serialising
    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Accumulate ``other`` into this matrix (e.g. per-worker or per-rank results)."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError("cannot merge confusion matrices with different classes or ignore index")
        self.hist += other.hist
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return ConfusionMatrix(self.num_classes, self.ignore_index).merge(self).merge(other)

    def state_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index, "hist": self.hist.clone()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ConfusionMatrix:
        cm = cls(int(state["num_classes"]), int(state["ignore_index"]))
        hist = torch.as_tensor(state["hist"], dtype=torch.int64)
        if hist.shape != cm.hist.shape:
            raise ValueError(f"hist shape {tuple(hist.shape)} != {tuple(cm.hist.shape)}")
        cm.hist.copy_(hist)
        return cm

    def to_dict(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
        """JSON-ready report (NaN → None); IoU etc. as fractions in [0, 1]."""
        names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ValueError(f"{len(names)} class names for {self.num_classes} classes")

        def clean(x: float) -> float | None:
            return None if math.isnan(x) else round(float(x), 6)

        iou, f1, acc = self.iou().tolist(), self.f1().tolist(), self.class_accuracy().tolist()
        return {
            "miou": clean(self.miou(nan_to_zero=True)),
            "miou_present": clean(self.miou()),
            "pixel_accuracy": clean(self.pixel_accuracy()),
            "mean_class_accuracy": clean(float(np.nan_to_num(acc, nan=0.0).mean())),
            "pixels": int(self.hist.sum()),
            "per_class": {
                name: {"iou": clean(i), "f1": clean(f), "accuracy": clean(a), "pixels": int(n)}
                for name, i, f, a, n in zip(names, iou, f1, acc, self.hist.sum(1).tolist())
            },
        }


# ---------------------------------------------------------------------------------------------- video consistency
def window_consistency(labels: Sequence[np.ndarray], predictions: Sequence[np.ndarray], window: int = 8) -> list[float]:
    """VSPW's video consistency of one clip (its ``VC_perclip.py``), one score per window of ``window`` frames.

    In a window, the pixels whose ground-truth label stays the same in every frame (the same as in the window's
    first frame, which is the same thing) are counted; the score is the share of them whose predicted label also
    stays the same. As in VSPW's code: windows start at frames ``0 .. n - window - 1`` (``n - window`` of them, so
    a clip of ``window`` frames or fewer has none and the last possible window is not scored), every pixel counts
    (ignore labels too: VSPW maps its void classes to 255 and keeps them), and a window with no stable pixel gives
    NaN (left out of the mean by :class:`VideoConsistency`).
    """
    if len(labels) != len(predictions):
        raise ValueError(f"{len(labels)} label frames but {len(predictions)} prediction frames")
    if window < 2:
        raise ValueError(f"a window holds at least 2 frames, got {window}")
    gt = np.stack([np.asarray(x) for x in labels])
    pred = np.stack([np.asarray(x) for x in predictions])
    if gt.shape != pred.shape:
        raise ValueError(f"labels {gt.shape[1:]} and predictions {pred.shape[1:]} differ in size")
    scores = []
    for start in range(len(gt) - window):
        frames = slice(start, start + window)
        stable_gt = np.all(gt[frames] == gt[start], axis=0)
        stable_pred = np.all(pred[frames] == pred[start], axis=0)
        total = int(stable_gt.sum())
        scores.append(float((stable_gt & stable_pred).sum()) / total if total else math.nan)
    return scores


class VideoConsistency:
    """mVC (VSPW): the mean of :func:`window_consistency` over every window of every clip added (NaN windows left
    out). ``1 - value`` is the flicker. Mergeable across ranks through :attr:`state` (sum and count)."""

    def __init__(self, window: int = 8) -> None:
        self.window = window
        self.total, self.windows = 0.0, 0

    def add_clip(self, labels: Sequence[np.ndarray], predictions: Sequence[np.ndarray]) -> list[float]:
        scores = window_consistency(labels, predictions, self.window)
        valid = [s for s in scores if not math.isnan(s)]
        self.total += sum(valid)
        self.windows += len(valid)
        return scores

    def merge(self, total: float, windows: int) -> None:
        self.total += total
        self.windows += windows

    @property
    def state(self) -> tuple[float, int]:
        return self.total, self.windows

    @property
    def value(self) -> float:
        return self.total / self.windows if self.windows else math.nan
