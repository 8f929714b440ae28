"""The node's hot path and ROS conventions, in-process over real DDS (tests/ros_helpers.py):

* only the messages that go into a set are decoded, on the inference thread;
* ``~/color`` and ``~/confidence`` are computed only while someone subscribes;
* frame_ids that disagree with ``ros.extrinsics: registered`` warn once; ``~/camera_info`` carries a binned/ROI
  calibration of the labels' images as it is (REP 104) and is rewritten as the labels' plain camera when the
  calibration describes another resolution;
* ``/diagnostics``: ``hardware_id`` on every status, and rates right above 51.2 Hz;
* the GIL switch interval: 0.5 ms for CPU inference, Python's default on CUDA, or the parameter.

~30 s on 2 cores (two in-process nodes, hiera tiny at 128 px).
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
from domains import next_domain_id
from ros_helpers import NodeHarness, image_msg, key_of, scene_frames, status_values, to_time, wait_until
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

import memsam_ros.inputs.received
from memsam_ros.diagnostics import PipelineHealth
from memsam_ros.node import GIL_SWITCH_INTERVAL_CPU_S, switch_interval_s
from memsam_ros.worker import SetCounts

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def lean():
    """A node whose only listener takes ~/labels and ~/info (nobody wants ~/color or ~/confidence)."""
    h = NodeHarness(kinds=("labels", "info"))
    yield h
    h.close()


def test_only_messages_in_a_set_are_decoded_on_the_inference_thread(lean, monkeypatch):
    decoded: list[tuple[str, str]] = []
    original = memsam_ros.inputs.received.decode_modality

    def counting(msg, modality, **kwargs):
        decoded.append((modality, threading.current_thread().name))
        return original(msg, modality, **kwargs)

    monkeypatch.setattr(memsam_ros.inputs.received, "decode_modality", counting)
    frames = scene_frames(seed=8)
    for i in range(3):
        stamp = 200.0 + i
        for early in (0.3, 0.2, 0.1):  # out of slop: never in a set, so never decoded
            lean.publisher.publish("depth", image_msg(frames["depth"], "32FC1", stamp - early))
        assert lean.roundtrip(stamp, frames) is not None
    assert sorted(m for m, _ in decoded) == sorted(["rgb", "depth", "lidar", "event"] * 3)
    assert {thread for _, thread in decoded} == {"memsam-inference"}


def test_color_and_confidence_only_while_someone_subscribes(lean):
    node = lean.node
    overlays, asked = [], []
    overlay, segment_batch = node.outputs.overlay, node.segmenter.segment_batch
    node.outputs.overlay = lambda *a: overlays.append(1) or overlay(*a)
    node.segmenter.segment_batch = lambda sets, confidence=True: (
        asked.append(confidence) or segment_batch(sets, confidence=confidence)
    )
    try:
        assert lean.roundtrip(210.0, scene_frames(seed=9)) is not None
        assert overlays == [] and asked == [False]
        from ros_helpers import OutputCollector

        viewer = OutputCollector(lean.context, kinds=("labels", "color", "confidence"))
        lean.executor.add_node(viewer)
        assert wait_until(
            lambda: node.outputs.color.get_subscription_count() and node.outputs.confidence.get_subscription_count(), 10
        )
        key = lean.send(211.0, scene_frames(seed=9))
        assert wait_until(lambda: viewer.complete(key), 20.0), "~/color and ~/confidence once subscribed"
        assert overlays == [1] and asked[-1] is True
        lean.executor.remove_node(viewer)
        viewer.destroy_node()
    finally:
        del node.outputs.overlay, node.segmenter.segment_batch


def test_engine_skips_only_the_confidence_map(lean):
    segmenter, frames = lean.node.segmenter, scene_frames(seed=13)
    full = segmenter.segment_batch([frames])[0]
    lean_result = segmenter.segment_batch([frames], confidence=False)[0]
    assert np.array_equal(full.labels, lean_result.labels) and full.confidence is not None
    assert lean_result.confidence is None and lean_result.modalities == full.modalities


def test_frame_ids_that_disagree_with_registered_extrinsics_warn_once(lean):
    frames = scene_frames(seed=10)
    for i in range(3):
        stamp = 220.0 + i
        for m, frame_id in (("depth", "depth_optical"), ("lidar", "cam"), ("event", "cam"), ("rgb", "cam")):
            encoding = {"depth": "32FC1", "lidar": "32FC1"}.get(m, "rgb8")
            lean.publisher.publish(m, image_msg(frames[m], encoding, stamp, frame_id=frame_id))
        assert lean.wait_output(key_of(stamp)) is not None
    warnings = lean.warnings_matching("frame_id 'depth_optical' differs from rgb 'cam'")
    assert len(warnings) == 1 and "ros.extrinsics" in warnings[0]
    assert not lean.warnings_matching("[lidar]: frame_id")


def test_unchecked_extrinsics_do_not_warn():
    h = NodeHarness({"ros.extrinsics": "unchecked"}, kinds=("labels",))
    try:
        frames = scene_frames(seed=10)
        h.publisher.publish("depth", image_msg(frames["depth"], "32FC1", 230.0, frame_id="elsewhere"))
        assert h.roundtrip(230.0, frames, skip=("depth",)) is not None
        assert not h.warnings_matching("frame_id")
    finally:
        h.close()


def _camera_info_out(lean, info: CameraInfo, stamp_s: float) -> CameraInfo:
    """Publish ``info`` on the RGB camera_info topic, run one set at ``stamp_s`` and return its ``~/camera_info``."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    received: list[CameraInfo] = []
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    sub = lean.collector.create_subscription(CameraInfo, "/memsam_segment/camera_info", received.append, reliable)
    pub = lean.publisher.create_publisher(CameraInfo, "/rgb/camera_info", reliable)
    try:
        assert wait_until(lambda: pub.get_subscription_count() and sub.get_publisher_count(), 10)
        info.header = Header(stamp=to_time(stamp_s), frame_id="camera")
        pub.publish(info)
        assert wait_until(lambda: (got := lean.node.input_path.camera_info) and got.header == info.header, 10)
        assert lean.roundtrip(stamp_s, scene_frames(seed=11)) is not None
        out = wait_until(lambda: [r for r in received if r.header.stamp == info.header.stamp], 10)
        assert out, "no ~/camera_info"
        return out[0]
    finally:
        lean.collector.destroy_subscription(sub)
        lean.publisher.destroy_publisher(pub)


