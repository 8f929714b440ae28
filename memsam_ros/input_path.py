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
from rclpy.clock import Clock, ClockType
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions, _declare_qos_parameters
from rclpy.serialization import deserialize_message
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, Image

from memsam_core.config import MemSamConfig
from memsam_ros.diagnostics import PipelineHealth
from memsam_ros.event_input import EventInputs, stream_qos
from memsam_ros.faults import FaultReporter, StartupError
from memsam_ros.info import BUILD_MSGS_HINT
from memsam_ros.inputs.cdr import CdrError
from memsam_ros.inputs.codec import ImageDecodeError, check_modality
from memsam_ros.inputs.converter import (
    AUTO,
    MESSAGE_TYPES,
    PACKET_STREAMS,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    InputConverter,
    conflict_warning,
    message_class,
    resolve_kind,
)
from memsam_ros.inputs.received import Received, received_from_cdr, received_from_raw
from memsam_ros.inputs.stamps import ns_to_s
from memsam_ros.qos import input_qos, tf_qos, tf_static_qos
from memsam_ros.sync import BACKJUMP_RESET_S, ModalitySynchronizer, SyncedSet

FORWARD_JUMP_TOLERANCE_S = 1.0  # stamp advancing this much more than wall time = jump forward
GRAPH_POLL_S = 0.5  # how often an input of type auto without a publisher looks for one
STEADY = Clock(clock_type=ClockType.STEADY_TIME)
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
        self._graph_timer: Any = None
        self._auto = set(converter.unresolved)  # inputs typed from the graph at every activation
        self._subscribed: set[str] = set()  # modalities (and "tf") subscribed in this activation
        self._last_stamp: dict[str, tuple[float, float]] = {}  # modality -> (stamp, arrival)
        self._camera_info: CameraInfo | None = None
        self._camera_info_lock = threading.Lock()
        self._event_inputs = EventInputs(  # packet streams, drained
            converter, health, faults, self._accept, lambda: self.sync.slop_s
        )

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
        """Subscribe every input whose type is known (raises :class:`StartupError` naming the topic); inputs of type
        ``auto`` are subscribed once a publisher shows their type. The graph is looked at every ``GRAPH_POLL_S``
        while active, so publishers that appear later are judged too (discovery takes its time)."""
        if self._subscriptions:
            return
        self.sync.clear()
        self.health.restart(time.monotonic())
        self._last_stamp.clear()
        for m in self._auto:
            self.converter.set_type(m, AUTO)  # resolved afresh from the publishers of this activation
        self._subscribed.clear()
        self._add(CameraInfo, self.camera_info_topic, self._on_camera_info, raw=False)
        for m in self.topics:
            if self.converter.types[m] == AUTO:
                self._resolve(m)
            else:
                self._check_publishers(m)
            if self.converter.types[m] != AUTO:
                self._subscribe_modality(m)
            else:  # a bad qos_overrides value for it is a start-up error now, not when its publisher appears
                self._check_qos_overrides(self.topics[m])
        # steady timers: arrivals are timed on the monotonic clock, so with use_sim_time a paused or absent /clock
        # must not stop the synchroniser's silence decisions or the search for publishers
        poll_period = max(0.005, min(0.02, self.config.sync.max_wait_s / 4))
        self._poll_timer = self.node.create_timer(poll_period, self._on_poll, self._group, clock=STEADY)
        self._graph_timer = self.node.create_timer(GRAPH_POLL_S, self._on_graph_poll, self._group, clock=STEADY)

    def _subscribe_modality(self, modality: str) -> None:
        topic = self.topics[modality]
        if self.converter.types[modality] == "image":
            self._add(Image, topic, self._timed(modality, lambda raw, m=modality: self._on_image(m, raw)))
        elif self.converter.types[modality] in PACKET_STREAMS:  # taken in batches, never one callback per packet
            subscription = self._add(
                self.message_class(modality), topic, _ignore, profile=self._stream_qos, group=self._event_inputs.group
            )
            self._event_inputs.watch(modality, subscription)
        else:
            self._add(self.message_class(modality), topic, self._timed(modality, self._raw_callback(modality)))
        self._subscribed.add(modality)
        if self.converter.needs_geometry and "tf" not in self._subscribed:  # LiDAR -> camera transform
            tf_type = self.message_class("tf")
            self._add(tf_type, TF_STATIC_TOPIC, self.converter.on_tf, raw=False, profile=tf_static_qos)
            self._add(tf_type, TF_TOPIC, self.converter.on_tf, raw=False, profile=tf_qos)
            self._subscribed.add("tf")

    def _add(
        self,
        msg_type: type,
        topic: str,
        callback: Callable[[Any], None],
        raw: bool = True,
        profile: Callable[[], QoSProfile] | None = None,
        group: Any = None,
    ) -> Any:
        """One subscription; ``raw``: the callback gets the serialized bytes (only the header is read there)."""
        try:  # a fresh profile each: rclpy applies qos_overrides.<topic>.* to the profile object in place
            subscription = self.node.create_subscription(
                msg_type,
                topic,
                callback,
                (profile or self._input_qos)(),
                callback_group=group or self._group,
                qos_overriding_options=QoSOverridingOptions.with_default_policies(),
                raw=raw,
            )
        except Exception as err:
            raise StartupError(f"{topic}: {err} (qos_overrides.{topic}.subscription.*?)") from None
        self._subscriptions.append(subscription)
        return subscription

    def _check_qos_overrides(self, topic: str) -> None:
        """Declare and apply ``qos_overrides.<topic>.subscription.*`` as ``create_subscription`` will (rclpy's own
        helper; it accepts parameters already declared), so a value it cannot parse fails activation."""
        try:
            _declare_qos_parameters(
                Subscription, self.node, topic, self._input_qos(), QoSOverridingOptions.with_default_policies()
            )
        except Exception as err:
            raise StartupError(f"{topic}: {err} (qos_overrides.{topic}.subscription.*?)") from None

    # ------------------------------------------------------------------ input types from the graph
    def publisher_types(self, topic: str) -> list[str]:
        """The type of each publisher on ``topic`` (what ``ros2 topic info -v`` lists)."""
        return [str(info.topic_type) for info in self.node.get_publishers_info_by_topic(topic)]

    def _resolve(self, modality: str) -> None:
        """An ``auto`` input's type from its topic's publishers; a conflict or a refused type is one warning."""
        topic = self.topics[modality]
        offered = self.publisher_types(topic)
        kind, problem = resolve_kind(modality, topic, offered)
        if problem is not None:
            self.faults.once(("type", modality, kind is not None, frozenset(offered)), problem)
        if kind is None:
            self.faults.once(
                ("type-wait", modality, topic),
                f"{topic} [{modality}]: no publisher of a type {modality} accepts yet; subscribing when one appears "
                f"(ros.{modality}_type: auto)",
            )
            return
        self.converter.set_type(modality, kind)
        self.node.get_logger().info(f"{topic} [{modality}]: {MESSAGE_TYPES[kind]} (from its publishers)")

    def _check_publishers(self, modality: str) -> None:
        """A subscribed input's publishers, seen again: for a type taken from the graph, publishers of another type
        beside it; for an explicit type, publishers that all send another (it would receive nothing). One warning
        each."""
        topic, kind = self.topics[modality], self.converter.types[modality]
        offered = self.publisher_types(topic)
        if modality in self._auto:
            if (problem := conflict_warning(modality, topic, offered, kind)) is not None:
                self.faults.once(("type", modality, True, frozenset(offered)), problem)
        elif offered and MESSAGE_TYPES[kind] not in offered:
            names = ", ".join(sorted(set(offered)))
            self.faults.once(
                ("type-mismatch", modality, kind, frozenset(offered)),
                f"{topic} [{modality}] is published as {names} but ros.{modality}_type is {kind!r} "
                f"({MESSAGE_TYPES[kind]}): nothing will be received; set ros.{modality}_type: auto",
            )

    def _on_graph_poll(self) -> None:
        for modality in self.topics:
            if self.converter.types[modality] != AUTO:
                self._check_publishers(modality)
                continue
            self._resolve(modality)
            if self.converter.types[modality] != AUTO:
                try:
                    self._subscribe_modality(modality)
                except StartupError as err:
                    self.faults.warn(modality, "subscribe", str(err))

    def unsubscribe(self) -> None:
        self._event_inputs.clear()
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        for timer in (self._poll_timer, self._graph_timer):
            if timer is not None:
                self.node.destroy_timer(timer)
        self._poll_timer = self._graph_timer = None
        self.sync.clear()

    def _input_qos(self) -> QoSProfile:
        return input_qos(self.config.ros)

    def _stream_qos(self) -> QoSProfile:
        return stream_qos(self.config.ros)

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
        """``dvs_msgs/EventArray``: every event is its own message, so it is decoded here (an empty one is normal)."""
        now = time.monotonic()
        try:
            received, _ = self.converter.receive(modality, deserialize_message(raw, msg_type), now)
        except Exception as err:  # a malformed packet is a warning, never a crash
            self.health.message(modality, now)
            self.faults.warn(modality, "decode", f"cannot decode the event message: {err}", decode_error=True)
            return
        self._accept(modality, received, now)

    def _timed(self, modality: str, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """``callback`` with its executor time recorded for ``/diagnostics`` (``executor_us_p50``/``_p99``)."""

        def timed(message: Any) -> None:
            started, drained = time.perf_counter(), self._event_inputs.drain_s
            callback(message)
            own = time.perf_counter() - started - (self._event_inputs.drain_s - drained)  # an RGB frame drains events
            self.health.executor_time(modality, own)

        return timed

    def _accept(self, modality: str, received: Received, now: float) -> None:
        """A readable input message: health, stamp checks, synchroniser."""
        if modality == self.reference:
            self._event_inputs.drain()  # the packets that came before this frame may complete its set at once
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
        elif stamp < last_stamp:  # equal stamps are in order (an event stream's packets without a new time word)
            self.faults.warn(
                modality,
                "order",
                f"stamp out of order ({last_stamp - stamp:.3f} s before the previous one); a set older than one "
                "already published is dropped",
            )
        elif stamp - last_stamp > (now - last_arrival) + FORWARD_JUMP_TOLERANCE_S:
            self.faults.warn(modality, "forwardjump", f"stamp jumped forward by {stamp - last_stamp:.3f} s")

    def _on_poll(self) -> None:
        self._event_inputs.drain()
        self._submit(self.sync.poll(time.monotonic()))


def _ignore(_: Any) -> None:
    """The callback of a subscription the executor never runs (:class:`~memsam_ros.event_input.EventInputs`)."""
