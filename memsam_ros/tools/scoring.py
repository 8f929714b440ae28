"""Scoring shared by offline and live evaluation: predictions matched to ground truth by exact stamp.

:class:`Scoreboard` accumulates per-frame confusion matrices; :class:`EvaluationRun` is what a report
is written from; :func:`compare_runs` puts an offline and a live run side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memsam_core.classes import IGNORE_INDEX, colorize
from memsam_core.config import MemSamConfig
from memsam_core.metrics import ConfusionMatrix

LOG = logging.getLogger(__name__)
UNKNOWN = "unknown"
ALL_PRESENT = "none"
MAX_OVERLAY_CANDIDATES = 64  # first frame of each (condition, missing) case, kept until the report picks some


def missing_key(missing: Sequence[str]) -> str:
    """Group name of a missing-modality case: ``none`` or e.g. ``lidar+event``."""
    return "+".join(missing) if missing else ALL_PRESENT


@dataclass
class Prediction:
    """One output of the segmenter/node, keyed by its reference header stamp."""

    stamp_ns: int
    labels: np.ndarray
    missing: tuple[str, ...] | None  # None = unknown (live: ~/info not received)
    rgb: np.ndarray | None = None
    inference_ms: float | None = None


@dataclass
class FrameRecord:
    stamp_ns: int
    condition: str
    failures: str
    missing: str
    pixel_accuracy: float
    miou: float
    inference_ms: float | None
    matrix: ConfusionMatrix = field(repr=False)


@dataclass(eq=False)  # identity equality: holds images
class Overlay:
    stamp_ns: int
    condition: str
    missing: str
    rgb: np.ndarray | None
    prediction: np.ndarray
    ground_truth: np.ndarray


class Scoreboard:
    """Matches predictions to ground truth by exact header stamp and accumulates confusion matrices.

    A pair is scored as soon as prediction, ground truth and (if the bag has one) the scene message
    for its stamp are all in; :meth:`finish` scores pairs still waiting for a scene as ``unknown``.
    Per-frame confusion matrices are kept (C*C ints each) so any subset, e.g. the stamps scored both
    offline and live, can be re-scored.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        palette: np.ndarray,
        expect_scene: bool = True,
        max_overlays: int = 6,
        keep_labels: bool = False,
    ) -> None:
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.palette = palette
        self.expect_scene = expect_scene
        self.max_overlays = max_overlays
        self.keep_labels = keep_labels
        self.labels: dict[int, np.ndarray] = {}  # predicted labels by stamp, with keep_labels (per-pixel comparisons)
        self.frames: list[FrameRecord] = []
        self._candidates: list[Overlay] = []
        self.ground_truth_frames = 0
        self.predictions = 0
        self.invalid_frames = 0
        self._predictions: dict[int, Prediction] = {}
        self._ground_truth: dict[int, np.ndarray] = {}
        self._scenes: dict[int, dict[str, str]] = {}
        self._scored: set[int] = set()

    # -------------------------------------------------------------- input
    def add_prediction(self, prediction: Prediction) -> None:
        self.predictions += 1
        if self.keep_labels:
            self.labels[prediction.stamp_ns] = prediction.labels
        self._predictions[prediction.stamp_ns] = prediction
        self._try_score(prediction.stamp_ns)

    def add_ground_truth(self, stamp: int, labels: np.ndarray) -> None:
        self.ground_truth_frames += 1
        self._ground_truth[stamp] = labels
        self._try_score(stamp)

    def add_scene(self, stamp: int, values: dict[str, str]) -> None:
        self._scenes[stamp] = values
        self._try_score(stamp)

    def finish(self) -> None:
        """Score pairs still waiting for a scene message (condition ``unknown``)."""
        for stamp in sorted(set(self._predictions) & set(self._ground_truth)):
            self._score(stamp)

    # -------------------------------------------------------------- results
    @property
    def unmatched_predictions(self) -> int:
        return len(self._predictions)

    @property
    def ground_truth_without_prediction(self) -> int:
        return len(self._ground_truth)

    def confusion(self, frames: Sequence[FrameRecord] | None = None) -> ConfusionMatrix:
        """The merged confusion matrix of ``frames`` (default: all scored frames)."""
        total = ConfusionMatrix(self.num_classes, ignore_index=IGNORE_INDEX)
        for frame in self.frames if frames is None else frames:
            total.merge(frame.matrix)
        return total

    def groups(self, attribute: str) -> dict[str, list[FrameRecord]]:
        out: dict[str, list[FrameRecord]] = {}
        for frame in self.frames:
            out.setdefault(getattr(frame, attribute), []).append(frame)
        return out

    def frames_at(self, stamps: set[int]) -> list[FrameRecord]:
        return [f for f in self.frames if f.stamp_ns in stamps]

    # -------------------------------------------------------------- internals
    def _try_score(self, stamp: int) -> None:
        if stamp in self._predictions and stamp in self._ground_truth:
            if stamp in self._scenes or not self.expect_scene:
                self._score(stamp)

    def _score(self, stamp: int) -> None:
        prediction = self._predictions.pop(stamp)
        truth = self._ground_truth.pop(stamp)
        scene = self._scenes.pop(stamp, {})
        if stamp in self._scored:
            LOG.warning("stamp %d scored twice (duplicate messages?); keeping the first", stamp)
            return
        self._scored.add(stamp)
        if prediction.labels.shape != truth.shape:
            LOG.warning(
                "stamp %d: prediction %s and ground truth %s differ in size; ground truth resized (nearest)",
                stamp,
                prediction.labels.shape,
                truth.shape,
            )
            truth = _resize_nearest(truth, prediction.labels.shape)
        matrix = ConfusionMatrix(self.num_classes, ignore_index=IGNORE_INDEX)
        try:
            matrix.update(prediction.labels, truth)
        except ValueError as err:  # e.g. ground truth with class ids the model does not have
            self.invalid_frames += 1
            LOG.warning("stamp %d: not scored: %s", stamp, err)
            return
        missing = UNKNOWN if prediction.missing is None else missing_key(prediction.missing)
        condition = scene.get("condition") or UNKNOWN
        record = FrameRecord(
            stamp_ns=stamp,
            condition=condition,
            failures=scene.get("failures", ""),
            missing=missing,
            pixel_accuracy=float(matrix.pixel_accuracy()),
            miou=float(matrix.miou()),
            inference_ms=prediction.inference_ms,
            matrix=matrix,
        )
        self.frames.append(record)
        self._maybe_keep_overlay(record, prediction, truth)

    def _maybe_keep_overlay(self, record: FrameRecord, prediction: Prediction, truth: np.ndarray) -> None:
        """Keep the first frame of every (condition, missing) case as a candidate picture (bounded)."""
        if len(self._candidates) >= MAX_OVERLAY_CANDIDATES:
            return
        if any(o.condition == record.condition and o.missing == record.missing for o in self._candidates):
            return
        self._candidates.append(
            Overlay(
                record.stamp_ns,
                record.condition,
                record.missing,
                prediction.rgb,
                colorize(prediction.labels, self.palette),
                colorize(truth, self.palette),
            )
        )

    @property
    def overlays(self) -> list[Overlay]:
        """Up to ``max_overlays`` pictures: every condition first (each with a new missing case where
        possible), then the remaining missing cases, then other combinations; in stamp order."""
        chosen: list[Overlay] = []
        missing_seen: set[str] = set()

        def take(overlay: Overlay) -> None:
            if overlay not in chosen and len(chosen) < self.max_overlays:
                chosen.append(overlay)
                missing_seen.add(overlay.missing)

        conditions = list(dict.fromkeys(o.condition for o in self._candidates))
        for condition in conditions:
            options = [o for o in self._candidates if o.condition == condition]
            take(next((o for o in options if o.missing not in missing_seen), options[0]))
        for overlay in self._candidates:
            if overlay.missing not in missing_seen:
                take(overlay)
        for overlay in self._candidates:
            take(overlay)
        return sorted(chosen, key=lambda o: o.stamp_ns)


