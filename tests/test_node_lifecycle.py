"""The node as a lifecycle process over real DDS, with the shipped parameters and default QoS.

``python -m memsam_ros.node --ros-args --params-file config/segment.yaml`` (best-effort sensor-data inputs,
as shipped) with ``ros.autostart:=false``; this process drives it like ``ros2 lifecycle`` and ``ros2 service
call`` would (lifecycle_msgs ChangeState/GetState, std_srvs SetBool), publishes 10 Hz sensor streams with
sensor-data QoS like camera drivers, and reads the outputs and the ROS graph. The tests run in order on
one node process: unconfigured -> configure -> activate -> enable off/on -> deactivate -> activate ->
cleanup -> shutdown -> SIGINT. ~40 s on 2 cores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from domains import next_domain_id
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from ros_helpers import MODALITY_ENCODINGS, image_msg, interrupt, scene_frames, to_time, wait_until
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from std_srvs.srv import SetBool

from memsam_ros.inputs.stamps import stamp_ns

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
NODE = "/memsam_segment"
TOPICS = {"rgb": "/rgb/image", "depth": "/depth/image", "lidar": "/lidar/depth_image", "event": "/event/image"}
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
HEIGHT, WIDTH = 48, 64


class Rig(Node):
    """Sensor streams (sensor-data QoS), lifecycle/enable clients, output collector."""

    def __init__(self, context: Context) -> None:
        super().__init__("memsam_test_rig", context=context)
        qos = {m: RELIABLE if m == "lidar" else qos_profile_sensor_data for m in TOPICS}  # lidar: see the override
        self.pubs = {m: self.create_publisher(Image, t, qos[m]) for m, t in TOPICS.items()}
        self.pub_info = self.create_publisher(CameraInfo, "/rgb/camera_info", qos_profile_sensor_data)
        self.change = self.create_client(ChangeState, f"{NODE}/change_state")
        self.get_state = self.create_client(GetState, f"{NODE}/get_state")
        self.enable = self.create_client(SetBool, f"{NODE}/enable")
        self.lock = threading.Lock()
        self.labels: list[Image] = []
        self.camera_infos: list[CameraInfo] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.create_subscription(Image, f"{NODE}/labels", lambda m: self._keep(self.labels, m), RELIABLE)
        self.create_subscription(
            CameraInfo, f"{NODE}/camera_info", lambda m: self._keep(self.camera_infos, m), RELIABLE
        )
        self.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self._keep(self.diagnostics, m), 50)
        self.frames = scene_frames(seed=2, height=HEIGHT, width=WIDTH)
        self.stamp = 500.0

    def _keep(self, store: list, msg: Any) -> None:
        with self.lock:
            store.append(msg)

    def publish_set(self) -> int:
        """One 10 Hz tick of every sensor (RGB last) plus the RGB camera's CameraInfo."""
        self.stamp += 0.1
        for m in ("depth", "lidar", "event", "rgb"):
            self.pubs[m].publish(image_msg(self.frames[m], MODALITY_ENCODINGS[m], self.stamp, frame_id="cam"))
        info = CameraInfo(header=Header(stamp=to_time(self.stamp), frame_id="cam"), height=HEIGHT, width=WIDTH)
        info.k = [50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0]
        info.distortion_model = "plumb_bob"
        self.pub_info.publish(info)
        return stamp_ns(Header(stamp=to_time(self.stamp)))

    def stream(self, seconds: float) -> list[int]:
        """Publish at 10 Hz for ``seconds``; the stamps sent."""
        sent, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            sent.append(self.publish_set())
            time.sleep(0.1)
        return sent

    def call(self, client: Any, request: Any, timeout: float = 60.0) -> Any:
        assert client.wait_for_service(timeout_sec=30.0), f"{client.srv_name} not available"
        future = client.call_async(request)
        assert wait_until(future.done, timeout), f"{client.srv_name}: no response"
        return future.result()

    def transition(self, transition_id: int) -> bool:
        return self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> str:
        return self.call(self.get_state, GetState.Request()).current_state.label

    def label_count(self) -> int:
        with self.lock:
            return len(self.labels)

    def subscribers(self, topic: str) -> list[Any]:
        return [i for i in self.get_subscriptions_info_by_topic(topic) if i.node_name == NODE.lstrip("/")]

    def pipeline_status(self) -> Any:
        with self.lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if status.name.endswith(": pipeline"):
                        return status
        return None


