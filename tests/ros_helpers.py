"""Shared helpers for node tests over real DDS: a synthetic-frame publisher, an output collector and a
harness running :class:`memsam_ros.node.SegmentNode` in-process in its own executor thread.

Node and test nodes share one rclpy Context but talk through DDS topics (rclpy has no intra-process
shortcut), so these tests exercise the same path as separate processes would.
"""

from __future__ import annotations

import array
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from domains import next_domain_id
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from memsam_core.data.synthetic import SceneConfig, generate_scene
from memsam_ros.inputs import stamps
from memsam_ros.inputs.codec import array_to_image
from memsam_ros.inputs.converter import MESSAGE_TYPES, message_class
from memsam_ros.node import NODE_NAME, SegmentNode

MODALITY_ENCODINGS = {"rgb": "rgb8", "depth": "32FC1", "lidar": "32FC1", "event": "rgb8"}
TEST_PARAMS: dict[str, Any] = {
    "model.sam2_config": "sam2.1_hiera_t",
    "model.image_size": 128,
    "inference.device": "cpu",
    "inference.checkpoint": "",
    "ros.reliability": "reliable",
    "ros.qos_depth": 10,
    "ros.diagnostics_period_s": 0.25,
    "ros.silent_after_s": 600.0,
    "ros.warn_throttle_s": 30.0,
    "sync.slop_s": 0.02,
    "sync.max_wait_s": 0.5,  # generous: under CPU load the inputs of one set can arrive 100s of ms apart
}
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def to_time(stamp_s: float) -> Time:
    return stamps.to_time(stamps.s_to_ns(stamp_s))


def stamp_key(stamp: Time) -> int:
    return stamps.stamp_ns(Header(stamp=stamp))


def key_of(stamp_s: float) -> int:
    return stamps.s_to_ns(stamp_s)


def scene_frames(seed: int = 0, height: int = 96, width: int = 128) -> dict[str, np.ndarray]:
    """Consistent synthetic RGB/depth/LiDAR/event arrays (memsam_core.data.synthetic)."""
    return dict(generate_scene(seed, SceneConfig(height=height, width=width)).frames)


def image_msg(arr: np.ndarray, encoding: str, stamp_s: float, frame_id: str = "camera") -> Image:
    return array_to_image(arr, encoding, Header(stamp=to_time(stamp_s), frame_id=frame_id))


def raw_image(
    height: int, width: int, encoding: str, step: int, data: bytes, stamp_s: float, frame_id: str = "camera"
) -> Image:
    """An Image with arbitrary (possibly inconsistent) fields, for fault injection."""
    msg = Image(header=Header(stamp=to_time(stamp_s), frame_id=frame_id), height=height, width=width)
    msg.encoding, msg.step, msg.is_bigendian = encoding, step, 0
    msg.data = array.array("B", data)
    return msg


