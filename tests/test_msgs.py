"""memsam_msgs (built by scripts/build_msgs.sh): field contract, CDR round trip, real DDS pub/sub, DDS profile."""

from __future__ import annotations

import os
import sys
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
        memory_instants=2,
        memory_resets=5,
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
        "memory_instants": "uint8",
        "memory_resets": "uint32",
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


@pytest.mark.parametrize("size", [(1280, 720), (1024, 1024)])
def test_fastdds_profile_carries_large_images_between_processes(ros_domain_id: int, size: tuple[int, int]) -> None:
    """Publisher and subscriber in two processes, best effort: with the shipped profile nearly every frame
    arrives; the control run without it loses most of them (so this test fails if the profile stops mattering)."""
    sys.path.insert(0, str(PROFILE.parents[1] / "benchmarks"))
    from bench_large_images import measure

    with_profile = measure(*size, publisher_profile=True, subscriber_profile=True, frames=45)
    control = measure(*size, publisher_profile=False, subscriber_profile=False, frames=45)
    assert with_profile["delivered"] >= 0.9, with_profile
    assert control["delivered"] <= 0.5, control


def test_memsam_processes_load_the_large_data_profile_unless_one_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from memsam_ros.fastdds import PROFILE_VARIABLE, use_large_data_profile

    monkeypatch.delenv(PROFILE_VARIABLE, raising=False)
    monkeypatch.delenv("AMENT_PREFIX_PATH", raising=False)  # off-ROS: the source checkout's profile
    assert use_large_data_profile() == str(PROFILE) and os.environ[PROFILE_VARIABLE] == str(PROFILE)
    monkeypatch.setenv(PROFILE_VARIABLE, "/etc/my_profile.xml")  # the user's choice stays
    assert use_large_data_profile() == "/etc/my_profile.xml"
    monkeypatch.setenv(PROFILE_VARIABLE, "")  # opting out
    assert use_large_data_profile() is None and os.environ[PROFILE_VARIABLE] == ""