@pytest.fixture(scope="module")
def node_process(tmp_path_factory: pytest.TempPathFactory):
    domain = next_domain_id()
    log_path = tmp_path_factory.mktemp("node") / "node.log"
    env = {**os.environ, "ROS_DOMAIN_ID": str(domain), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "memsam_ros.node", "--ros-args", "--params-file", str(ROOT / "config/segment.yaml"),
        "-p", "ros.autostart:=false", "-p", "model.image_size:=128", "-p", "inference.device:=cpu",
        "-p", "ros.diagnostics_period_s:=0.25",
        "-p", f"qos_overrides.{NODE}/info.publisher.reliability:=best_effort",
        "-p", "qos_overrides./lidar/depth_image.subscription.reliability:=reliable",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    rig = Rig(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(rig)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield process, rig, log_path
    finally:
        interrupt(process)
        executor.shutdown()
        rig.destroy_node()
        context.try_shutdown()


def test_starts_unconfigured_and_reports_it(node_process):
    _, rig, log_path = node_process
    assert rig.state() == "unconfigured"
    assert rig.count_publishers(f"{NODE}/labels") == 0 and rig.subscribers(TOPICS["rgb"]) == []
    status = wait_until(rig.pipeline_status, 10.0)
    assert status is not None and status.message == "unconfigured", log_path.read_text()
    assert status.hardware_id  # the host, until a device is chosen


def test_configure_loads_the_model_but_does_not_subscribe(node_process):
    _, rig, log_path = node_process
    assert rig.transition(Transition.TRANSITION_CONFIGURE), log_path.read_text()
    assert rig.state() == "inactive"
    assert "configured: MemorySAM sam2.1_hiera_t 128px" in log_path.read_text()
    assert wait_until(lambda: rig.count_publishers(f"{NODE}/labels") == 1, 10.0)
    assert rig.subscribers(TOPICS["rgb"]) == []
    rig.stream(0.5)
    time.sleep(0.5)
    assert rig.label_count() == 0
    status = wait_until(lambda: (s := rig.pipeline_status()) and s.message == "inactive" and s, 5.0)
    assert "cpu" in status.hardware_id


def test_activate_subscribes_with_the_shipped_qos_and_segments(node_process):
    _, rig, log_path = node_process
    assert rig.transition(Transition.TRANSITION_ACTIVATE)
    assert rig.state() == "active"
    assert wait_until(lambda: all(rig.subscribers(t) for t in TOPICS.values()), 10.0)
    reliability = {m: rig.subscribers(t)[0].qos_profile.reliability for m, t in TOPICS.items()}
    assert reliability["rgb"] == ReliabilityPolicy.BEST_EFFORT  # shipped default: sensor data
    assert reliability["lidar"] == ReliabilityPolicy.RELIABLE  # qos_overrides./lidar/depth_image...
    assert reliability["event"] == ReliabilityPolicy.BEST_EFFORT  # the override stays on its topic
    assert rig.subscribers("/rgb/camera_info")
    sent: list[int] = []
    assert wait_until(lambda: sent.extend(rig.stream(0.3)) or rig.label_count() >= 3, 60.0), log_path.read_text()


def test_qos_override_on_a_publisher(node_process):
    _, rig, _ = node_process

    def publisher(topic: str) -> Any:
        (info,) = [i for i in rig.get_publishers_info_by_topic(topic) if i.node_name == "memsam_segment"]
        return info.qos_profile

    assert publisher(f"{NODE}/info").reliability == ReliabilityPolicy.BEST_EFFORT  # qos_overrides...
    assert publisher(f"{NODE}/labels").reliability == ReliabilityPolicy.RELIABLE  # as shipped
    assert publisher(f"{NODE}/camera_info").reliability == ReliabilityPolicy.RELIABLE


def test_camera_info_has_the_labels_header_and_size(node_process):
    _, rig, _ = node_process
    assert wait_until(lambda: rig.stream(0.3) and len(rig.camera_infos) >= 2, 30.0)
    with rig.lock:
        labels = {stamp_ns(m.header): m for m in rig.labels}
        infos = list(rig.camera_infos)
    matched = [i for i in infos if stamp_ns(i.header) in labels]
    assert matched, "every ~/camera_info goes with a ~/labels of the same stamp"
    for info in matched:
        label = labels[stamp_ns(info.header)]
        assert info.header.frame_id == label.header.frame_id == "cam"
        assert (info.height, info.width) == (label.height, label.width) == (HEIGHT, WIDTH)
        assert list(info.k) == [50.0, 0.0, 32.0, 0.0, 50.0, 24.0, 0.0, 0.0, 1.0]
        assert info.distortion_model == "plumb_bob"


def test_enable_false_unsubscribes_and_true_resumes(node_process):
    _, rig, _ = node_process
    response = rig.call(rig.enable, SetBool.Request(data=False))
    assert response.success and response.message == "disabled"
    assert wait_until(lambda: not rig.subscribers(TOPICS["rgb"]), 10.0)
    assert rig.state() == "active"
    time.sleep(0.5)  # outputs of sets already in flight
    before = rig.label_count()
    rig.stream(1.0)
    time.sleep(0.5)
    assert rig.label_count() == before
    assert wait_until(lambda: (s := rig.pipeline_status()) and "disabled" in s.message, 5.0)
    assert rig.call(rig.enable, SetBool.Request(data=True)).message == "enabled"
    assert wait_until(lambda: rig.stream(0.3) and rig.label_count() > before + 2, 60.0)


def test_deactivate_stops_the_flow_and_keeps_the_model(node_process):
    _, rig, log_path = node_process
    assert rig.transition(Transition.TRANSITION_DEACTIVATE)
    assert rig.state() == "inactive"
    assert wait_until(lambda: not rig.subscribers(TOPICS["rgb"]), 10.0)
    time.sleep(0.5)
    before = rig.label_count()
    rig.stream(1.0)
    time.sleep(0.5)
    assert rig.label_count() == before
    assert rig.transition(Transition.TRANSITION_ACTIVATE)
    assert wait_until(lambda: rig.stream(0.3) and rig.label_count() > before, 30.0)
    assert log_path.read_text().count("configured: MemorySAM") == 1, "activate again must not reload the model"


def test_cleanup_unloads_then_shutdown_and_sigint(node_process):
    process, rig, log_path = node_process
    assert rig.transition(Transition.TRANSITION_DEACTIVATE)
    assert rig.transition(Transition.TRANSITION_CLEANUP)
    assert rig.state() == "unconfigured"
    assert wait_until(lambda: rig.count_publishers(f"{NODE}/labels") == 0, 10.0)
    assert rig.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert rig.state() == "finalized"
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0, log_path.read_text()
    assert "Traceback" not in log_path.read_text()
