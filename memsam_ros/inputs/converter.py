"""Every input message type the node accepts → the model's raw arrays; one path for the node and bag replay.

* rgb, ``ros.rgb_type``: ``image`` (``sensor_msgs/Image``) or ``compressed`` (``CompressedImage``, jpeg/png)
  → uint8 RGB;
* depth, ``ros.depth_type``: ``image`` (32FC1/16UC1) or ``compressed`` (compressedDepth png) → float32 metres;
* lidar, ``ros.lidar_type``: ``image`` (already in the RGB camera) or ``pointcloud`` (``PointCloud2`` in the
  LiDAR's frame) → float32 camera-Z metres, the nearest return per pixel;
* event, ``ros.event_type``: ``image``/``compressed`` event frames, ``event_packet``
  (``event_camera_msgs/EventPacket``, mono or evt3), ``event_array_msgs`` (``event_array_msgs/EventArray``, its name
  before the rename, same fields) or ``event_array`` (``dvs_msgs/EventArray``) → uint8 frame
  (:class:`~memsam_ros.inputs.event_stream.EventStream`: one decoder state and clock per topic).

A point cloud is projected with the RGB camera's ``CameraInfo`` and the LiDAR→camera transform from
``/tf_static``/``/tf`` (or ``ros.lidar_extrinsics``) into the same sparse depth image training sees; event streams
are accumulated over ``ros.event_window_s`` up to the RGB stamp into the same event frame. :class:`InputConverter`
holds what those need; conversions only read message attributes, so rclpy and rosbags messages both work.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from memsam_core.config import MemSamConfig
from memsam_core.lidar import CameraModel, Extrinsics, project_to_depth
from memsam_ros.inputs.camera import camera_model
from memsam_ros.inputs.cdr import EventPacketView
from memsam_ros.inputs.codec import ImageDecodeError, check_modality, decode_modality
from memsam_ros.inputs.compressed import decode_compressed_depth, decode_compressed_image
from memsam_ros.inputs.event_codecs import decode_event_array
from memsam_ros.inputs.event_stream import Arrival, EventStream, packet_view
from memsam_ros.inputs.pointcloud import pointcloud2_to_xyz
from memsam_ros.inputs.received import Received, received_from_message
from memsam_ros.inputs.stamps import stamp_ns
from memsam_ros.inputs.transforms import TransformTree

MESSAGE_TYPES: dict[str, str] = {
    "image": "sensor_msgs/msg/Image",
    "compressed": "sensor_msgs/msg/CompressedImage",
    "pointcloud": "sensor_msgs/msg/PointCloud2",
    "event_packet": "event_camera_msgs/msg/EventPacket",
    "event_array": "dvs_msgs/msg/EventArray",
    "event_array_msgs": "event_array_msgs/msg/EventArray",
}
ACCEPTED: dict[str, tuple[str, ...]] = {
    "rgb": ("image", "compressed"),
    "depth": ("image", "compressed"),
    "lidar": ("image", "pointcloud"),
    "event": ("image", "compressed", "event_packet", "event_array", "event_array_msgs"),
}
STREAMS = frozenset({"event_packet", "event_array", "event_array_msgs"})
PACKET_STREAMS = frozenset({"event_packet", "event_array_msgs"})
"""Streams of compact packets: read from their CDR bytes on arrival, decoded in one pass when a set needs them."""
AUTO = "auto"
"""An input type taken from the publishers on the graph (the node) or the bag's topic list (replay)."""
TF_STATIC_TOPIC, TF_TOPIC = "/tf_static", "/tf"
Decoder = Callable[[Any, int | None], np.ndarray]


def kinds_of(type_names: Iterable[str], modality: str) -> list[str]:
    """The accepted input kinds among ROS type names (``sensor_msgs/msg/CompressedImage`` → ``compressed``)."""
    kind_of = {msgtype: kind for kind, msgtype in MESSAGE_TYPES.items()}
    found = {kind_of.get(name) for name in type_names}
    return [kind for kind in ACCEPTED[modality] if kind in found]


