"""Every input message type the node accepts → the model's raw arrays; one path for the node and bag replay.

* rgb, ``ros.rgb_type``: ``image`` (``sensor_msgs/Image``) or ``compressed`` (``CompressedImage``, jpeg/png)
  → uint8 RGB;
* depth, ``ros.depth_type``: ``image`` (32FC1/16UC1) or ``compressed`` (compressedDepth png) → float32 metres;
* lidar, ``ros.lidar_type``: ``image`` (already in the RGB camera) or ``pointcloud`` (``PointCloud2`` in the
  LiDAR's frame) → float32 camera-Z metres, the nearest return per pixel;
* event, ``ros.event_type``: ``image``/``compressed`` event frames, ``event_packet``
  (``event_camera_msgs/EventPacket``, mono or evt3) or ``event_array`` (``dvs_msgs/EventArray``) → uint8 frame.

A point cloud is projected with the RGB camera's ``CameraInfo`` and the LiDAR→camera transform from
``/tf_static``/``/tf`` (or ``ros.lidar_extrinsics``) into the same sparse depth image training sees; event streams
are accumulated over ``ros.event_window_s`` up to the RGB stamp into the same event frame. :class:`InputConverter`
holds what those need; conversions only read message attributes, so rclpy and rosbags messages both work.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from memsam_core.config import MemSamConfig
from memsam_core.events import EventBatch, EventWindow
from memsam_core.lidar import CameraModel, Extrinsics, project_to_depth
from memsam_ros.inputs.codec import ImageDecodeError, check_modality, decode_modality
from memsam_ros.inputs.compressed import decode_compressed_depth, decode_compressed_image
from memsam_ros.inputs.event_codecs import decode_event_array, decode_event_packet
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
}
ACCEPTED: dict[str, tuple[str, ...]] = {
    "rgb": ("image", "compressed"),
    "depth": ("image", "compressed"),
    "lidar": ("image", "pointcloud"),
    "event": ("image", "compressed", "event_packet", "event_array"),
}
STREAMS = frozenset({"event_packet", "event_array"})
TF_STATIC_TOPIC, TF_TOPIC = "/tf_static", "/tf"
Decoder = Callable[[Any, int | None], np.ndarray]


def message_class(type_name: str) -> type:
    """``sensor_msgs/msg/Image`` → the rclpy class ``sensor_msgs.msg.Image`` (raises ImportError if the interface
    package is not importable; ``event_camera_msgs``/``dvs_msgs``/``tf2_msgs`` may come from this package)."""
    package, kind, name = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.{kind}"), name)
    except AttributeError:
        raise ImportError(f"{type_name} is not in {package}.{kind}", name=package) from None


def camera_model(msg: Any) -> CameraModel:
    """``sensor_msgs/CameraInfo`` → :class:`CameraModel`; raises ValueError for an unusable calibration."""
    return CameraModel(
        int(msg.width),
        int(msg.height),
        tuple(float(v) for v in msg.k),
        tuple(float(v) for v in msg.d),
        str(msg.distortion_model),
        str(msg.header.frame_id),
    )


class InputConverter:
    """Conversions of one node (or one bag replay) and the state they need. Thread-safe."""

    def __init__(self, config: MemSamConfig) -> None:
        ros = config.ros
        self.types = {m: ros.input_type(m) for m in config.model.modalities}
        for modality, kind in self.types.items():
            if kind not in ACCEPTED[modality]:
                raise ValueError(f"ros.{modality}_type {kind!r}: {modality} accepts {', '.join(ACCEPTED[modality])}")
        pose = ros.lidar_extrinsics
        self.fallback = Extrinsics.from_xyz_quaternion(tuple(pose[:3]), tuple(pose[3:])) if pose else None
        self.tree = TransformTree()
        self.camera: CameraModel | None = None
        self.camera_error = "no CameraInfo received yet"
        streams = [m for m, kind in self.types.items() if kind in STREAMS]
        self.events = {m: EventWindow(round(ros.event_window_s * 1e9)) for m in streams}
        self._lock = threading.Lock()

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

    def add_events(self, modality: str, msg: Any) -> EventBatch:
        """Decode an event message into the window and return it (raises ImageDecodeError)."""
        decode = decode_event_packet if self.types[modality] == "event_packet" else decode_event_array
        batch = decode(msg)
        with self._lock:
            self.events[modality].add(batch)
        return batch

    def receive(self, modality: str, msg: Any, arrival: float) -> tuple[Received, int | None]:
        """A deserialized input message → what waits in the synchroniser, and the event count of a stream
        message (None otherwise). Images have their layout checked now; event messages go into the window now
        and stand at their newest event (the stream is known up to there); the rest is decoded if a set uses it.
        Raises ImageDecodeError."""
        kind = self.types[modality]
        if kind == "image":
            check_modality(msg, modality)
            return received_from_message(modality, msg, arrival), None
        frame_id = str(msg.header.frame_id)
        if kind in STREAMS:
            batch = self.add_events(modality, msg)
            stamp = batch.last_ns if len(batch) else stamp_ns(msg.header)
            convert = self.decoder(modality)
            return Received(modality, stamp, frame_id, arrival, None, convert, cache=False), len(batch)
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
        with self._lock:
            frame = self.events[modality].frame(reference_ns)
        if frame is None:
            raise ImageDecodeError("no event packet received yet")
        return frame
