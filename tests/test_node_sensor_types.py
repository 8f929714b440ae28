"""The node on the messages a real rig publishes, over real DDS: compressed RGB, compressedDepth, a PointCloud2 in
the LiDAR's frame with the RGB camera_info and /tf_static, and an event stream (EventPacket). Every set uses all
four sensors, the point cloud lands where the scene's LiDAR image says, and bad messages of each kind are
warnings naming the topic, never a crash. ~40 s on 2 cores.
"""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from ros_helpers import NodeHarness, key_of, wait_until

from memsam_core.data.synthetic import SceneConfig, generate_scene
from memsam_ros.inputs.converter import TF_STATIC_TOPIC, message_class
from memsam_ros.inputs.stamps import s_to_ns
from memsam_ros.tools import rig

pytestmark = pytest.mark.ros
RIG_PARAMS = {
    **{f"ros.{m}_topic": topic for m, topic in rig.RIG_TOPICS.items()},
    **{f"ros.{m}_type": kind for m, kind in rig.RIG_TYPES.items()},
    "ros.camera_info_topic": rig.CAMERA_INFO_TOPIC,
    "ros.event_window_s": 0.05,
}
WINDOW_NS = 50_000_000


@pytest.fixture(scope="module")
def scene():
    return generate_scene(5, SceneConfig(height=96, width=128))


@pytest.fixture(scope="module")
def harness():
    h = NodeHarness(RIG_PARAMS)
    yield h
    h.close()


def _send_geometry(harness: NodeHarness, scene, stamp_ns: int) -> None:
    make = rig.rclpy_factory()
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    publisher = harness.publisher
    info = publisher.create_publisher(message_class("sensor_msgs/msg/CameraInfo"), rig.CAMERA_INFO_TOPIC, 10)
    tf = publisher.create_publisher(message_class("tf2_msgs/msg/TFMessage"), TF_STATIC_TOPIC, latched)
    wait_until(lambda: info.get_subscription_count() and tf.get_subscription_count(), 10.0)
    height, width = scene.frames["rgb"].shape[:2]
    info.publish(rig.camera_info(make, scene.intrinsics, height, width, stamp_ns))
    tf.publish(rig.static_transform(make, stamp_ns))
    assert wait_until(lambda: harness.node.inputs.camera is not None, 10.0), "camera_info did not arrive"


def _send_set(harness: NodeHarness, scene, stamp_s: float, skip=()) -> int:
    make, stamp = rig.rclpy_factory(), s_to_ns(stamp_s)
    frames = scene.frames
    publish = harness.publisher.publish
    if "event" not in skip:
        for _, packet in rig.event_packets(make, frames["event"], stamp, WINDOW_NS, seed=1):
            publish("event", packet)
    if "depth" not in skip:
        publish("depth", rig.compressed_depth(make, frames["depth"], stamp))
    if "lidar" not in skip:
        publish("lidar", rig.point_cloud(make, frames["lidar"], scene.intrinsics, stamp))
    publish("rgb", rig.compressed_rgb(make, frames["rgb"], stamp))
    return key_of(stamp_s)


def test_rig_messages_give_sets_with_every_sensor(harness, scene) -> None:
    _send_geometry(harness, scene, s_to_ns(9.0))
    for index in range(3):
        out = harness.wait_output(_send_set(harness, scene, 10.0 + index * 0.1))
        assert out is not None, harness.warnings
        info = out["info"]
        assert list(info.modalities_used) == ["rgb", "depth", "lidar", "event"], (info, harness.warnings)
        assert (out["labels"].height, out["labels"].width) == (96, 128)
    assert not harness.warnings_matching("cannot"), harness.warnings
    # the node's own state came over DDS: its projection of a cloud is the scene's LiDAR image
    cloud = rig.point_cloud(rig.rclpy_factory(), scene.frames["lidar"], scene.intrinsics, s_to_ns(10.0))
    np.testing.assert_allclose(harness.node.inputs.project(cloud), scene.frames["lidar"], atol=1e-3)
    frame = harness.node.inputs.event_frame("event", s_to_ns(10.2))
    np.testing.assert_array_equal(frame, scene.frames["event"])


def test_bad_rig_messages_are_warnings_naming_the_topic(harness, scene) -> None:
    make = rig.rclpy_factory()
    stamp_s = 20.0
    _send_geometry(harness, scene, s_to_ns(19.0))
    # a malformed point cloud: the set goes out without LiDAR, the reason is in the warning
    cloud = rig.point_cloud(make, scene.frames["lidar"], scene.intrinsics, s_to_ns(stamp_s))
    cloud.row_step += 4
    harness.publisher.publish("lidar", cloud)
    out = harness.wait_output(_send_set(harness, scene, stamp_s, skip=("lidar",)))
    assert out is not None and "lidar" in list(out["info"].modalities_missing), harness.warnings
    assert harness.warnings_matching(rig.RIG_TOPICS["lidar"], "row_step"), harness.warnings
    # a corrupt payload (not a JPEG at all): no set for that stamp, a warning naming the topic
    bad = rig.compressed_rgb(make, scene.frames["rgb"], s_to_ns(21.0))
    bad.data = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    harness.publisher.publish("rgb", bad)
    assert wait_until(lambda: harness.warnings_matching(rig.RIG_TOPICS["rgb"], "corrupt"), 10.0), (
        harness.warnings,
        harness.node.sync.stats(),
    )
    # an event packet without events is normal (nothing changed in front of the camera): no warning
    empty = rig.event_packets(make, np.zeros_like(scene.frames["event"]), s_to_ns(22.0), WINDOW_NS, seed=0)[0][1]
    harness.publisher.publish("event", empty)
    out = harness.wait_output(_send_set(harness, scene, 23.0))
    assert out is not None and "event" in list(out["info"].modalities_used), harness.warnings
    assert not harness.warnings_matching(rig.RIG_TOPICS["event"], "without events"), harness.warnings
    # a malformed packet (not whole 64-bit mono words) is a warning naming the topic; the stream goes on
    bad = rig.event_packets(make, scene.frames["event"], s_to_ns(24.0), WINDOW_NS, seed=0)[0][1]
    bad.events = bytes(bad.events)[:-3]
    harness.publisher.publish("event", bad)
    assert wait_until(lambda: harness.warnings_matching(rig.RIG_TOPICS["event"], "whole number"), 10.0), (
        harness.warnings
    )
    out = harness.wait_output(_send_set(harness, scene, 25.0))
    assert out is not None and "event" in list(out["info"].modalities_used), harness.warnings


def test_lidar_without_camera_info_is_missing_with_the_reason(scene) -> None:
    harness = NodeHarness(RIG_PARAMS)
    try:
        out = harness.wait_output(_send_set(harness, scene, 30.0))
        assert out is not None, harness.warnings
        assert "lidar" in list(out["info"].modalities_missing)
        assert harness.warnings_matching(rig.RIG_TOPICS["lidar"], "no CameraInfo received yet"), harness.warnings
    finally:
        harness.close()