def resolve_kind(modality: str, topic: str, publisher_types: Sequence[str]) -> tuple[str | None, str | None]:
    """``(kind, warning)`` for an ``auto`` input from the types of the publishers on ``topic`` (one entry per
    publisher), as ``ros2 topic echo`` finds a topic's type. No publisher yet: ``(None, None)``; types the modality
    does not accept: ``(None, why)``; publishers of different types: the type most of them publish (ties: the order
    of :data:`ACCEPTED`), with :func:`conflict_warning`."""
    accepted = kinds_of(publisher_types, modality)
    if not accepted:
        if not publisher_types:
            return None, None
        offered = ", ".join(sorted(set(publisher_types)))
        allowed = ", ".join(MESSAGE_TYPES[k] for k in ACCEPTED[modality])
        return None, f"{topic} [{modality}] is published as {offered}, which {modality} does not accept ({allowed})"
    counts = {kind: sum(MESSAGE_TYPES[kind] == name for name in publisher_types) for kind in accepted}
    chosen = max(accepted, key=lambda kind: counts[kind])  # max keeps the first of equal counts
    return chosen, conflict_warning(modality, topic, publisher_types, chosen)


def conflict_warning(modality: str, topic: str, publisher_types: Sequence[str], subscribed: str) -> str | None:
    """The warning for publishers of different types on one input topic (None when they agree)."""
    if len(set(publisher_types)) < 2:
        return None
    offered = ", ".join(f"{name} ({publisher_types.count(name)})" for name in sorted(set(publisher_types)))
    return (
        f"{topic} [{modality}] has publishers of different types: {offered}; subscribing {MESSAGE_TYPES[subscribed]} "
        f"(set ros.{modality}_type to choose)"
    )


def message_class(type_name: str) -> type:
    """``sensor_msgs/msg/Image`` → the rclpy class ``sensor_msgs.msg.Image`` (raises ImportError if the interface
    package is not importable; ``event_camera_msgs``/``dvs_msgs``/``tf2_msgs`` may come from this package)."""
    package, kind, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except AttributeError:
        raise ImportError(f"{type_name} is not in {package}.{kind}", name=package) from None


