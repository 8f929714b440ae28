"""``memsam-eval-bag``: score a checkpoint on a recorded bag, offline (no ROS) or live (over DDS).

Offline, the bag is read with rosbags and goes through exactly what the node runs: the same layout check
on arrival, the same :class:`ModalitySynchronizer` fed with the bag receive time as its clock, the same
decoding of a set's messages (:func:`memsam_ros.inputs.received.decode_set`) and the same
:class:`memsam_core.engine.Segmenter`, one set at a time, in the order the synchroniser forms them, through the
node's stream path (``segment_instant`` with the RGB stamp and the synchroniser's reset count), so a model with
memory across time (``model.temporal_memory``) remembers and forgets the same past instants as the node in
lock-step.
Live (``--mode live``), the bag is played into a running node (:mod:`memsam_ros.tools.recorder`). Either
way a :class:`~memsam_ros.tools.scoring.Scoreboard` matches each prediction to the ground-truth label image
with the same header stamp (the node stamps outputs with the RGB stamp) and the report is written by
:mod:`memsam_ros.tools.report`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from memsam_core.config import ConfigError, MemSamConfig, load_config, parse_overrides
from memsam_core.modalities import check_ros_sensors
from memsam_core.model import CheckpointError
from memsam_core.model.build import checkpoint_config
from memsam_ros.inputs.codec import ImageDecodeError, image_to_array
from memsam_ros.inputs.converter import TF_STATIC_TOPIC, TF_TOPIC, InputConverter
from memsam_ros.inputs.received import decode_set
from memsam_ros.inputs.stamps import ns_to_s, stamp_ns
from memsam_ros.sync import ModalitySynchronizer, replay_config
from memsam_ros.tools.bag_tools import (
    GT_LABELS_TOPIC,
    GT_SCENE_TOPIC,
    BagError,
    detect_inputs,
    iter_messages,
    open_reader,
    require_topics,
    scene_values,
)
from memsam_ros.tools.progress import progress as show_progress
from memsam_ros.tools.scoring import EvaluationRun, Prediction, Scoreboard
from memsam_ros.topics import modality_topics

LOG = logging.getLogger(__name__)


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
    keep_labels: bool = False,
) -> EvaluationRun:
    """Replay ``bag`` through codec → synchroniser → Segmenter and score against ``gt_topic``; ``keep_labels`` keeps
    each frame's predicted labels (``scoring.label_agreement`` compares two runs per pixel)."""
    started = time.monotonic()
    reader = open_reader(bag)
    try:
        if segmenter is None:
            segmenter = _load_segmenter(config, str(bag))
        segmenter.reset("new_stream")  # the node starts each run with no past instants, so does the replay
        config = segmenter.config  # the checkpoint's modalities, input contract and classes
        check_ros_sensors(config, config.inference.checkpoint or str(bag))  # a bag carries metric depth/LiDAR
        config = detect_inputs({name: info.msgtype for name, info in reader.topics.items()}, config)
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
        board = Scoreboard(config.classes.names, palette, has_scene, max_overlays, keep_labels)
        sync = ModalitySynchronizer.from_config(replay_config(config))  # nearest: the same sets as live
        inputs = InputConverter(config)  # what the node converts each message type with
        by_topic = {t: m for m, t in topics.items() if t in available}
        geometry = [config.ros.camera_info_topic, TF_STATIC_TOPIC, TF_TOPIC] if inputs.needs_geometry else []
        geometry = [t for t in geometry if t in available]
        wanted = [*by_topic, gt_topic, *geometry] + ([scene_topic] if has_scene else [])
        total = sum(reader.topics[t].msgcount for t in wanted)
        decode_errors: dict[str, int] = {}
        inference_ms: list[float] = []
        memory_instants: list[int] = []

        def run_sets(sets: list) -> None:
            for synced in sets:
                items = synced.items  # what the node's inference thread does:
                frames, errors = decode_set(items, items[reference].stamp_ns)
                for modality, reason in errors.items():
                    decode_errors[topics[modality]] = decode_errors.get(topics[modality], 0) + 1
                    LOG.warning("%s: %s", topics[modality], reason)
                if reference not in frames:
                    continue
                stamp_s = ns_to_s(items[reference].stamp_ns)
                result = segmenter.segment_instant(frames, stamp_s, sync.resets)  # as the node's worker does
                inference_ms.append(result.inference_ms)
                memory_instants.append(result.extras["memory_instants"])
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
        for topic, log_ns, msg in show_progress(messages, total=total, desc="evaluating", unit="msg", enabled=progress):
            stamp = stamp_ns(msg.header) if hasattr(msg, "header") else log_ns  # a TFMessage has none
            try:
                if topic == gt_topic:
                    board.add_ground_truth(stamp, image_to_array(msg))
                elif topic == scene_topic:
                    board.add_scene(stamp, scene_values(msg))
                elif topic in (TF_STATIC_TOPIC, TF_TOPIC):
                    inputs.on_tf(msg)
                elif topic == config.ros.camera_info_topic and topic not in by_topic:
                    if problem := inputs.on_camera_info(msg):
                        LOG.warning("%s: %s", topic, problem)
                else:  # as the node: header and layout on arrival, the rest decoded only for a set
                    modality = by_topic[topic]
                    received, _ = inputs.receive(modality, msg, log_ns * 1e-9)
                    run_sets(sync.add(modality, ns_to_s(received.stamp_ns), received, received.arrival))
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
            "served": stats.served,
        },
        "inference_ms_mean": float(np.mean(inference_ms)) if inference_ms else None,
        "memory_resets": segmenter.memory_resets,
        "memory_instants": memory_instants,  # per segmented set, in stamp order
    }
    return EvaluationRun(
        board, "offline", str(bag), config, config.inference.checkpoint, time.monotonic() - started, details
    )


# ---------------------------------------------------------------------- comparison
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
    from memsam_ros.tools.report import write_comparison, write_report

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
            from memsam_ros.tools.recorder import evaluate_bag_live

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
