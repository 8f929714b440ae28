"""A synthetic scene as a real rig publishes it: compressed RGB, compressedDepth, a PointCloud2 in the LiDAR's own
frame, an event stream, the RGB ``camera_info`` and the static LiDAR → camera transform.

Messages are built through ``make(type_name, **fields)``, so the same fields become rosbags messages (bags) or
rclpy messages (live tests): :func:`rosbags_factory`, :func:`rclpy_factory`. The conversions are the product's own
inverses (``memsam_core.lidar.unproject_depth``, ``memsam_core.events.frame_to_events``, the encoders of
``memsam_ros.inputs.compressed``/``event_msgs``), so a rig recording of a scene decodes back to the scene's frames: the
LiDAR exactly, events exactly, RGB and depth up to JPEG and inverse-depth quantisation.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from memsam_core.events import EventBatch, frame_to_events
from memsam_core.lidar import CameraModel, Extrinsics, to_frame, unproject_depth
from memsam_ros.inputs.compressed import encode_compressed_depth
from memsam_ros.inputs.event_codecs import Evt3Encoder, encode_mono
from memsam_ros.inputs.stamps import split_ns

Make = Callable[..., Any]
CAMERA_FRAME = "camera_rgb"
LIDAR_FRAME = "lidar_top"
RIG_TOPICS = {
    "rgb": "/rgb/image/compressed",
    "depth": "/depth/image/compressedDepth",
    "lidar": "/lidar/points",
    "event": "/event/events",
}
RIG_TYPES = {"rgb": "compressed", "depth": "compressed", "lidar": "pointcloud", "event": "event_packet"}
CAMERA_INFO_TOPIC = "/rgb/camera_info"
EVENT_PACKETS_PER_WINDOW = 5  # a driver publishes its stream in short packets
JPEG_QUALITY = 95
DEPTH_MAX_M = 100.0  # compressedDepth quantisation range (the transport's default is 10 m)
# the LiDAR sits 0.3 m behind and 0.2 m above the camera, yawed 2 degrees; x forward, y left, z up
_AXES = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # LiDAR axes → optical axes
_YAW = np.radians(2.0)
LIDAR_TO_CAMERA = Extrinsics(
    _AXES @ np.array([[np.cos(_YAW), -np.sin(_YAW), 0.0], [np.sin(_YAW), np.cos(_YAW), 0.0], [0.0, 0.0, 1.0]]),
    np.array([0.02, 0.2, -0.3]),
)


def _quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """Rotation matrix → unit quaternion (x, y, z, w)."""
    w = np.sqrt(max(0.0, 1.0 + np.trace(rotation))) / 2.0
    x = np.copysign(np.sqrt(max(0.0, 1.0 + rotation[0, 0] - rotation[1, 1] - rotation[2, 2])) / 2.0,
                    rotation[2, 1] - rotation[1, 2])  # fmt: skip
    y = np.copysign(np.sqrt(max(0.0, 1.0 - rotation[0, 0] + rotation[1, 1] - rotation[2, 2])) / 2.0,
                    rotation[0, 2] - rotation[2, 0])  # fmt: skip
    z = np.copysign(np.sqrt(max(0.0, 1.0 - rotation[0, 0] - rotation[1, 1] + rotation[2, 2])) / 2.0,
                    rotation[1, 0] - rotation[0, 1])  # fmt: skip
    return float(x), float(y), float(z), float(w)


def _make_header(make: Make, stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = split_ns(stamp_ns)
    return make("std_msgs/msg/Header", stamp=make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec),
                frame_id=frame_id)  # fmt: skip


def camera_info(make: Make, intrinsics: np.ndarray, height: int, width: int, stamp_ns: int) -> Any:
    k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    projection = np.zeros((3, 4))
    projection[:, :3] = k
    return make(
        "sensor_msgs/msg/CameraInfo",
        header=_make_header(make, stamp_ns, CAMERA_FRAME),
        height=height,
        width=width,
        distortion_model="plumb_bob",
        d=np.zeros(5),
        k=k.reshape(-1),
        r=np.eye(3).reshape(-1),
        p=projection.reshape(-1),
        binning_x=0,
        binning_y=0,
        roi=make("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def static_transform(make: Make, stamp_ns: int) -> Any:
    """``/tf_static``: the LiDAR's pose in the camera's optical frame (parent camera, child LiDAR)."""
    x, y, z, w = _quaternion(LIDAR_TO_CAMERA.rotation)
    tx, ty, tz = (float(v) for v in LIDAR_TO_CAMERA.translation)
    transform = make(
        "geometry_msgs/msg/Transform",
        translation=make("geometry_msgs/msg/Vector3", x=tx, y=ty, z=tz),
        rotation=make("geometry_msgs/msg/Quaternion", x=x, y=y, z=z, w=w),
    )
    stamped = make(
        "geometry_msgs/msg/TransformStamped",
        header=_make_header(make, stamp_ns, CAMERA_FRAME),
        child_frame_id=LIDAR_FRAME,
        transform=transform,
    )
    return make("tf2_msgs/msg/TFMessage", transforms=[stamped])


def compressed_rgb(make: Make, rgb: np.ndarray, stamp_ns: int) -> Any:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError(f"cv2.imencode failed on an RGB image of shape {rgb.shape}")
    return make("sensor_msgs/msg/CompressedImage", header=_make_header(make, stamp_ns, CAMERA_FRAME),
                format="rgb8; jpeg compressed bgr8", data=jpeg.reshape(-1))  # fmt: skip


def compressed_depth(make: Make, metres: np.ndarray, stamp_ns: int) -> Any:
    fmt, data = encode_compressed_depth(metres, "32FC1", depth_max=DEPTH_MAX_M)
    return make("sensor_msgs/msg/CompressedImage", header=_make_header(make, stamp_ns, CAMERA_FRAME), format=fmt,
                data=np.frombuffer(data, np.uint8))  # fmt: skip


def point_cloud(make: Make, lidar: np.ndarray, intrinsics: np.ndarray, stamp_ns: int) -> Any:
    """The scene's LiDAR returns as x, y, z, intensity (16-byte points) in the LiDAR frame."""
    height, width = lidar.shape
    camera = CameraModel(width, height, tuple(np.asarray(intrinsics, np.float64).reshape(-1)))
    points = to_frame(unproject_depth(lidar, camera), LIDAR_TO_CAMERA)
    cloud = np.zeros((len(points), 4), np.float32)
    cloud[:, :3] = points
    cloud[:, 3] = 1.0
    fields = [
        make("sensor_msgs/msg/PointField", name=name, offset=4 * i, datatype=7, count=1)  # FLOAT32
        for i, name in enumerate(("x", "y", "z", "intensity"))
    ]
    return make("sensor_msgs/msg/PointCloud2", header=_make_header(make, stamp_ns, LIDAR_FRAME), height=1,
                width=len(points), fields=fields, is_bigendian=False, point_step=16, row_step=16 * len(points),
                data=cloud.view(np.uint8).reshape(-1), is_dense=True)  # fmt: skip


