"""One sensor driver per process, publishing as real drivers do, at real rate (for ``bench_event_rate.py``).

    python benchmarks/sensor_publishers.py {rgb,depth,lidar,events} --seconds 60 [--event-rate 1e6] [--packet-us 1000]
        [--topic /event/events]

Every process stamps with the host clock (``time.time_ns()``, ROS time), uses the shipped default QoS of sensor
drivers (sensor data: best effort, keep last 5) and the Fast DDS profile the bench sets in its environment:

* ``rgb``: 640×480 JPEG ``CompressedImage`` at 30 Hz (stamp = capture, 25 ms before publishing) and its
  ``camera_info``;
* ``depth``: 640×480 ``compressedDepth`` PNG (32FC1) at 30 Hz, same stamps;
* ``lidar``: a VLP-16-like ``PointCloud2`` at 10 Hz, 16 rings × 1,800 azimuth steps, fields x y z intensity (float32),
  ring (uint16), time (float32), 22-byte points, in the LiDAR's frame, stamped at the start of the sweep; and the
  LiDAR → camera transform on ``/tf_static`` (latched);
* ``events``: an EVT3 ``EventPacket`` every ``--packet-us`` (1 ms, metavision_driver's default), as
  metavision_driver sends them: one continuous word stream of ``--event-rate`` events per second (uniform over a
  640×480 sensor, random polarity; the sensor clock started 100 s before the host's) cut at each packet period,
  ``time_base`` 0, stamped when the packet's first buffer arrived (0.3 ms after the period began).

Images and clouds are encoded once and re-sent with new stamps; events are generated as they go.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from memsam_core.data.synthetic import SceneConfig, generate_scene  # noqa: E402
from memsam_core.events import EventBatch  # noqa: E402
from memsam_ros.inputs.event_codecs import Evt3Encoder  # noqa: E402
from memsam_ros.tools import rig  # noqa: E402

HEIGHT, WIDTH = 480, 640
TOPICS = {"rgb": rig.RIG_TOPICS["rgb"], "depth": rig.RIG_TOPICS["depth"], "lidar": rig.RIG_TOPICS["lidar"],
          "events": rig.RIG_TOPICS["event"]}  # fmt: skip
IMAGE_LATENCY_NS = 25_000_000
EVENT_BUFFER_LATENCY_NS = 300_000
SENSOR_CLOCK_START_NS = 100_000_000_000  # the event camera's clock started 100 s before the host's epoch time


def header(make: rig.Make, stamp_ns: int, frame_id: str) -> object:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return make("std_msgs/msg/Header", stamp=make("builtin_interfaces/msg/Time", sec=sec, nanosec=nanosec),
                frame_id=frame_id)  # fmt: skip


def vlp16_cloud(make: rig.Make, stamp_ns: int, seed: int = 0) -> object:
    """16 rings from −15° to +15°, 1,800 azimuth steps (0.2°), ranges 2–40 m (5 % no return: NaN)."""
    rng = np.random.default_rng(seed)
    rings, steps = 16, 1800
    elevation = np.repeat(np.radians(np.linspace(-15.0, 15.0, rings)), steps)
    azimuth = np.tile(np.radians(np.linspace(-180.0, 180.0, steps, endpoint=False)), rings)
    distance = rng.uniform(2.0, 40.0, elevation.size)
    points = np.zeros(elevation.size, np.dtype({"names": ["x", "y", "z", "intensity", "ring", "time"],
                                                "formats": ["<f4", "<f4", "<f4", "<f4", "<u2", "<f4"],
                                                "offsets": [0, 4, 8, 12, 16, 18], "itemsize": 22}))  # fmt: skip
    points["x"] = distance * np.cos(elevation) * np.cos(azimuth)
    points["y"] = distance * np.cos(elevation) * np.sin(azimuth)
    points["z"] = distance * np.sin(elevation)
    points["x"][rng.random(elevation.size) < 0.05] = np.nan
    points["intensity"] = rng.uniform(0, 255, elevation.size)
    points["ring"] = np.repeat(np.arange(rings), steps)
    points["time"] = np.tile(np.linspace(0.0, 0.1, steps, endpoint=False), rings)
    fields = [make("sensor_msgs/msg/PointField", name=name, offset=offset, datatype=datatype, count=1)
              for name, offset, datatype in (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7),
                                             ("ring", 16, 4), ("time", 18, 7))]  # fmt: skip
    return make("sensor_msgs/msg/PointCloud2", header=header(make, stamp_ns, rig.LIDAR_FRAME), height=rings,
                width=steps, fields=fields, is_bigendian=False, point_step=22, row_step=22 * steps,
                data=points.view(np.uint8).reshape(-1), is_dense=False)  # fmt: skip


def set_stamp(msg: object, stamp_ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)


class EventCamera:
    """A continuous EVT3 stream of uniform random events, cut into one packet per period; the packets of
    ``CHUNK_NS`` are made at once (one vectorised encoding, short enough not to hold the stream up) and handed out
    one by one."""

    CHUNK_NS = 20_000_000

    def __init__(self, make: rig.Make, events_per_s: float, period_ns: int, seed: int = 0) -> None:
        self.make, self.rate, self.period_ns = make, events_per_s, period_ns
        self.rng = np.random.default_rng(seed)
        self.encoder = Evt3Encoder()
        self._ready: dict[int, object] = {}

    def packet(self, start_ns: int) -> object:
        """The packet of the events in ``(start_ns, start_ns + period]`` (host time; asked for in order)."""
        if start_ns not in self._ready:
            self._ready = dict(self._chunk(start_ns))
        return self._ready.pop(start_ns)

    def _chunk(self, start_ns: int) -> list[tuple[int, object]]:
        end_ns = start_ns + max(1, self.CHUNK_NS // self.period_ns) * self.period_ns
        count = self.rng.poisson(self.rate * (end_ns - start_ns) / 1e9)
        t_ns = np.sort(self.rng.integers(start_ns + 1, end_ns + 1, count))
        batch = EventBatch(t_ns, self.rng.integers(0, WIDTH, count), self.rng.integers(0, HEIGHT, count),
                           self.rng.random(count) < 0.5, HEIGHT, WIDTH)  # fmt: skip
        packets = rig.evt3_packets(self.make, self.encoder, batch, start_ns, end_ns, self.period_ns,
                                   origin_ns=-SENSOR_CLOCK_START_NS, latency_ns=EVENT_BUFFER_LATENCY_NS)  # fmt: skip
        return [(stamp - EVENT_BUFFER_LATENCY_NS, packet) for stamp, packet in packets]


def run(sensor: str, seconds: float, event_rate: float, packet_ns: int, topic: str) -> int:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from memsam_ros.inputs.converter import message_class

    rclpy.init()
    node = rclpy.create_node(f"memsam_bench_{sensor}_driver_{packet_ns // 1000}us")
    make = rig.rclpy_factory()
    kinds = {"rgb": "sensor_msgs/msg/CompressedImage", "depth": "sensor_msgs/msg/CompressedImage",
             "lidar": "sensor_msgs/msg/PointCloud2", "events": "event_camera_msgs/msg/EventPacket"}  # fmt: skip
    publisher = node.create_publisher(message_class(kinds[sensor]), topic or TOPICS[sensor], qos_profile_sensor_data)
    scene = generate_scene(0, SceneConfig(height=HEIGHT, width=WIDTH))
    extra = []
    if sensor == "rgb":
        message = rig.compressed_rgb(make, scene.frames["rgb"], 0)
        info_publisher = node.create_publisher(message_class("sensor_msgs/msg/CameraInfo"), rig.CAMERA_INFO_TOPIC,
                                               qos_profile_sensor_data)  # fmt: skip
        info = rig.camera_info(make, scene.intrinsics, HEIGHT, WIDTH, 0)
        extra.append((info_publisher, info))
    elif sensor == "depth":
        message = rig.compressed_depth(make, scene.frames["depth"], 0)
    elif sensor == "lidar":
        message = vlp16_cloud(make, 0)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        latched.durability = DurabilityPolicy.TRANSIENT_LOCAL
        tf = node.create_publisher(message_class("tf2_msgs/msg/TFMessage"), "/tf_static", latched)
        tf.publish(rig.static_transform(make, time.time_ns()))
    period_ns = {"rgb": 33_333_333, "depth": 33_333_333, "lidar": 100_000_000, "events": packet_ns}[sensor]
    camera = EventCamera(make, event_rate, packet_ns) if sensor == "events" else None
    start = time.time_ns()
    next_ns = start - start % period_ns + period_ns
    sent = 0
    while time.time_ns() - start < seconds * 1e9:
        delay = next_ns - time.time_ns()
        if delay > 0:
            time.sleep(delay / 1e9)
        if camera is not None:  # the packet of the millisecond that just ended
            publisher.publish(camera.packet(next_ns - period_ns))
        else:
            stamp = next_ns - (period_ns if sensor == "lidar" else IMAGE_LATENCY_NS)
            set_stamp(message, stamp)
            publisher.publish(message)
            for other, msg in extra:
                set_stamp(msg, stamp)
                other.publish(msg)
        sent += 1
        next_ns += period_ns
    print(f"{sensor}: sent {sent} in {seconds:.0f} s", flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sensor", choices=sorted(TOPICS))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--event-rate", type=float, default=1e6, help="events per second (EVT3 stream)")
    parser.add_argument("--packet-us", type=int, default=1000, help="event packet period (metavision_driver: 1 ms)")
    parser.add_argument("--topic", default="", help="publish on this topic instead of the rig's")
    args = parser.parse_args(argv)
    return run(args.sensor, args.seconds, args.event_rate, args.packet_us * 1000, args.topic)


if __name__ == "__main__":
    sys.exit(main())
