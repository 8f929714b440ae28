"""The segmentation node over real DDS: outputs, headers, encodings, info, latched class names,
parameters, and start-up errors / clean shutdown of the ``memsam-node`` process.

Real sam2 hiera-tiny at 128 px, untrained, on CPU; one node is shared by the module. ~40 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from domains import next_domain_id
from rclpy.parameter import Parameter
from ros_helpers import (
    NodeHarness,
    OutputCollector,
    key_of,
    raw_image,
    scene_frames,
    status_values,
    wait_until,
)

from memsam_core.classes import DELIVER_CLASSES, IGNORE_INDEX, default_palette
from memsam_ros.inputs.codec import image_to_array

pytestmark = pytest.mark.ros
ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@pytest.fixture(scope="module")
def harness():
    h = NodeHarness()
    yield h
    h.close()


@pytest.fixture(scope="module")
def frames():
    return scene_frames(seed=3)


def test_full_set_outputs_match_rgb_header_encodings_and_shapes(harness, frames):
    out = harness.roundtrip(100.0, frames, frame_id="cam_front")
    assert out is not None, f"no outputs; warnings: {harness.warnings}"
    for kind in ("labels", "color", "confidence"):
        msg = out[kind]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (100, 0)
        assert msg.header.frame_id == "cam_front"
        assert (msg.height, msg.width) == (96, 128)
    assert out["labels"].encoding == "mono8"
    assert out["color"].encoding == "rgb8"
    assert out["confidence"].encoding == "32FC1"
    labels = image_to_array(out["labels"])
    confidence = image_to_array(out["confidence"])
    color = image_to_array(out["color"])
    assert labels.max() < len(DELIVER_CLASSES) or labels.max() == IGNORE_INDEX
    assert np.all((confidence > 0) & (confidence <= 1.0 + 1e-6))
    # ~/color is the palette colour blended over the RGB image with ros.overlay_alpha (0.5)
    expected = 0.5 * default_palette(25)[labels].astype(np.float32) + 0.5 * frames["rgb"].astype(np.float32)
    assert np.abs(color.astype(np.float32) - expected).max() <= 1.0

    info = out["info"]
    assert info.header.frame_id == "cam_front" and info.header.stamp.sec == 100
    assert list(info.modalities_used) == ["rgb", "depth", "lidar", "event"]
    assert list(info.modalities_missing) == []
    assert list(info.class_names) == list(DELIVER_CLASSES)
    assert len(info.stamp_skew_s) == 4 and max(abs(s) for s in info.stamp_skew_s) < 1e-6
    assert info.inference_ms > 0 and info.total_latency_ms >= info.inference_ms
    assert "sam2.1_hiera_t" in info.model_name


def test_skew_reported_per_modality(harness, frames):
    stamp = 101.0
    pub = harness.publisher
    from ros_helpers import image_msg

    pub.publish("depth", image_msg(frames["depth"], "32FC1", stamp + 0.01))
    pub.publish("lidar", image_msg(frames["lidar"], "32FC1", stamp - 0.015))
    pub.publish("event", image_msg(frames["event"], "rgb8", stamp))
    pub.publish("rgb", image_msg(frames["rgb"], "rgb8", stamp))
    out = harness.wait_output(key_of(stamp))
    assert out is not None
    skew = dict(zip(out["info"].modalities_used, out["info"].stamp_skew_s))
    assert skew["rgb"] == 0.0
    assert skew["depth"] == pytest.approx(0.01, abs=1e-4)
    assert skew["lidar"] == pytest.approx(-0.015, abs=1e-4)


def test_silent_lidar_still_yields_outputs_flagged_missing(harness, frames):
    for i in range(2):
        out = harness.roundtrip(102.0 + i * 0.5, frames, skip=("lidar",))
        assert out is not None
        assert "lidar" in out["info"].modalities_missing
        assert "lidar" not in out["info"].modalities_used
        assert out["labels"].height == 96


def test_other_encodings_and_row_padding_accepted(harness, frames):
    """bgr8 with a padded step for RGB, 16UC1 millimetres for depth, mono8 events."""
    stamp = 104.0
    rgb = frames["rgb"]
    h, w = rgb.shape[:2]
    step = w * 3 + 8
    padded = np.zeros((h, step), np.uint8)
    padded[:, : w * 3] = rgb[..., ::-1].reshape(h, w * 3)
    depth_mm = np.nan_to_num(frames["depth"] * 1000.0, nan=0, posinf=0).clip(0, 65535).astype(np.uint16)
    pub = harness.publisher
    from ros_helpers import image_msg

    pub.publish("depth", image_msg(depth_mm, "16UC1", stamp))
    pub.publish("lidar", image_msg(frames["lidar"], "32FC1", stamp))
    pub.publish("event", image_msg(frames["event"][..., 0].copy(), "mono8", stamp))
    pub.publish("rgb", raw_image(h, w, "bgr8", step, padded.tobytes(), stamp))
    out = harness.wait_output(key_of(stamp))
    assert out is not None, harness.warnings
    assert list(out["info"].modalities_used) == ["rgb", "depth", "lidar", "event"]
    # the blend proves the padded bgr8 was decoded to the right RGB pixels
    labels = image_to_array(out["labels"])
    expected = 0.5 * default_palette(25)[labels].astype(np.float32) + 0.5 * rgb.astype(np.float32)
    assert np.abs(image_to_array(out["color"]).astype(np.float32) - expected).max() <= 1.0


def test_class_names_latched_for_late_subscriber(harness):
    late = OutputCollector(harness.context)
    late_executor_node = late
    harness.executor.add_node(late_executor_node)
    try:
        names = wait_until(lambda: late.class_names, 10.0)
        assert names == list(DELIVER_CLASSES)
    finally:
        harness.executor.remove_node(late)
        late.destroy_node()


def test_diagnostics_report_pipeline_and_topics(harness):
    status = wait_until(lambda: harness.collector.latest_status(": pipeline"), 5.0)
    assert status is not None
    values = status_values(status)
    for key in ("processing_rate_hz", "latency_ms_mean", "sets_received", "sets_processed", "sets_dropped"):
        assert key in values
    assert int(values["sets_processed"]) >= 1
    topic = harness.collector.latest_status(": input rgb")
    assert status_values(topic)["topic"] == "/rgb/image"


def test_parameters_are_run_time_only_with_descriptors_ranges_and_read_only(harness):
    node = harness.node
    # what the model is comes from the checkpoint: not parameters (given anyway, they are checked against it)
    for name in ("model.image_size", "model.modalities", "input.depth_max_m", "classes.names", "classes.palette"):
        assert not node.has_parameter(name), name
    (depth,) = node.describe_parameters(["ros.qos_depth"])
    assert depth.read_only and depth.integer_range[0].from_value == 1 and depth.integer_range[0].to_value == 100
    (precision,) = node.describe_parameters(["inference.precision"])
    assert precision.read_only and "autocast" in precision.description
    (alpha,) = node.describe_parameters(["ros.overlay_alpha"])
    assert not alpha.read_only and alpha.floating_point_range[0].to_value == 1.0
    assert node.config.model.modalities == ["rgb", "depth", "lidar", "event"]  # the claims of the harness

    (rejected,) = node.set_parameters([Parameter("ros.qos_depth", value=3)])
    assert not rejected.successful
    (out_of_range,) = node.set_parameters([Parameter("ros.overlay_alpha", value=1.5)])
    assert not out_of_range.successful
    (accepted,) = node.set_parameters([Parameter("ros.overlay_alpha", value=1.0)])
    assert accepted.successful
    try:
        out = harness.roundtrip(110.0, scene_frames(seed=4))
        assert out is not None
        labels = image_to_array(out["labels"])
        assert np.array_equal(image_to_array(out["color"]), default_palette(25)[labels])  # alpha 1 = pure palette
    finally:
        node.set_parameters([Parameter("ros.overlay_alpha", value=0.5)])


def test_info_falls_back_to_json_string_without_memsam_msgs(monkeypatch):
    """If memsam_msgs cannot be imported the node keeps running and publishes ~/info as JSON."""
    from std_msgs.msg import String

    monkeypatch.setitem(sys.modules, "memsam_msgs.msg", None)  # makes the import raise ImportError
    h = NodeHarness(info_type=String)
    try:
        assert h.node._info_type is None
        out = h.roundtrip(5.0, scene_frames(seed=5), skip=("event",))
        assert out is not None
        payload = json.loads(out["info"].data)
        assert payload["header"]["stamp"] == {"sec": 5, "nanosec": 0}
        assert payload["modalities_missing"] == ["event"]
        assert payload["class_names"] == list(DELIVER_CLASSES)
    finally:
        h.close()


# ---------------------------------------------------------------------- the memsam-node process


def _node_cmd(*extra: str) -> list[str]:
    return [PYTHON, "-m", "memsam_ros.node", "--ros-args", "--params-file", str(ROOT / "config/segment.yaml"), *extra]


def _run_startup_error(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_node_cmd(*extra), capture_output=True, text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (("-p", "inference.checkpoint:=/nonexistent/model.pt"), "inference.checkpoint: /nonexistent/model.pt"),
        (("-p", "model.image_size:=100"), "model.image_size"),
        (("-p", "classes.palette:=[1,2]"), "classes.palette"),
        (("-p", "qos_overrides./rgb/image.subscription.reliability:=sometimes"), "/rgb/image: Unexpected QoS"),
        (("-p", "qos_overrides./memsam_segment/labels.publisher.history:=forever"), "publishers"),
    ],
)
def test_startup_errors_exit_2_with_one_clear_line(extra, expected, tmp_path):
    result = _run_startup_error(*extra)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_parameter_that_contradicts_the_checkpoint_is_one_line_naming_both(tmp_path):
    from memsam_core.config import load_config
    from memsam_core.model import build_memorysam, save_checkpoint

    config = load_config(None, {"model.image_size": 128, "model.modalities": ["rgb", "depth"]})
    checkpoint = tmp_path / "small.pt"
    save_checkpoint(checkpoint, build_memorysam(config.model), config)
    result = _run_startup_error("-p", f"inference.checkpoint:={checkpoint}", "-p", "model.image_size:=512")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "model.image_size: config says 512" in errors[0] and "trained with 128" in errors[0], errors[0]
    assert str(checkpoint) in errors[0]


def test_bad_config_file_names_file_and_field(tmp_path):
    bad = tmp_path / "train.yaml"
    bad.write_text("model:\n  num_classes: 3\n")  # classes.names still has 25 entries
    result = subprocess.run(
        [PYTHON, "-m", "memsam_ros.node", "--ros-args", "-p", f"config_file:={bad}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert str(bad) in result.stderr and "classes.names" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_node_process_segments_and_exits_cleanly_on_sigint(tmp_path):
    """The console-script entry point with config/segment.yaml: publishes, then SIGINT → exit 0."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from ros_helpers import FramePublisher

    domain = str(next_domain_id())
    env = {**os.environ, "ROS_DOMAIN_ID": domain}
    proc = subprocess.Popen(
        _node_cmd("-p", "model.image_size:=128", "-p", "ros.reliability:=reliable"),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    context = Context()
    rclpy.init(context=context, domain_id=int(domain))
    topics = {"rgb": "/rgb/image", "depth": "/depth/image", "lidar": "/lidar/depth_image", "event": "/event/image"}
    publisher = FramePublisher(context, topics)
    collector = OutputCollector(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(publisher)
    executor.add_node(collector)
    try:
        frames = scene_frames(seed=6, height=64, width=80)
        deadline = time.monotonic() + 60
        got = None
        stamp = 1.0
        while got is None and time.monotonic() < deadline and proc.poll() is None:
            publisher.publish_set(stamp, frames)
            end = time.monotonic() + 1.0
            while time.monotonic() < end and got is None:
                executor.spin_once(timeout_sec=0.05)
                got = collector.complete(key_of(stamp))
            stamp += 1.0
        assert got is not None, "the node process published nothing"
        assert got["labels"].encoding == "mono8" and got["labels"].width == 80
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
        executor.shutdown()
        publisher.destroy_node()
        collector.destroy_node()
        context.try_shutdown()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert "malloc keeps freed buffers" in output, "the node process must reuse image buffers (memsam_ros/heap.py)"
