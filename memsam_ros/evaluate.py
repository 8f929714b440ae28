"""``memsam-eval-bag``: score a checkpoint on a recorded bag, offline (no ROS) or live (over DDS).

Offline, the bag is read with rosbags and goes through exactly what the node runs: the same codec
(:func:`memsam_ros.codec.decode_modality`), the same :class:`ModalitySynchronizer` fed with the bag
receive time as its clock, and the same :class:`memsam_core.engine.Segmenter`, one set at a time.
Live (``--mode live``), the bag is played into a running node (memsam_ros.recorder). Either way a
:class:`Scoreboard` matches each prediction to the ground-truth label image with the same header
stamp (the node stamps outputs with the RGB stamp) and the report is written by memsam_ros.report.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memsam_core.classes import IGNORE_INDEX, colorize
from memsam_core.config import ConfigError, MemSamConfig, load_config, parse_overrides
from memsam_core.metrics import ConfusionMatrix
from memsam_core.modalities import check_ros_sensors
from memsam_core.model import CheckpointError
from memsam_core.model.build import checkpoint_config
from memsam_ros.bag_tools import (
    GT_LABELS_TOPIC,
    GT_SCENE_TOPIC,
    BagError,
    iter_messages,
    open_reader,
    require_topics,
    scene_values,
    stamp_ns,
)
from memsam_ros.codec import ImageDecodeError, decode_modality, image_to_array
from memsam_ros.sync import ModalitySynchronizer

LOG = logging.getLogger(__name__)
UNKNOWN = "unknown"
ALL_PRESENT = "none"
MAX_OVERLAY_CANDIDATES = 64  # first frame of each (condition, missing) case, kept until the report picks some


def missing_key(missing: Sequence[str]) -> str:
    """Group name of a missing-modality case: ``none`` or e.g. ``lidar+event``."""
    return "+".join(missing) if missing else ALL_PRESENT


def absolute_topic(name: str) -> str:
    """The node's relative default topics (``rgb/image``) resolve to ``/rgb/image`` without a namespace."""
    return name if name.startswith("/") else "/" + name


def modality_topics(config: MemSamConfig) -> dict[str, str]:
    return {m: absolute_topic(config.ros.topic(m)) for m in config.model.modalities}


# ---------------------------------------------------------------------- scoring
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
    ) -> None:
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.palette = palette
        self.expect_scene = expect_scene
        self.max_overlays = max_overlays
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


# ---------------------------------------------------------------------- offline evaluation
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


@dataclass(slots=True)
class _Frame:
    array: np.ndarray
    stamp_ns: int


def _load_segmenter(config: MemSamConfig, source: str) -> Any:
    from memsam_core.engine import Segmenter

    return Segmenter(config, source=source)


def evaluate_bag_offline(
    bag: str | Path,
    config: MemSamConfig,
    segmenter: Any = None,
    gt_topic: str = GT_LABELS_TOPIC,
    scene_topic: str = GT_SCENE_TOPIC,
    progress: bool = True,
    max_overlays: int = 6,
) -> EvaluationRun:
    """Replay ``bag`` through codec → synchroniser → Segmenter and score against ``gt_topic``."""
    from tqdm import tqdm

    started = time.monotonic()
    reader = open_reader(bag)
    try:
        if segmenter is None:
            segmenter = _load_segmenter(config, str(bag))
        config = segmenter.config  # the checkpoint's modalities, input contract and classes
        check_ros_sensors(config, config.inference.checkpoint or str(bag))  # a bag carries metric depth/LiDAR
        topics = modality_topics(config)
        available = set(reader.topics)
        reference = config.sync.reference
        require_topics(
            bag,
            available,
            {
                topics[reference]: f"reference modality {reference!r}, config ros.{reference}_topic",
                gt_topic: "ground truth",
            },
        )
        absent = [m for m, t in topics.items() if t not in available]
        for m in absent:
            LOG.warning("%s: no topic %s; evaluating without %s", bag, topics[m], m)
        palette = np.asarray(segmenter.palette, dtype=np.uint8)
        has_scene = scene_topic in available
        board = Scoreboard(config.classes.names, palette, expect_scene=has_scene, max_overlays=max_overlays)
        sync = ModalitySynchronizer.from_config(config)
        by_topic = {t: m for m, t in topics.items() if t in available}
        wanted = [*by_topic, gt_topic] + ([scene_topic] if has_scene else [])
        total = sum(reader.topics[t].msgcount for t in wanted)
        decode_errors: dict[str, int] = {}
        inference_ms: list[float] = []

        def run_sets(sets: list) -> None:
            for synced in sets:
                frames = {m: f.array for m, f in synced.items.items()}
                result = segmenter.segment_batch([frames])[0]
                inference_ms.append(result.inference_ms)
                board.add_prediction(
                    Prediction(
                        synced.items[reference].stamp_ns,
                        result.labels,
                        tuple(result.missing),
                        frames.get("rgb"),
                        result.inference_ms,
                    )
                )

        messages = iter_messages(reader, wanted)
        for topic, log_ns, msg in tqdm(messages, total=total, desc="evaluating", unit="msg", disable=not progress):
            stamp = stamp_ns(msg.header)
            try:
                if topic == gt_topic:
                    board.add_ground_truth(stamp, image_to_array(msg))
                elif topic == scene_topic:
                    board.add_scene(stamp, scene_values(msg))
                else:
                    modality = by_topic[topic]
                    array = decode_modality(msg, modality)
                    run_sets(sync.add(modality, stamp * 1e-9, _Frame(array, stamp), log_ns * 1e-9))
            except (ImageDecodeError, ValueError) as err:
                decode_errors[topic] = decode_errors.get(topic, 0) + 1
                LOG.warning("%s at %d: cannot decode, skipped: %s", topic, stamp, err)
        run_sets(sync.poll(float("inf")))
        board.finish()
    finally:
        reader.close()
    stats = sync.stats
    details = {
        "topics": {m: topics[m] for m in topics}
        | {"ground_truth": gt_topic, "scene": scene_topic if has_scene else None},
        "absent_topics": [topics[m] for m in absent],
        "decode_errors": decode_errors,
        "sync": {
            "emitted": stats.emitted,
            "dropped_incomplete": stats.dropped_incomplete,
            "resets": stats.resets,
            "received": stats.received,
            "used": stats.used,
        },
        "inference_ms_mean": float(np.mean(inference_ms)) if inference_ms else None,
    }
    return EvaluationRun(
        board, "offline", str(bag), config, config.inference.checkpoint, time.monotonic() - started, details
    )


