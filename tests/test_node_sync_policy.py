"""``sync.policy: latest`` in the node over real DDS: the set takes the newest message of each modality within
slop received before its RGB frame, and ``~/info`` reports the stamp skew that costs.

Real sam2 hiera-tiny at 128 px, untrained, on CPU (tests/ros_helpers.py harness). ~20 s on 2 cores.
"""

from __future__ import annotations

import pytest
from ros_helpers import NodeHarness, image_msg, key_of, scene_frames

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def harness():
    h = NodeHarness(params={"sync.policy": "latest", "sync.slop_s": 0.15})
    yield h
    h.close()


def test_info_reports_the_skew_of_the_newest_messages_within_slop(harness) -> None:
    """Depth 5 ms before the RGB stamp is nearest, depth 30 ms after it is the newest received (nearest would take
    the first); the only LiDAR scan is 90 ms old. Each message waits until the node has it (ros_helpers)."""
    assert harness.node.get_parameter("sync.policy").value == "latest"
    frames, stamp, pub = scene_frames(seed=5), 200.0, harness.publisher
    pub.publish("lidar", image_msg(frames["lidar"], "32FC1", stamp - 0.09))
    pub.publish("depth", image_msg(frames["depth"], "32FC1", stamp - 0.005))
    pub.publish("depth", image_msg(frames["depth"], "32FC1", stamp + 0.03))
    pub.publish("event", image_msg(frames["event"], "rgb8", stamp + 0.2))  # outside slop: missing
    pub.publish("rgb", image_msg(frames["rgb"], "rgb8", stamp))
    out = harness.wait_output(key_of(stamp))
    assert out is not None, harness.warnings
    info = out["info"]
    skew = dict(zip(info.modalities_used, info.stamp_skew_s))
    assert list(info.modalities_missing) == ["event"]
    assert skew["rgb"] == 0.0
    assert skew["depth"] == pytest.approx(0.03, abs=1e-6)
    assert skew["lidar"] == pytest.approx(-0.09, abs=1e-6)
