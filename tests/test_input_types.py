"""Input types found on the graph (``ros.<modality>_type: auto``, the default) and ``use_sim_time``, seen from
outside: the node runs as its own process with the shipped params file; this process publishes as drivers do.

* publishers that appear after the node started give each input its type (CompressedImage RGB, Image depth);
* two publishers of different types on one topic are one warning naming both;
* the counterpart: an explicit type the publisher does not send receives nothing, and says so;
* ``use_sim_time:=true``: the node's clock follows ``/clock``.

``resolve_kind`` (the rule) is tested directly too. ~60 s on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from domains import next_domain_id
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_helpers import image_msg, scene_frames, wait_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from memsam_ros.info import info_message_type
from memsam_ros.inputs.converter import resolve_kind
from memsam_ros.inputs.stamps import s_to_ns
from memsam_ros.tools import rig

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
NODE = "/memsam_segment"
RELIABLE = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
IMAGE, COMPRESSED = "sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"


# ---------------------------------------------------------------------------------------------- the rule
def test_one_publisher_type_is_taken():
    assert resolve_kind("rgb", "/cam", [COMPRESSED]) == ("compressed", None)
    assert resolve_kind("lidar", "/points", ["sensor_msgs/msg/PointCloud2"]) == ("pointcloud", None)
    assert resolve_kind("event", "/ev", ["event_camera_msgs/msg/EventPacket"]) == ("event_packet", None)


def test_no_publisher_waits_and_a_refused_type_says_why():
    assert resolve_kind("depth", "/d", []) == (None, None)
    kind, why = resolve_kind("depth", "/d", ["sensor_msgs/msg/PointCloud2"])
    assert kind is None and "/d [depth] is published as sensor_msgs/msg/PointCloud2" in why


def test_publishers_of_different_types_take_the_majority_and_warn_naming_both():
    kind, why = resolve_kind("rgb", "/cam", [COMPRESSED, IMAGE, COMPRESSED])
    assert kind == "compressed"
    assert f"{COMPRESSED} (2)" in why and f"{IMAGE} (1)" in why and "ros.rgb_type" in why
    assert resolve_kind("rgb", "/cam", [COMPRESSED, IMAGE])[0] == "image"  # a tie: the order of ACCEPTED


# ---------------------------------------------------------------------------------------------- the node
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from memsam_core.config import load_config
    from memsam_core.model import build_memorysam, save_checkpoint

    config = load_config(None, {"model.image_size": 128, "model.modalities": ["rgb", "depth"]})
    path = tmp_path_factory.mktemp("model") / "rgbd.pt"
    save_checkpoint(path, build_memorysam(config.model, seed=0), config)
    return path


class NodeProcess:
    """``memsam-node`` with the shipped params file on a domain of its own; its log in a file."""

    def __init__(self, log: Path, checkpoint: Path, *params: str, domain: int | None = None) -> None:
        self.domain = next_domain_id() if domain is None else domain
        self.log_path = log
        env = {**os.environ, "ROS_DOMAIN_ID": str(self.domain), "PYTHONUNBUFFERED": "1"}
        args = ["-p", f"inference.checkpoint:={checkpoint}", "-p", "inference.device:=cpu"]
        for param in params:
            args += ["-p", param]
        command = [sys.executable, "-m", "memsam_ros.node", "--ros-args", "--params-file",
                   str(ROOT / "config/segment.yaml"), *args]  # fmt: skip
        self._log = log.open("w")
        self.process = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_active(self, timeout: float = 120.0) -> None:
        assert wait_until(lambda: "active: segmenting" in self.text() or self.process.poll() is not None, timeout)
        assert self.process.poll() is None and "active: segmenting" in self.text(), self.text()[-3000:]

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        finally:
            self._log.close()


@pytest.fixture
def ros() -> Iterator[Callable[[int], tuple[rclpy.node.Node, SingleThreadedExecutor]]]:
    """``ros(domain)``: a driver node and its executor on ``domain`` (shut down after the test)."""
    contexts: list[tuple[Context, SingleThreadedExecutor]] = []

    def make(domain: int) -> tuple[rclpy.node.Node, SingleThreadedExecutor]:
        context = Context()
        rclpy.init(context=context, domain_id=domain)
        node = rclpy.create_node("memsam_test_driver", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        contexts.append((context, executor))
        return node, executor

    yield make
    for context, executor in contexts:
        executor.shutdown()
        rclpy.try_shutdown(context=context)


def _spin_until(executor: SingleThreadedExecutor, predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while not (value := predicate()) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return value


def _compressed_rgb(frame: np.ndarray, stamp_s: float) -> CompressedImage:
    return rig.compressed_rgb(rig.rclpy_factory(), frame, s_to_ns(stamp_s))


def test_auto_types_come_from_publishers_that_appear_after_start(checkpoint, ros, tmp_path):
    node = NodeProcess(tmp_path / "node.log", checkpoint)
    try:
        node.wait_active()
        assert "no publisher of a type rgb accepts yet" in node.text()
        driver, executor = ros(node.domain)
        rgb = driver.create_publisher(CompressedImage, "/rgb/image", qos_profile_sensor_data)
        depth = driver.create_publisher(Image, "/depth/image", qos_profile_sensor_data)
        infos: list = []
        driver.create_subscription(info_message_type(), f"{NODE}/info", infos.append, RELIABLE)
        subscribed = _spin_until(executor, lambda: rgb.get_subscription_count() and depth.get_subscription_count(), 30)
        assert subscribed, node.text()[-3000:]
        frames = scene_frames(seed=3)
        for i in range(40):  # 10 Hz, as drivers stream; the keep-newest worker may drop some
            stamp = 100.0 + i * 0.1
            depth.publish(image_msg(frames["depth"], "32FC1", stamp))
            rgb.publish(_compressed_rgb(frames["rgb"], stamp))
            _spin_until(executor, lambda: False, 0.1)
            if len(infos) >= 3:
                break
        assert _spin_until(executor, lambda: len(infos) >= 2, 60), node.text()[-3000:]
    finally:
        assert node.stop() == 0
    assert {tuple(info.modalities_used) for info in infos} == {("rgb", "depth")}
    text = node.text()
    assert f"/rgb/image [rgb]: {COMPRESSED} (from its publishers)" in text
    assert f"/depth/image [depth]: {IMAGE} (from its publishers)" in text


def test_publishers_of_different_types_are_one_warning(checkpoint, ros, tmp_path):
    domain = next_domain_id()
    driver, executor = ros(domain)
    other_driver, _ = ros(domain)  # a participant holds one type per topic: a second driver process, as on a rig
    driver.create_publisher(Image, "/depth/image", qos_profile_sensor_data)
    other_driver.create_publisher(CompressedImage, "/depth/image", qos_profile_sensor_data)
    driver.create_publisher(Image, "/rgb/image", qos_profile_sensor_data)
    node = NodeProcess(tmp_path / "node.log", checkpoint, domain=domain)
    try:
        node.wait_active()
        # discovery may show the publishers one at a time: the conflict is seen when the second type shows up
        assert _spin_until(executor, lambda: "publishers of different types" in node.text(), 20), node.text()[-2000:]
        _spin_until(executor, lambda: False, 1.5)  # more graph polls: still one warning
    finally:
        assert node.stop() == 0
    text = node.text()
    warnings = [line for line in text.splitlines() if "publishers of different types" in line]
    assert len(warnings) == 1, text[-3000:]
    assert f"{IMAGE} (1)" in warnings[0] and f"{COMPRESSED} (1)" in warnings[0] and "/depth/image" in warnings[0]
    assert f"/rgb/image [rgb]: {IMAGE} (from its publishers)" in text


def test_an_explicit_type_the_publisher_does_not_send_receives_nothing_and_says_so(checkpoint, ros, tmp_path):
    """The counterpart of the auto test: what makes that one pass is the type taken from the graph."""
    domain = next_domain_id()
    driver, executor = ros(domain)
    rgb = driver.create_publisher(CompressedImage, "/rgb/image", qos_profile_sensor_data)
    depth = driver.create_publisher(Image, "/depth/image", qos_profile_sensor_data)
    node = NodeProcess(
        tmp_path / "node.log", checkpoint, "ros.rgb_type:=image", "ros.depth_type:=compressed",
        "ros.silent_after_s:=1.0", "ros.diagnostics_period_s:=0.2", domain=domain,
    )  # fmt: skip
    try:
        node.wait_active()
        infos: list = []
        driver.create_subscription(info_message_type(), f"{NODE}/info", infos.append, RELIABLE)
        frames = scene_frames(seed=3)
        for i in range(20):
            depth.publish(image_msg(frames["depth"], "32FC1", 100.0 + i * 0.1))
            rgb.publish(_compressed_rgb(frames["rgb"], 100.0 + i * 0.1))
            _spin_until(executor, lambda: False, 0.1)
        assert rgb.get_subscription_count() == 0 and depth.get_subscription_count() == 0 and infos == []
        assert _spin_until(executor, lambda: node.text().count("nothing will be received") >= 2, 20), node.text()
    finally:
        assert node.stop() == 0
    text = node.text()
    assert (
        f"/rgb/image [rgb] is published as {COMPRESSED} but ros.rgb_type is 'image' ({IMAGE}): nothing will be "
        "received; set ros.rgb_type: auto"
    ) in text, text[-3000:]
    assert f"/depth/image [depth] is published as {IMAGE} but ros.depth_type is 'compressed'" in text


def test_use_sim_time_follows_the_clock(checkpoint, ros, tmp_path):
    node = NodeProcess(tmp_path / "node.log", checkpoint, "use_sim_time:=true", "ros.diagnostics_period_s:=0.2")
    try:
        node.wait_active()
        driver, executor = ros(node.domain)
        clock = driver.create_publisher(Clock, "/clock", 10)
        stamps: list[int] = []
        driver.create_subscription(DiagnosticArray, "/diagnostics", lambda m: stamps.append(m.header.stamp.sec), 10)

        def tick() -> bool:
            clock.publish(Clock(clock=rclpy.time.Time(seconds=12345).to_msg()))  # a paused bag: time stands still
            return 12345 in stamps

        # diagnostics keep coming while /clock stands still (steady timers), stamped with the simulated time
        assert _spin_until(executor, tick, 30), (stamps[-5:], node.text()[-2000:])
        count = len(stamps)
        assert _spin_until(executor, lambda: tick() and len(stamps) >= count + 3, 10), stamps[-5:]
    finally:
        assert node.stop() == 0