def event_packets(make: Make, frame: np.ndarray, end_ns: int, window_ns: int, seed: int) -> list[tuple[int, Any]]:
    """``(stamp, EventPacket)`` in ``mono`` encoding whose events accumulate over ``(end - window, end]`` to
    ``frame``, split into short packets as a driver sends them."""
    batch = frame_to_events(frame, end_ns - window_ns, end_ns, seed=seed)
    edges = np.linspace(end_ns - window_ns, end_ns, EVENT_PACKETS_PER_WINDOW + 1).astype(np.int64)
    packets = []
    for index, (start, stop) in enumerate(itertools.pairwise(edges)):
        keep = (batch.t_ns > start) & (batch.t_ns <= stop)
        part = type(batch)(batch.t_ns[keep], batch.x[keep], batch.y[keep], batch.polarity[keep], batch.height,
                           batch.width)  # fmt: skip
        data = np.frombuffer(encode_mono(part, int(start)), np.uint8)
        packets.append(
            (
                int(stop),
                make("event_camera_msgs/msg/EventPacket", header=_make_header(make, int(start), CAMERA_FRAME),
                     height=batch.height, width=batch.width, seq=index, time_base=int(start), encoding="mono",
                     is_bigendian=False, events=data),
            )
        )  # fmt: skip
    return packets


def evt3_packets(
    make: Make,
    encoder: Evt3Encoder,
    batch: EventBatch,
    start_ns: int,
    end_ns: int,
    period_ns: int = 1_000_000,
    origin_ns: int = 0,
    latency_ns: int = 0,
) -> list[tuple[int, Any]]:
    """``(stamp, EventPacket)`` in ``evt3`` as metavision_driver sends them: the events of ``batch`` in
    ``(start_ns, end_ns]`` (ROS time; sensor time = ROS time − ``origin_ns``, rounded up to the microsecond) written
    by ``encoder`` as one continuous word stream (it carries its state to the next call), a packet per ``period_ns``
    opened and closed by the time words of its start and end (a quiet period's packet has nothing else), stamped with
    the ROS time of its first sensor time plus ``latency_ns``, ``time_base`` 0."""
    keep = (batch.t_ns > start_ns) & (batch.t_ns <= end_ns)
    time_us = -((origin_ns - batch.t_ns[keep]) // 1000)  # ceil: the event stays inside its window
    x, y, polarity = batch.x[keep], batch.y[keep], batch.polarity[keep].astype(np.int64)
    order = np.argsort(time_us, kind="stable")
    time_us, x, y, polarity = time_us[order], x[order], y[order], polarity[order]
    starts = list(range(start_ns, end_ns, period_ns))
    cuts_us = [(t - origin_ns) // 1000 for t in [*starts, end_ns]]
    opening, *pieces = encoder.encode_packets(time_us, x, y, polarity, np.asarray(cuts_us))
    packets = []
    for index, first in enumerate(starts):
        data = np.frombuffer((opening if index == 0 else b"") + pieces[index], np.uint8)
        stamp = first + latency_ns
        packets.append((stamp, make("event_camera_msgs/msg/EventPacket", header=_make_header(make, stamp, CAMERA_FRAME),
                                    height=batch.height, width=batch.width, seq=index, time_base=0,
                                    encoding="evt3", is_bigendian=False, events=data)))  # fmt: skip
    return packets


def rosbags_factory(typestore: Any) -> Make:
    """``make`` for rosbags messages (sequences as numpy arrays, as rosbags serialises them)."""

    def make(type_name: str, **fields: Any) -> Any:
        for key, value in fields.items():
            if isinstance(value, np.ndarray) and key in ("d", "k", "r", "p"):
                fields[key] = value.astype(np.float64)
        return typestore.types[type_name](**fields)

    return make


def rclpy_factory() -> Make:
    """``make`` for rclpy messages."""
    from memsam_ros.inputs.converter import message_class

    def make(type_name: str, **fields: Any) -> Any:
        for key, value in fields.items():
            if isinstance(value, np.ndarray):
                fields[key] = value.tobytes() if value.dtype == np.uint8 else value.astype(np.float64).tolist()
        return message_class(type_name)(**fields)

    return make
