"""Live evaluation: play a bag into the running node over real DDS and score its ``~/labels``.

:class:`EvalRecorder` subscribes (RELIABLE) to the node's ``~/labels`` and ``~/info`` and to the
ground-truth topics the player republishes, joins labels with info by header stamp (``info`` says
which modalities the node actually had) and feeds the same :class:`~memsam_ros.tools.scoring.Scoreboard`
as offline evaluation.

:func:`evaluate_bag_live` starts the node as its own process (``python -m memsam_ros.node``), plays
the bag with :class:`~memsam_ros.tools.player.BagPlayer` in lock-step with the node's output and RELIABLE
QoS, so the node's keep-newest worker never drops a set and every set the synchroniser forms is
segmented, exactly as offline; each RGB message is held back by ``sync.max_wait_s`` of bag time (at least
``slop_s``), so everything its set may wait for is queued first: its frames, and under ``nearest`` the
first message of each other sensor at or after its stamp, which proves no nearer one is coming (a 10 Hz
LiDAR's can be 100 ms away). Otherwise the node would wait for the player's real-time pacing, and a CPU
starved by inference may not deliver within ``max_wait_s``. Offline and live are then compared on the
stamps scored by both.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from memsam_core.config import MemSamConfig
from memsam_core.model.build import checkpoint_config
from memsam_ros.info import info_dict, info_wire_type
from memsam_ros.inputs.codec import ImageDecodeError, decode_modality, image_to_array
from memsam_ros.inputs.compressed import decode_compressed_image
from memsam_ros.inputs.converter import MESSAGE_TYPES, TF_STATIC_TOPIC, message_class
from memsam_ros.inputs.stamps import stamp_ns
from memsam_ros.sync import replay_config
from memsam_ros.tools.bag_tools import (
    GT_LABELS_TOPIC,
    GT_SCENE_TOPIC,
    BagError,
    bag_topics,
    detect_inputs,
    scene_values,
)
from memsam_ros.tools.player import BagPlayer
from memsam_ros.tools.scoring import EvaluationRun, Prediction, Scoreboard
from memsam_ros.topics import camera_info_topic, modality_topics

LOG = logging.getLogger(__name__)
EVAL_NODE_NAME = "memsam_eval_segment"
RGB_CACHE = 64  # recent RGB frames kept for overlay pictures
INFO_GRACE_S = 5.0  # after the last label, wait this long for outstanding ~/info messages


class EvalRecorder:
    """Collects the node's outputs and the ground truth on ``ros_node`` into ``scoreboard``."""

    def __init__(
        self,
        ros_node: Any,
        scoreboard: Scoreboard,
        segment_node: str,
        gt_topic: str = GT_LABELS_TOPIC,
        scene_topic: str | None = GT_SCENE_TOPIC,
        rgb_topic: str | None = None,
        rgb_type: str = "image",
    ) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.scoreboard = scoreboard
        self._lock = threading.Lock()
        self._labels: dict[int, np.ndarray] = {}
        self._infos: dict[int, dict[str, Any]] = {}
        self._rgb: OrderedDict[int, np.ndarray] = OrderedDict()
        self.info_messages: list[dict[str, Any]] = []
        self.label_messages = 0
        qos = QoSProfile(depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        base = segment_node.rstrip("/")
        self.labels_topic = f"{base}/labels"
        self.info_topic = f"{base}/info"
        info_type = info_wire_type()
        self._outputs = [
            ros_node.create_subscription(Image, self.labels_topic, self._on_labels, qos),
            ros_node.create_subscription(info_type, self.info_topic, self._on_info, qos),
        ]
        ros_node.create_subscription(Image, gt_topic, self._on_ground_truth, qos)
        if scene_topic:
            ros_node.create_subscription(DiagnosticArray, scene_topic, self._on_scene, qos)
        decode = decode_modality if rgb_type == "image" else decode_compressed_image
        self._decode_rgb = lambda msg: decode(msg, "rgb")
        if rgb_topic:
            ros_node.create_subscription(message_class(MESSAGE_TYPES[rgb_type]), rgb_topic, self._on_rgb, qos)

    def outputs_matched(self) -> bool:
        """The node's ``~/labels`` and ``~/info`` publishers are matched with our subscriptions."""
        return all(sub.get_publisher_count() > 0 for sub in self._outputs)

    # -------------------------------------------------------------- callbacks
    def _on_labels(self, msg: Any) -> None:
        stamp = stamp_ns(msg.header)
        labels = image_to_array(msg)
        with self._lock:
            self.label_messages += 1
            self._labels[stamp] = labels
            self._join(stamp)

    def _on_info(self, msg: Any) -> None:
        info = info_dict(msg)
        with self._lock:
            self.info_messages.append(info)
            self._infos[info["stamp_ns"]] = info
            self._join(info["stamp_ns"])

    def _on_ground_truth(self, msg: Any) -> None:
        with self._lock:
            self.scoreboard.add_ground_truth(stamp_ns(msg.header), image_to_array(msg))

    def _on_scene(self, msg: Any) -> None:
        with self._lock:
            self.scoreboard.add_scene(stamp_ns(msg.header), scene_values(msg))

    def _on_rgb(self, msg: Any) -> None:
        try:
            rgb = self._decode_rgb(msg)
        except ImageDecodeError:
            return
        with self._lock:
            self._rgb[stamp_ns(msg.header)] = rgb
            while len(self._rgb) > RGB_CACHE:
                self._rgb.popitem(last=False)

    def _join(self, stamp: int) -> None:
        if stamp in self._labels and stamp in self._infos:
            self._add(stamp, self._labels.pop(stamp), self._infos.pop(stamp))

    def _add(self, stamp: int, labels: np.ndarray, info: dict[str, Any] | None) -> None:
        missing = tuple(info["modalities_missing"]) if info is not None else None
        inference_ms = info["inference_ms"] if info is not None else None
        self.scoreboard.add_prediction(Prediction(stamp, labels, missing, self._rgb.get(stamp), inference_ms))

    # -------------------------------------------------------------- end
    def waiting_for_info(self) -> int:
        with self._lock:
            return len(self._labels)

    def finish(self) -> None:
        """Score labels whose ``~/info`` never came (missing-modality case ``unknown``)."""
        with self._lock:
            for stamp in sorted(self._labels):
                self._add(stamp, self._labels.pop(stamp), None)
            self.scoreboard.finish()


# ---------------------------------------------------------------------- node process
def node_command(config_file: Path, node_name: str = EVAL_NODE_NAME) -> list[str]:
    """The node with the evaluated config; RELIABLE inputs so nothing is lost on the way in."""
    return [
        sys.executable,
        "-m",
        "memsam_ros.node",
        "--ros-args",
        "-r",
        f"__node:={node_name}",
        "-p",
        f"config_file:={config_file}",
        "-p",
        "ros.reliability:=reliable",
        "-p",
        "ros.qos_depth:=50",
    ]


class NodeProcess:
    """The node in a child process, its output in a log file; stopped with SIGINT like Ctrl-C."""

    def __init__(self, command: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # closed in stop()
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()
        return self.process.returncode


def _wait_until(condition, timeout_s: float, alive=lambda: True, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if not alive():
            return False
        time.sleep(step_s)
    return condition()


# ---------------------------------------------------------------------- live evaluation
def evaluate_bag_live(
    bag: str | Path,
    config: MemSamConfig,
    config_path: str | Path | None = None,
    rate: float = 1.0,
    startup_timeout_s: float = 180.0,
    progress: bool = True,
    max_overlays: int = 6,
    gt_topic: str = GT_LABELS_TOPIC,
    scene_topic: str = GT_SCENE_TOPIC,
    context: Any = None,
    log_dir: str | Path | None = None,
    gate_timeout_s: float = 30.0,
    keep_labels: bool = False,
) -> EvaluationRun:
    """Run the node on ``bag`` over DDS and score it; ``context``: an initialised rclpy Context (else own).
    ``keep_labels`` keeps each frame's labels (``scoring.label_agreement`` compares them with an offline run).

    The node gets ``config`` (written to a YAML as its ``config_file``; ``config_path`` is only named in
    the report). The node process inherits ``ROS_DOMAIN_ID`` from this process's environment or ``context``.
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    started = time.monotonic()
    topics_in_bag = bag_topics(bag)  # raises BagError for a missing/unreadable bag
    if config.inference.checkpoint:  # the node gets the checkpoint's model, input contract and classes
        config = checkpoint_config(config.inference.checkpoint, config, str(config_path or "<config>"))
    config = detect_inputs({t: msgtype for t, (msgtype, _) in topics_in_bag.items()}, config)
    config = replay_config(config)  # nearest: the same sets as offline
    sensor_topics = modality_topics(config)
    reference_topic = sensor_topics[config.sync.reference]
    for topic, why in ((reference_topic, "reference modality"), (gt_topic, "ground truth")):
        if topic not in topics_in_bag:
            raise BagError(f"{bag}: missing topic {topic} ({why}); the bag has {', '.join(sorted(topics_in_bag))}")
    play_topics = [t for t in sensor_topics.values() if t in topics_in_bag] + [gt_topic]
    info_topic = config.ros.camera_info_topic or camera_info_topic(reference_topic)
    geometry = [info_topic] + ([TF_STATIC_TOPIC] if config.ros.lidar_type == "pointcloud" else [])
    play_topics += [t for t in geometry if t in topics_in_bag]  # the node subscribes to both
    has_scene = scene_topic in topics_in_bag
    if has_scene:
        play_topics.append(scene_topic)

    work = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="memsam_live_"))
    work.mkdir(parents=True, exist_ok=True)
    config_file = work / "live_eval_config.yaml"
    config.save(config_file)
    own_context = context is None
    if own_context:
        context = Context()
        rclpy.init(context=context)
    env = dict(os.environ, ROS_DOMAIN_ID=str(context.get_domain_id()), PYTHONUNBUFFERED="1")
    node_proc = NodeProcess(node_command(config_file), work / "node.log", env)
    ros_node = rclpy.create_node("memsam_eval_recorder", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(ros_node)
    spinner = threading.Thread(target=executor.spin, name="memsam-recorder-spin", daemon=True)
    spinner.start()
    player: BagPlayer | None = None
    try:
        from memsam_core.classes import default_palette

        palette = (
            np.asarray(config.classes.palette, np.uint8)
            if config.classes.palette
            else default_palette(config.model.num_classes)
        )
        board = Scoreboard(config.classes.names, palette, has_scene, max_overlays, keep_labels)
        recorder = EvalRecorder(
            ros_node,
            board,
            f"/{EVAL_NODE_NAME}",
            gt_topic,
            scene_topic if has_scene else None,
            sensor_topics["rgb"],
            config.ros.rgb_type,
        )
        player = BagPlayer(
            ros_node,
            bag,
            rate=rate,
            topics=play_topics,
            gate_topic=recorder.labels_topic,
            reference_topic=reference_topic,
            gate_timeout_s=gate_timeout_s,
            hold_reference_s=max(config.sync.slop_s, config.sync.max_wait_s),
        )
        # every subscriber matched before the first message: the node on its sensor topics, the recorder
        # on RGB + ground truth (DDS discovery is asynchronous and late joiners miss RELIABLE messages too)
        recorder_topics = {sensor_topics["rgb"], gt_topic, scene_topic}
        node_topics = {*sensor_topics.values(), *geometry}
        expected = {t: int(t in node_topics) + int(t in recorder_topics) for t in play_topics}
        node_ready = _wait_until(
            lambda: (
                all(player.publishers[t].get_subscription_count() >= n for t, n in expected.items())
                and recorder.outputs_matched()
                and (player.gate is None or player.gate_matched())
            ),
            startup_timeout_s,
            alive=node_proc.alive,
        )
        if not node_ready:
            state = "exited" if not node_proc.alive() else f"not ready after {startup_timeout_s:.0f} s"
            raise BagError(f"segmentation node {state}; last lines of {node_proc.log_path}:\n{node_proc.log_tail()}")
        play_stats = player.play(progress=progress, abort=lambda: not node_proc.alive())
        if play_stats.aborted or not node_proc.alive():
            raise BagError(
                f"segmentation node exited during playback; last lines of {node_proc.log_path}:\n{node_proc.log_tail()}"
            )
        _wait_until(lambda: recorder.waiting_for_info() == 0, INFO_GRACE_S)
        recorder.finish()
    finally:
        if player is not None:
            player.close()
        return_code = node_proc.stop()
        executor.shutdown()
        spinner.join(timeout=5.0)
        ros_node.destroy_node()
        if own_context:
            context.try_shutdown()
    infos = recorder.info_messages
    details = {
        "node_log": str(node_proc.log_path),
        "node_exit_code": return_code,
        "played": play_stats.published,
        "play_wall_s": round(play_stats.wall_s, 3),
        "gate_timeouts": play_stats.gate_timeouts,
        "label_messages": recorder.label_messages,
        "info_messages": len(infos),
        "sets_dropped_by_node": max((i.get("sets_dropped", 0) for i in infos), default=0),
        "inference_ms_mean": float(np.mean([i["inference_ms"] for i in infos])) if infos else None,
        "total_latency_ms_mean": float(np.mean([i["total_latency_ms"] for i in infos])) if infos else None,
        "memory_resets": max((i.get("memory_resets", 0) for i in infos), default=0),
        "memory_instants": [i.get("memory_instants", 0) for i in sorted(infos, key=lambda i: i["stamp_ns"])],
        "config_file": str(config_path) if config_path else None,
    }
    LOG.info("live evaluation: %d frames scored, node log %s", len(board.frames), node_proc.log_path)
    return EvaluationRun(
        board, "live", str(bag), config, config.inference.checkpoint, time.monotonic() - started, details
    )