# ---------------------------------------------------------------------- comparison
def compare_runs(offline: EvaluationRun, live: EvaluationRun) -> dict[str, Any]:
    """Offline vs live on the stamps scored by both (the live node may skip sets; offline never does)."""
    off = {f.stamp_ns: f for f in offline.scoreboard.frames}
    on = {f.stamp_ns: f for f in live.scoreboard.frames}
    common = set(off) & set(on)
    off_frames = [off[s] for s in sorted(common)]
    on_frames = [on[s] for s in sorted(common)]
    miou_off = float(offline.scoreboard.confusion(off_frames).miou()) if common else None
    miou_on = float(live.scoreboard.confusion(on_frames).miou()) if common else None
    identical = sum(
        np.array_equal(confusion_counts(a.matrix), confusion_counts(b.matrix)) for a, b in zip(off_frames, on_frames)
    )
    return {
        "frames_offline": len(off),
        "frames_live": len(on),
        "frames_common": len(common),
        "miou_offline_common": miou_off,
        "miou_live_common": miou_on,
        "miou_abs_diff": abs(miou_off - miou_on) if common else None,
        "frames_identical_confusion": int(identical),
        "missing_case_agreement": int(sum(a.missing == b.missing for a, b in zip(off_frames, on_frames))),
    }


# ---------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="memsam-eval-bag",
        description="Evaluate a checkpoint on a bag with ground-truth labels; writes a report folder.",
    )
    p.add_argument("bag", help="rosbag2 directory (e.g. from memsam-make-bag)")
    p.add_argument("--config", default=None, help="memsam YAML or the node's ROS params file (default: defaults)")
    p.add_argument("--checkpoint", default=None, help="memsam checkpoint (overrides inference.checkpoint)")
    p.add_argument("--out", default="outputs/eval", help="report folder (default outputs/eval)")
    p.add_argument("--mode", choices=("offline", "live", "both"), default="offline")
    p.add_argument("--gt-topic", default=GT_LABELS_TOPIC)
    p.add_argument("--scene-topic", default=GT_SCENE_TOPIC)
    p.add_argument("--overlays", type=int, default=6, help="overlay pictures to write (default 6)")
    p.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides, e.g. model.image_size=128"
    )
    p.add_argument("--rate", type=float, default=1.0, help="live: playback rate (lock-step either way)")
    p.add_argument("--startup-timeout", type=float, default=180.0, help="live: seconds to wait for the node")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``memsam-eval-bag BAG --checkpoint X --config Y --out DIR``; returns 2 on bad input."""
    from memsam_ros.report import write_comparison, write_report

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        overrides = parse_overrides(args.set)
        if args.checkpoint:
            overrides["inference.checkpoint"] = args.checkpoint
        if args.checkpoint and not Path(args.checkpoint).is_file():
            raise ConfigError(f"--checkpoint {args.checkpoint}: no such file")
        config = load_config(args.config, overrides)
        if config.inference.checkpoint:  # topics, classes and contract of the checkpoint, for both modes
            config = checkpoint_config(config.inference.checkpoint, config, args.config or "<defaults>")
        out = Path(args.out)
        runs: dict[str, EvaluationRun] = {}
        if args.mode in ("offline", "both"):
            runs["offline"] = evaluate_bag_offline(
                args.bag, config, None, args.gt_topic, args.scene_topic, not args.quiet, args.overlays
            )
        if args.mode in ("live", "both"):
            from memsam_ros.recorder import evaluate_bag_live

            runs["live"] = evaluate_bag_live(
                args.bag,
                config,
                config_path=args.config,
                rate=args.rate,
                startup_timeout_s=args.startup_timeout,
                progress=not args.quiet,
                max_overlays=args.overlays,
                gt_topic=args.gt_topic,
                scene_topic=args.scene_topic,
            )
    except (ConfigError, BagError, CheckpointError) as err:
        for line in str(err).splitlines():
            print(f"memsam-eval-bag: error: {line}", file=sys.stderr)
        return 2
    for mode, run in runs.items():
        folder = out / mode if len(runs) > 1 else out
        summary = write_report(folder, run)
        print(f"{mode}: mIoU {summary['overall']['miou']:.4f} over {summary['frames']['evaluated']} frames -> {folder}")
    if len(runs) == 2:
        comparison = write_comparison(out, runs["offline"], runs["live"])
        print(
            f"offline vs live on {comparison['frames_common']} common frames: "
            f"mIoU {comparison['miou_offline_common']:.4f} vs {comparison['miou_live_common']:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