def confusion_counts(matrix: ConfusionMatrix) -> np.ndarray:
    """``[C, C]`` int64 counts, rows = ground truth, columns = prediction."""
    return matrix.hist.numpy().astype(np.int64, copy=True)


def _resize_nearest(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = np.arange(shape[0]) * labels.shape[0] // shape[0]
    cols = np.arange(shape[1]) * labels.shape[1] // shape[1]
    return labels[rows[:, None], cols[None, :]]


@dataclass
class EvaluationRun:
    """A scoreboard plus what the report says about how it was produced."""

    scoreboard: Scoreboard
    mode: str
    bag: str
    config: MemSamConfig
    checkpoint: str
    wall_s: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def compare_runs(offline: EvaluationRun, live: EvaluationRun) -> dict[str, Any]:
    """Offline vs live on the stamps scored by both (the live node may skip sets; offline never does)."""
    off = {f.stamp_ns: f for f in offline.scoreboard.frames}
    on = {f.stamp_ns: f for f in live.scoreboard.frames}
    common = set(off) & set(on)
    off_frames = [off[s] for s in sorted(common)]
    on_frames = [on[s] for s in sorted(common)]
    miou_off = float(offline.scoreboard.confusion(off_frames).miou()) if common else None
    miou_on = float(live.scoreboard.confusion(on_frames).miou()) if common else None
    same = [
        np.array_equal(confusion_counts(a.matrix), confusion_counts(b.matrix)) for a, b in zip(off_frames, on_frames)
    ]
    identical = sum(same)
    differing = [  # where to look when they disagree
        {"stamp_ns": a.stamp_ns, "missing_offline": a.missing, "missing_live": b.missing, "same_confusion": equal}
        for a, b, equal in zip(off_frames, on_frames, same, strict=True)
        if not equal or a.missing != b.missing
    ]
    return {
        "frames_offline": len(off),
        "frames_live": len(on),
        "frames_common": len(common),
        "miou_offline_common": miou_off,
        "miou_live_common": miou_on,
        "miou_abs_diff": abs(miou_off - miou_on) if common else None,
        "frames_identical_confusion": int(identical),
        "missing_case_agreement": int(sum(a.missing == b.missing for a, b in zip(off_frames, on_frames))),
        "frames_differing": differing,
    }


def label_agreement(first: EvaluationRun, second: EvaluationRun) -> dict[str, Any]:
    """Per-pixel agreement of the predicted labels of two runs on the stamps both predicted (both kept with
    ``keep_labels``): the fraction of equal pixels per frame (0 for labels of another size), its mean and minimum,
    and the frames compared."""
    a, b = first.scoreboard.labels, second.scoreboard.labels
    if not (first.scoreboard.keep_labels and second.scoreboard.keep_labels):
        raise ValueError("label_agreement needs runs evaluated with keep_labels=True")
    per_frame = {s: float(np.mean(a[s] == b[s])) if a[s].shape == b[s].shape else 0.0 for s in sorted(set(a) & set(b))}
    values = list(per_frame.values())
    return {
        "frames_common": len(per_frame),
        "pixel_agreement": float(np.mean(values)) if values else None,
        "pixel_agreement_min": min(values) if values else None,
        "per_frame": per_frame,
    }