class FramePublisher(Node):
    """Publishes modality images on the node's input topics (reliable, so tests lose nothing).

    ``received``: the node's count of messages received on a modality's topic; when given, each publish
    waits until the node has it. Messages on different topics may arrive in any order, and a test that
    publishes one set now and then looks like silent sensors to the synchroniser; a sensor streaming at
    its rate does not.
    """

    def __init__(
        self,
        context: Context,
        topics: Mapping[str, str],
        received: Callable[[str], int] | None = None,
        types: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("memsam_test_publisher", context=context)
        # the node's default "auto" takes the type these publishers offer: Image, unless a test configures another
        configured = {m: (types or {}).get(m, "image") for m in topics}
        kinds = {m: "image" if kind == "auto" else kind for m, kind in configured.items()}
        self.pubs = {
            m: self.create_publisher(message_class(MESSAGE_TYPES[kinds[m]]), topic, RELIABLE)
            for m, topic in topics.items()
        }
        self.received = received

    def publish(self, modality: str, msg: Image) -> None:
        before = self.received(modality) if self.received is not None else 0
        self.pubs[modality].publish(msg)
        if self.received is not None:
            wait_until(lambda: self.received(modality) > before, 5.0, interval=0.002)

    def publish_set(
        self,
        stamp_s: float,
        frames: Mapping[str, np.ndarray],
        skip: Iterable[str] = (),
        frame_id: str = "camera",
        encodings: Mapping[str, str] | None = None,
    ) -> None:
        """Non-reference modalities first, so the RGB message completes the set at once."""
        encodings = {**MODALITY_ENCODINGS, **(encodings or {})}
        for m in sorted(frames, key=lambda m: m == "rgb"):
            if m not in skip:
                self.publish(m, image_msg(frames[m], encodings[m], stamp_s, frame_id))


class OutputCollector(Node):
    """Collects the node's outputs keyed by header stamp, plus /diagnostics and the latched class names."""

    KINDS = ("labels", "color", "confidence", "info")

    def __init__(
        self,
        context: Context,
        node_ns: str = f"/{NODE_NAME}",
        info_type: type | None = None,
        kinds: tuple[str, ...] = KINDS,
    ) -> None:
        super().__init__("memsam_test_collector", context=context)
        self.kinds = kinds
        if info_type is None:
            from memsam_msgs.msg import SegmentationInfo as info_type
        self.lock = threading.Lock()
        self.outputs: dict[int, dict[str, Any]] = {}
        self.order: list[int] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.class_names: list[str] = []
        self.node_ns = node_ns
        types = {"labels": Image, "color": Image, "confidence": Image, "info": info_type}
        self.subs = [
            self.create_subscription(types[k], f"{node_ns}/{k}", lambda msg, k=k: self._on_output(k, msg), RELIABLE)
            for k in kinds
        ]
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.subscribe_class_names()

    def subscribe_class_names(self) -> None:
        latched = QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
        )
        self.create_subscription(String, f"{self.node_ns}/class_names", self._on_class_names, latched)

    def _on_output(self, kind: str, msg: Any) -> None:
        if isinstance(msg, String):
            import json

            key = stamps.json_stamp_ns(json.loads(msg.data)["header"]["stamp"])
        else:
            key = stamp_key(msg.header.stamp)
        with self.lock:
            entry = self.outputs.setdefault(key, {})
            if not entry:
                self.order.append(key)
            entry[kind] = msg

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def _on_class_names(self, msg: String) -> None:
        import json

        with self.lock:
            self.class_names = json.loads(msg.data)

    def complete(self, key: int) -> dict[str, Any] | None:
        with self.lock:
            entry = self.outputs.get(key)
            return dict(entry) if entry and all(k in entry for k in self.kinds) else None

    def latest_status(self, name_suffix: str) -> Any:
        """Most recent DiagnosticStatus whose name ends with ``name_suffix``."""
        with self.lock:
            for array_msg in reversed(self.diagnostics):
                for status in array_msg.status:
                    if status.name.endswith(name_suffix):
                        return status
        return None


def interrupt(process: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """Ctrl-C a node process still running and wait for it (killed if it does not stop); its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def status_values(status: Any) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


class NodeHarness:
    """SegmentNode + publisher + collector spinning in one background MultiThreadedExecutor."""

    def __init__(
        self,
        params: Mapping[str, Any] | None = None,
        info_type: type | None = None,
        kinds: tuple[str, ...] = OutputCollector.KINDS,
    ) -> None:
        self.domain_id = next_domain_id()
        self.context = Context()
        rclpy.init(context=self.context, domain_id=self.domain_id)
        self.warnings: list[str] = []
        overrides = [Parameter(k, value=v) for k, v in {**TEST_PARAMS, **(params or {})}.items()]
        self.node = SegmentNode(context=self.context, parameter_overrides=overrides, warning_sink=self.warnings.append)
        self.node.start()  # configure + activate, as ros.autostart does in the process
        self.publisher = FramePublisher(
            self.context, self.node.topics, lambda m: self.node.health.topics[m].received, self.node.inputs.types
        )
        self.collector = OutputCollector(self.context, info_type=info_type, kinds=kinds)
        self.executor = MultiThreadedExecutor(num_threads=4, context=self.context)
        for n in (self.node, self.publisher, self.collector):
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        connected = wait_until(self._connected, 15.0)
        assert connected, "DDS discovery between the test nodes and the segment node did not complete"

    def _connected(self) -> bool:
        pubs_ok = all(p.get_subscription_count() > 0 for p in self.publisher.pubs.values())
        outs = [getattr(self.node.outputs, kind) for kind in self.collector.kinds]
        return pubs_ok and all(p.get_subscription_count() > 0 for p in outs)

    def send(self, stamp_s: float, frames: Mapping[str, np.ndarray], **kwargs: Any) -> int:
        self.publisher.publish_set(stamp_s, frames, **kwargs)
        return key_of(stamp_s)

    def wait_output(self, key: int, timeout: float = 10.0) -> dict[str, Any] | None:
        return wait_until(lambda: self.collector.complete(key), timeout)

    def roundtrip(self, stamp_s: float, frames: Mapping[str, np.ndarray], timeout: float = 10.0, **kw: Any):
        """Publish one set and wait for its four outputs (None on timeout)."""
        return self.wait_output(self.send(stamp_s, frames, **kw), timeout)

    def warnings_matching(self, *needles: str) -> list[str]:
        return [w for w in list(self.warnings) if all(n in w for n in needles)]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        for n in (self.publisher, self.collector, self.node):
            n.destroy_node()
        self.context.try_shutdown()
        self.thread.join(timeout=5.0)
