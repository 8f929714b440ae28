"""The node's input side, on the executor thread: subscriptions, stamp checks and the synchroniser.

Callbacks read only what the synchroniser needs (the header of the serialized message; Image layouts are
checked from the bytes too) and never touch a pixel; whatever a set uses is decoded later, on the inference
thread. Synchronised sets go to ``submit`` (the keep-newest worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, Image

from memsam_core.config import MemSamConfig
from memsam_ros.diagnostics import PipelineHealth
from memsam_ros.faults import FaultReporter, StartupError
from memsam_ros.info import BUILD_MSGS_HINT
from memsam_ros.inputs.cdr import CdrError
from memsam_ros.inputs.codec import ImageDecodeError, check_modality
from memsam_ros.inputs.converter import MESSAGE_TYPES, TF_STATIC_TOPIC, TF_TOPIC, InputConverter, message_class
from memsam_ros.inputs.received import Received, received_from_cdr, received_from_raw
from memsam_ros.inputs.stamps import ns_to_s
from memsam_ros.qos import input_qos, tf_qos, tf_static_qos
from memsam_ros.sync import BACKJUMP_RESET_S, ModalitySynchronizer, SyncedSet

FORWARD_JUMP_TOLERANCE_S = 1.0  # stamp advancing this much more than wall time = jump forward
QOS_OVERRIDES = "qos_overrides."


class InputPath:
    """Subscribes the configured inputs on ``node`` and feeds :class:`ModalitySynchronizer` ``sync``."""

    def __init__(
        self,
        node: Any,
        config: MemSamConfig,
        topics: dict[str, str],
        camera_info_topic: str,
        converter: InputConverter,
        sync: ModalitySynchronizer,
        health: PipelineHealth,
        faults: FaultReporter,
        submit: Callable[[list[SyncedSet]], None],
        callback_group: Any,
    ) -> None:
        self.node, self.config, self.topics = node, config, topics
        self.camera_info_topic = camera_info_topic
        self.converter, self.sync, self.health, self.faults = converter, sync, health, faults
        self.reference = config.sync.reference
        self._submit = submit
        self._group = callback_group
        self._subscriptions: list[Any] = []
        self._poll_timer: Any = None
        self._last_stamp: dict[str, tuple[float, float]] = {}  # modality -> (stamp, arrival)
        self._camera_info: CameraInfo | None = None
        self._camera_info_lock = threading.Lock()

    @property
    def camera_info(self) -> CameraInfo | None:
        """The reference camera's latest CameraInfo (None before the first)."""
        with self._camera_info_lock:
            return self._camera_info

    @property
    def subscribed(self) -> bool:
        return bool(self._subscriptions)

    # ------------------------------------------------------------------ subscriptions
    def subscribe(self) -> None:
        """Subscribe every input (raises :class:`StartupError` naming the topic)."""
        if self._subscriptions:
            return
        self.sync.clear()
        self.health.restart(time.monotonic())
        self._last_stamp.clear()
        qos = self._input_qos
        # (type, topic, callback, raw, profile factory); raw: the callback gets the serialized bytes
        inputs: list[tuple[type, str, Callable[[Any], None], bool, Callable[[], QoSProfile]]] = []
        for m, topic in self.topics.items():
            if self.converter.types[m] == "image":
                inputs.append((Image, topic, lambda raw, m=m: self._on_image(m, raw), True, qos))
            else:
                inputs.append((self.message_class(m), topic, self._raw_callback(m), True, qos))
        inputs.append((CameraInfo, self.camera_info_topic, self._on_camera_info, False, qos))
        if self.converter.needs_geometry:  # LiDAR -> camera transform
            tf_type = self.message_class("tf")
            inputs.append((tf_type, TF_STATIC_TOPIC, self.converter.on_tf, False, tf_static_qos))
            inputs.append((tf_type, TF_TOPIC, self.converter.on_tf, False, tf_qos))
        for msg_type, topic, callback, raw, profile in inputs:
            try:  # a fresh profile each: rclpy applies qos_overrides.<topic>.* to the profile object in place
                subscription = self.node.create_subscription(
                    msg_type,
                    topic,
                    callback,
                    profile(),
                    callback_group=self._group,
                    qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                    raw=raw,
                )
            except Exception as err:
                raise StartupError(f"{topic}: {err} (qos_overrides.{topic}.subscription.*?)") from None
            self._subscriptions.append(subscription)
        poll_period = max(0.005, min(0.02, self.config.sync.max_wait_s / 4))
        self._poll_timer = self.node.create_timer(poll_period, self._on_poll, callback_group=self._group)

    def unsubscribe(self) -> None:
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        if self._poll_timer is not None:
            self.node.destroy_timer(self._poll_timer)
            self._poll_timer = None
        self.sync.clear()

    def _input_qos(self) -> QoSProfile:
        return input_qos(self.config.ros)

    def message_class(self, modality: str) -> type:
        """The rclpy class of ``modality``'s configured input type ("tf": TFMessage)."""
        kind = "tf" if modality == "tf" else self.converter.types[modality]
        try:
            return message_class("tf2_msgs/msg/TFMessage" if kind == "tf" else MESSAGE_TYPES[kind])
        except ImportError as err:
            raise StartupError(
                f"ros.{modality}_type {kind!r} needs {err.name}, which is not importable: build the interfaces "
                f"(`{BUILD_MSGS_HINT}` off-ROS, colcon build on a ROS install)"
            ) from None

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, modality: str, raw: bytes) -> None:
        """Header and layout only (no pixel is touched): a bad message never takes a good one's place."""
        now = time.monotonic()
        try:
            received = received_from_cdr(modality, raw, now)
        except CdrError as err:
            self.health.message(modality, now)
            self.faults.warn(modality, "decode", f"cannot read the message: {err}", decode_error=True)
            return
        try:
            check_modality(received.image, modality)
        except ImageDecodeError as err:
            self.health.message(modality, now, received.frame_id)
            self.faults.warn(modality, "decode", f"cannot decode image: {err}", decode_error=True)
            return
        self._accept(modality, received, now)

    def _raw_callback(self, modality: str) -> Callable[[bytes], None]:
        """The subscription callback of a non-Image input: the header now, the rest when a set uses it (event
        streams: into the event window now, since every packet may be in some set's window)."""
        msg_type = self.message_class(modality)
        if self.converter.is_stream(modality):
            return lambda raw: self._on_events(modality, raw, msg_type)
        convert = self.converter.decoder(modality)

        def decode(raw: bytes, reference_ns: int | None) -> np.ndarray:
            return convert(deserialize_message(raw, msg_type), reference_ns)

        def on_message(raw: bytes) -> None:
            now = time.monotonic()
            try:
                received = received_from_raw(modality, raw, now, decode)
            except CdrError as err:
                self.health.message(modality, now)
                self.faults.warn(modality, "decode", f"cannot read the message: {err}", decode_error=True)
                return
            self._accept(modality, received, now)

        return on_message

    def _on_events(self, modality: str, raw: bytes, msg_type: type) -> None:
        now = time.monotonic()
        try:
            received, count = self.converter.receive(modality, deserialize_message(raw, msg_type), now)
        except Exception as err:  # a malformed packet is a warning, never a crash
            self.health.message(modality, now)
            self.faults.warn(modality, "decode", f"cannot decode the event message: {err}", decode_error=True)
            return
        if count == 0:
            self.faults.warn(modality, "empty", "event message without events (nothing added to the window)")
        self._accept(modality, received, now)

    def _accept(self, modality: str, received: Received, now: float) -> None:
        """A readable input message: health, stamp checks, synchroniser."""
        self.health.message(modality, now, received.frame_id)
        stamp = ns_to_s(received.stamp_ns)
        self._check_stamp(modality, stamp, now)
        resets = self.sync.resets
        sets = self.sync.add(modality, stamp, received, now)
        if self.sync.resets != resets:
            self.health.sync_reset(now)
        self._submit(sets)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._camera_info_lock:
            self._camera_info = msg
        if self.converter.needs_geometry and (problem := self.converter.on_camera_info(msg)):
            self.faults.warn("lidar", "camera_info", f"{problem} ({self.camera_info_topic}): LiDAR cannot be projected")

    def _check_stamp(self, modality: str, stamp: float, now: float) -> None:
        previous = self._last_stamp.get(modality)
        self._last_stamp[modality] = (stamp, now)
        if previous is None:
            return
        last_stamp, last_arrival = previous
        if stamp < last_stamp - BACKJUMP_RESET_S:
            action = "synchroniser reset" if modality == self.reference else "older messages discarded"
            self.faults.warn(
                modality, "backjump", f"stamp jumped back by {last_stamp - stamp:.3f} s (bag loop?): {action}"
            )
        elif stamp <= last_stamp:
            self.faults.warn(
                modality,
                "order",
                f"stamp out of order ({last_stamp - stamp:.3f} s before the previous one); a set older than one "
                "already published is dropped",
            )
        elif stamp - last_stamp > (now - last_arrival) + FORWARD_JUMP_TOLERANCE_S:
            self.faults.warn(modality, "forwardjump", f"stamp jumped forward by {stamp - last_stamp:.3f} s")

    def _on_poll(self) -> None:
        self._submit(self.sync.poll(time.monotonic()))