class InputConverter:
    """Conversions of one node (or one bag replay) and the state they need. Thread-safe."""

    def __init__(self, config: MemSamConfig) -> None:
        ros = config.ros
        self._window_ns = round(ros.event_window_s * 1e9)
        pose = ros.lidar_extrinsics
        self.fallback = Extrinsics.from_xyz_quaternion(tuple(pose[:3]), tuple(pose[3:])) if pose else None
        self.tree = TransformTree()
        self.camera: CameraModel | None = None
        self.camera_error = "no CameraInfo received yet"
        self.events: dict[str, EventStream] = {}
        self._lock = threading.Lock()
        self.types: dict[str, str] = {}
        for modality in config.model.modalities:
            self.set_type(modality, ros.input_type(modality))

    def set_type(self, modality: str, kind: str) -> None:
        """Declare ``modality``'s message type (``auto``: not known yet, resolved from the graph or a bag)."""
        if kind != AUTO and kind not in ACCEPTED[modality]:
            raise ValueError(f"ros.{modality}_type {kind!r}: {modality} accepts {', '.join(ACCEPTED[modality])}")
        self.types[modality] = kind
        if kind in STREAMS and modality not in self.events:
            self.events[modality] = EventStream(self._window_ns)

    @property
    def unresolved(self) -> list[str]:
        """Modalities whose type is still ``auto``."""
        return [m for m, kind in self.types.items() if kind == AUTO]

    @property
    def needs_geometry(self) -> bool:
        """Whether camera_info and tf are needed (a point cloud to project)."""
        return self.types.get("lidar") == "pointcloud"

    def is_stream(self, modality: str) -> bool:
        return modality in self.events

    # ------------------------------------------------------------------ state
    def on_camera_info(self, msg: Any) -> str | None:
        """Keep the RGB calibration; returns why it is unusable, or None."""
        try:
            camera = camera_model(msg)
        except ValueError as err:
            with self._lock:
                self.camera_error = f"CameraInfo unusable: {err}"
            return self.camera_error
        with self._lock:
            if camera != self.camera:  # drivers repeat the same calibration with every image: keep its fold radius
                self.camera = camera
        return None

    def on_tf(self, msg: Any) -> None:
        with self._lock:
            self.tree.add_message(msg)

    def add_packets(self, modality: str, packets: list[EventPacketView]) -> list[Arrival]:
        """Consecutive packets of an event stream, read but not decoded (an undecodable one: its ``error``)."""
        return self.events[modality].add_packets(packets)

    def stream_received(self, modality: str, covered_ns: int, frame_id: str, arrival: float) -> Received:
        """What an event stream puts in the synchroniser: it stands at ``covered_ns`` (complete up to there) and
        renders the window ending at the set's stamp."""
        return Received(modality, covered_ns, frame_id, arrival, None, self.decoder(modality), cache=False)

    def receive(self, modality: str, msg: Any, arrival: float) -> tuple[Received, str | None]:
        """A deserialized input message → what waits in the synchroniser, and why an event stream was reset at it
        (None otherwise). Images have their layout checked now; event packets are read now (their events are
        decoded when a set needs the window); the rest is decoded if a set uses it. Raises ImageDecodeError."""
        kind = self.types[modality]
        if kind == "image":
            check_modality(msg, modality)
            return received_from_message(modality, msg, arrival), None
        frame_id = str(msg.header.frame_id)
        if kind in PACKET_STREAMS:
            (packet,) = self.add_packets(modality, [packet_view(msg)])
            if packet.error is not None:
                raise ImageDecodeError(packet.error)
            if packet.covered_ns is None:
                raise ImageDecodeError("no sensor time yet (an EVT3 stream starts with a TIME_HIGH and a TIME_LOW)")
            return self.stream_received(modality, packet.covered_ns, frame_id, arrival), packet.reset
        if kind in STREAMS:  # dvs_msgs/EventArray: every event has its own ROS stamp
            batch = decode_event_array(msg)
            self.events[modality].add_batch(batch)
            stamp = batch.last_ns if len(batch) else stamp_ns(msg.header)
            return self.stream_received(modality, stamp, frame_id, arrival), None
        return Received(modality, stamp_ns(msg.header), frame_id, arrival, msg, self.decoder(modality)), None

    # ------------------------------------------------------------------ conversions
    def decoder(self, modality: str) -> Decoder:
        """``(message, reference stamp ns) -> raw array`` for ``modality``'s configured type."""
        kind = self.types[modality]
        if kind == "image":
            return lambda msg, _: decode_modality(msg, modality, copy=False)
        if kind == "compressed":
            if modality == "depth":
                return lambda msg, _: decode_compressed_depth(msg)
            return lambda msg, _: decode_compressed_image(msg, modality)
        if kind == "pointcloud":
            return lambda msg, _: self.project(msg)
        return lambda _, reference_ns: self.event_frame(modality, reference_ns)

    def extrinsics(self, lidar_frame: str, camera_frame: str) -> Extrinsics:
        with self._lock:
            found = self.tree.lookup(camera_frame, lidar_frame)
        if found is not None:
            return found
        if self.fallback is not None:
            return self.fallback
        raise ImageDecodeError(
            f"no transform from {lidar_frame!r} to the camera frame {camera_frame!r} on /tf_static or /tf, "
            "and ros.lidar_extrinsics is empty"
        )

    def project(self, msg: Any) -> np.ndarray:
        """A PointCloud2 → the sparse depth image in the RGB camera (raises ImageDecodeError with the reason)."""
        with self._lock:
            camera, reason = self.camera, self.camera_error
        if camera is None:
            raise ImageDecodeError(f"{reason}: cannot project the point cloud into the RGB camera")
        points = pointcloud2_to_xyz(msg)
        return project_to_depth(points, self.extrinsics(str(msg.header.frame_id), camera.frame_id), camera)

    def event_frame(self, modality: str, reference_ns: int | None) -> np.ndarray:
        if reference_ns is None:
            raise ImageDecodeError("an event stream needs the set's reference stamp")
        frame = self.events[modality].frame(reference_ns)  # the stream has its own locks
        if frame is None:
            raise ImageDecodeError("no event packet received yet")
        return frame
