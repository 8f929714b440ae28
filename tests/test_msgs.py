"""memsam_msgs (built by scripts/build_msgs.sh): field contract, CDR round trip, real DDS pub/sub, DDS profile."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from builtin_interfaces.msg import Time
from memsam_msgs.msg import SegmentationInfo
from rclpy.serialization import deserialize_message, serialize_message
from std_msgs.msg import Header

pytestmark = pytest.mark.ros
PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_shm.xml"


def sample() -> SegmentationInfo:
    return SegmentationInfo(
        header=Header(stamp=Time(sec=1700000000, nanosec=123456789), frame_id="camera_color"),
        class_names=["background", "road", "car"],
        modalities_used=["rgb", "depth", "event"],
        modalities_missing=["lidar"],
        stamp_skew_s=[0.0, 0.004, -0.012],
        inference_ms=41.5,
        total_latency_ms=57.25,
        sets_dropped=3,
        model_name="sam2.1_hiera_t",
    )


def assert_same(a: SegmentationInfo, b: SegmentationInfo) -> None:
    for name in SegmentationInfo.get_fields_and_field_types():
        left, right = getattr(a, name), getattr(b, name)
        assert (list(left) if name == "stamp_skew_s" else left) == (list(right) if name == "stamp_skew_s" else right)


def test_field_contract() -> None:
    assert SegmentationInfo.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "class_names": "sequence<string>",
        "modalities_used": "sequence<string>",
        "modalities_missing": "sequence<string>",
        "stamp_skew_s": "sequence<float>",
        "inference_ms": "float",
        "total_latency_ms": "float",
        "sets_dropped": "uint32",
        "model_name": "string",
    }


def test_serialize_round_trip() -> None:
    assert len(serialize_message(SegmentationInfo())) > 0
    msg = sample()
    assert_same(deserialize_message(serialize_message(msg), SegmentationInfo), msg)


def test_pub_sub_over_dds(ros_context) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    talker = Node("memsam_msgs_talker", context=ros_context)
    listener = Node("memsam_msgs_listener", context=ros_context)
    received: list[SegmentationInfo] = []
    listener.create_subscription(SegmentationInfo, "segmentation_info", received.append, 10)
    publisher = talker.create_publisher(SegmentationInfo, "segmentation_info", 10)
    executor = SingleThreadedExecutor(context=ros_context)
    for node in (talker, listener):
        executor.add_node(node)
    try:
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            if publisher.get_subscription_count():
                publisher.publish(sample())
            executor.spin_once(timeout_sec=0.05)
        assert received, "no SegmentationInfo arrived within 10 s"
        assert_same(received[0], sample())
    finally:
        executor.shutdown()
        talker.destroy_node()
        listener.destroy_node()


def test_fastdds_profile_loads_and_carries_large_images(ros_domain_id: int) -> None:
    """In a subprocess (Fast DDS reads the profile once per process): no XML errors, 720p rgb8 delivered."""
    script = textwrap.dedent(
        """
        import time
        import numpy as np
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image
        from memsam_ros.codec import array_to_image, image_to_array

        rclpy.init()
        a, b = rclpy.create_node("shm_talker"), rclpy.create_node("shm_listener")
        got = []
        b.create_subscription(Image, "big", got.append, qos_profile_sensor_data)
        pub = a.create_publisher(Image, "big", qos_profile_sensor_data)
        ex = SingleThreadedExecutor()
        ex.add_node(a)
        ex.add_node(b)
        frame = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
        msg = array_to_image(frame, "rgb8")
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            if pub.get_subscription_count():
                pub.publish(msg)
            ex.spin_once(timeout_sec=0.05)
        assert got and np.array_equal(image_to_array(got[0]), frame)
        print("OK")
        """
    )
    env = os.environ | {"FASTDDS_DEFAULT_PROFILES_FILE": str(PROFILE), "ROS_DOMAIN_ID": str(ros_domain_id)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=PROFILE.parents[1],
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr
    assert "XMLPARSER" not in result.stderr and "Error" not in result.stderr, result.stderr