def _labels_camera(info: CameraInfo) -> tuple[tuple[int, int], tuple[float, ...]]:
    """What an image_geometry consumer reads from ``info``: the image size and K, binning and ROI applied."""
    from memsam_ros.inputs.camera import camera_model

    camera = camera_model(info)
    return (camera.width, camera.height), camera.k


def test_camera_info_for_another_resolution_is_scaled_to_the_labels(lean):
    info = CameraInfo(height=192, width=256)
    info.k = [200.0, 0.0, 128.0, 0.0, 200.0, 96.0, 0.0, 0.0, 1.0]
    info.p = [200.0, 0.0, 128.0, 0.0, 0.0, 200.0, 96.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    scaled = _camera_info_out(lean, info, 240.0)
    assert (scaled.width, scaled.height) == (128, 96)  # the labels' size
    assert list(scaled.k) == [100.0, 0.0, 64.0, 0.0, 100.0, 48.0, 0.0, 0.0, 1.0]
    assert list(scaled.p)[:7] == [100.0, 0.0, 64.0, 0.0, 0.0, 100.0, 48.0]
    assert len(lean.warnings_matching("CameraInfo is 256x192 but the images are 128x96")) == 1


# a 352x264 sensor binned 2x2 from a 256x192 window at (40, 24): 128x96 images, the labels' size
BINNED_K = [200.0, 0.0, 168.0, 0.0, 200.0, 120.0, 0.0, 0.0, 1.0]
LABELS_K = (100.0, 0.0, 64.0, 0.0, 100.0, 48.0, 0.0, 0.0, 1.0)  # (168 - 40) / 2, (120 - 24) / 2


def _binned_info(binning: int) -> CameraInfo:
    from sensor_msgs.msg import RegionOfInterest

    info = CameraInfo(height=264, width=352, binning_x=binning, binning_y=binning)
    info.k = BINNED_K
    info.p = [*BINNED_K[:3], 0.0, *BINNED_K[3:6], 0.0, *BINNED_K[6:], 0.0]
    info.roi = RegionOfInterest(x_offset=40, y_offset=24, width=256, height=192)
    return info


def test_camera_info_with_binning_and_roi_describes_the_labels(lean):
    """A binned, cropped calibration describing 128x96 images goes out as it came (REP 104), and read the way
    image_geometry reads it, it is the labels' camera."""
    out = _camera_info_out(lean, _binned_info(2), 242.0)
    assert (out.width, out.height, out.binning_x, out.binning_y) == (352, 264, 2, 2)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (40, 24, 256, 192)
    assert list(out.k) == BINNED_K
    assert _labels_camera(out) == ((128, 96), LABELS_K)
    assert not lean.warnings_matching("CameraInfo is 352x264")
    # the broken counterpart, the former ~/camera_info: K scaled from 352x264 to 128x96, binning and ROI kept
    from memsam_ros.outputs import scaled_intrinsics

    former = _binned_info(2)
    former.k = scaled_intrinsics(BINNED_K, 128 / 352, 96 / 264, 3)
    assert _labels_camera(former) != ((128, 96), LABELS_K)


def test_camera_info_with_a_window_of_another_size_becomes_the_labels_plain_camera(lean):
    """Unbinned, the 256x192 window is not the labels' size: ~/camera_info is the labels' own camera (window
    applied, scaled, no binning or ROI left), one warning."""
    out = _camera_info_out(lean, _binned_info(1), 244.0)
    assert (out.width, out.height, out.binning_x, out.binning_y) == (128, 96, 0, 0)
    assert (out.roi.x_offset, out.roi.y_offset, out.roi.width, out.roi.height) == (0, 0, 0, 0)
    assert tuple(out.k) == LABELS_K and _labels_camera(out) == ((128, 96), LABELS_K)
    assert list(out.p)[:7] == [100.0, 0.0, 64.0, 0.0, 0.0, 100.0, 48.0]
    assert len(lean.warnings_matching("CameraInfo is 256x192 but the images are 128x96")) == 1  # the same once


def test_diagnostics_have_hardware_ids(lean):
    lean.roundtrip(250.0, scene_frames(seed=12), frame_id="cam_front")
    pipeline = wait_until(lambda: lean.collector.latest_status(": pipeline"), 5.0)
    assert pipeline.hardware_id.endswith(" cpu")  # "<host> cpu": where inference runs
    rgb = wait_until(
        lambda: (s := lean.collector.latest_status(": input rgb")) and s.hardware_id == "cam_front" and s, 5.0
    )
    assert status_values(rgb)["frame_id"] == "cam_front"  # the sensor: the frame_id of its messages


@pytest.mark.parametrize("hz", [20.0, 200.0, 2000.0])
def test_diagnostics_rates_are_right_at_any_frequency(hz):
    """The former 512-arrival deque over a 10 s window capped every rate at 51.2 Hz."""
    health = PipelineHealth({"rgb": "/rgb/image"}, "rgb", 3.0, started_at=0.0)
    count = int(12 * hz)
    for i in range(count):
        health.message("rgb", i / hz)
        health.output(i / hz, 1.0, 1.0)
    statuses = health.statuses(count / hz, SetCounts(0, 0, 0, 0, 0), _Stats(), "n")
    pipeline, topic = (status_values(s) for s in statuses)
    assert float(topic["rate_hz"]) == pytest.approx(hz, rel=0.02)
    assert float(pipeline["processing_rate_hz"]) == pytest.approx(hz, rel=0.02)


class _Stats:
    dropped_incomplete = resets = 0
    late: dict = {}  # noqa: RUF012


def test_switch_interval_short_on_cpu_default_on_cuda_or_as_set():
    assert switch_interval_s(0.0, "cpu") == GIL_SWITCH_INTERVAL_CPU_S == 0.0005
    assert switch_interval_s(0.0, "cuda") is None  # Python's own 5 ms
    assert switch_interval_s(2.0, "cuda") == 0.002


def test_configure_applies_the_switch_interval_in_the_node_process():
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from memsam_ros.node import SegmentNode

    before = sys.getswitchinterval()
    context = Context()
    rclpy.init(context=context, domain_id=next_domain_id())
    params = {"model.image_size": 128, "inference.device": "cpu", "ros.gil_switch_interval_ms": 1.5}
    node = SegmentNode(
        context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()], tune_interpreter=True
    )
    try:
        node.trigger_configure()
        assert sys.getswitchinterval() == pytest.approx(0.0015)
    finally:
        sys.setswitchinterval(before)
        node.destroy_node()
        context.try_shutdown()
